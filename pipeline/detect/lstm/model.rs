//! The forecaster as candle defines it: the model of record for training and for the
//! weights on disk.
//!
//! In: normalised windows `(batch, points, features)`, `f32`, missing values already
//! filled. Out: `(batch, points, features)`, row `t` being the forecast of row `t + 1`
//! (the last row forecasts past the window and is not scored). Weight names are
//! PyTorch's (`lstm.weight_ih_l0`, `lstm.weight_hh_l0`, `lstm.bias_ih_l0`,
//! `lstm.bias_hh_l0`, … per layer, `head.weight`, `head.bias`), so a model trained with
//! `torch.nn.LSTM(batch_first=True)` + `torch.nn.Linear` loads as is, and the other way
//! round.

use candle_core::{Result, Tensor};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// The shape of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Channels of a window (features).
    #[serde(default = "default_input")]
    pub input: usize,
    /// Width of the hidden state of every layer.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Stacked LSTM layers.
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// The last forecasts of a window that its error is taken over. The first steps of
    /// a window forecast from little context; the last ones are where a change shows.
    #[serde(default = "default_score_steps")]
    pub score_steps: usize,
}

/// The window's default channels ([`crate::window::features::DEFAULT_FEATURES`]).
const fn default_input() -> usize {
    8
}

/// 32: the peer's shape; a larger state did not lower the held-out error on the
/// simulator's telemetry and costs four times the arithmetic per doubling.
const fn default_hidden() -> usize {
    32
}

/// One layer: the windows are short (64 steps) and their dynamics simple.
const fn default_layers() -> usize {
    1
}

/// Half of the default 64-point window: 5 minutes of forecasts, enough to average out
/// one noisy sample, recent enough to follow a failure as it develops.
const fn default_score_steps() -> usize {
    32
}

impl Default for Config {
    fn default() -> Self {
        Self {
            input: default_input(),
            hidden: default_hidden(),
            layers: default_layers(),
            score_steps: default_score_steps(),
        }
    }
}

impl Config {
    /// Why the shape cannot be used, if it cannot (`points` = window length).
    pub fn check(&self, points: usize) -> std::result::Result<(), String> {
        if self.input == 0 || self.hidden == 0 || self.layers == 0 {
            return Err(format!("input, hidden and layers must be at least 1, got {self:?}"));
        }
        if self.input > 1024 || self.hidden > 1024 || self.layers > 8 {
            return Err(format!("input and hidden must be at most 1024 and layers at most 8, got {self:?}"));
        }
        if self.score_steps == 0 || self.score_steps >= points {
            return Err(format!("score_steps must be from 1 to points - 1 ({}), got {}", points - 1, self.score_steps));
        }
        Ok(())
    }

    /// The names and shapes of every tensor, in file order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (i, h) = (self.input, self.hidden);
        let mut out = Vec::new();
        for l in 0..self.layers {
            let in_dim = if l == 0 { i } else { h };
            out.push((format!("lstm.weight_ih_l{l}"), vec![4 * h, in_dim]));
            out.push((format!("lstm.weight_hh_l{l}"), vec![4 * h, h]));
            out.push((format!("lstm.bias_ih_l{l}"), vec![4 * h]));
            out.push((format!("lstm.bias_hh_l{l}"), vec![4 * h]));
        }
        out.push(("head.weight".to_owned(), vec![i, h]));
        out.push(("head.bias".to_owned(), vec![i]));
        out
    }
}

/// Stacked LSTM layers and a linear head applied at every step: a one-step-ahead
/// forecaster. Gate order is PyTorch's (input, forget, cell, output), as candle's
/// [`candle_nn::LSTM`] computes it.
#[derive(Debug, Clone)]
pub struct Forecaster {
    layers: Vec<candle_nn::LSTM>,
    head: candle_nn::Linear,
    config: Config,
}

impl Forecaster {
    pub fn new(config: Config, vb: VarBuilder) -> Result<Self> {
        let lstm = vb.pp("lstm");
        let layers = (0..config.layers)
            .map(|l| {
                let in_dim = if l == 0 { config.input } else { config.hidden };
                let c = LSTMConfig { layer_idx: l, ..LSTMConfig::default() };
                candle_nn::lstm(in_dim, config.hidden, c, lstm.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        let head = candle_nn::linear(config.hidden, config.input, vb.pp("head"))?;
        Ok(Self { layers, head, config })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Forecasts for `x` `(batch, points, input)`: `(batch, points, input)`, row `t`
    /// forecasting row `t + 1`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            let states = layer.seq(&h)?;
            h = layer.states_to_tensor(&states)?;
        }
        self.head.forward(&h)
    }
}
