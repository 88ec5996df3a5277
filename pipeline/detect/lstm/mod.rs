//! The LSTM anomaly model: a window in, a 0–100 anomaly score out.
//!
//! In: [`ClosedWindow`](crate::window::ClosedWindow)`.values` (points × features,
//! time-major, `f64`, `NaN` where no value) of instances of one application type, many
//! at a time. Out: per window its raw forecast error and calibrated score
//! ([`WindowScore`]), or `None` where the window holds nothing to score.
//!
//! The model is a one-step-ahead forecaster ([`model::Forecaster`]): an LSTM reads the
//! normalised window and a linear head forecasts each next row; the raw error of a
//! window is the mean squared forecast error over its last `score_steps` rows, in
//! normalised units, plus (format 2) a level term: how far its last rows lie above the
//! highest value each feature reached in training ([`Levels`]), because a failure that
//! builds smoothly (a load surge) is predictable step by step yet passes everything
//! normal ever reached; [`calibrate`] maps the sum to 0–100. Missing values are handled
//! explicitly: as input a `NaN` becomes 0, the feature's training mean after
//! normalisation (the least surprising value, which keeps the state from jumping);
//! as a forecast target it is left out of the error, so an instance that does not
//! report a channel is judged on the channels it does report. A window with no value
//! to compare in its scored rows has no score.
//!
//! Guarantees: the score is a pure function of the window's values and the model;
//! loading refuses anything inconsistent ([`ModelError`]); scoring runs the fused CPU
//! path ([`fast`]) that the tests hold to candle's forward pass. Scoring is CPU-bound:
//! callers on an async runtime run it on a blocking thread (`spawn_blocking`).

pub mod artifact;
pub mod calibrate;
pub mod fast;
pub mod model;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

pub use artifact::{FeatureScale, Levels, Metadata, ModelError, Training, Validation, WindowShape};
pub use calibrate::Calibration;
pub use model::{Config, Forecaster};

/// Normalised inputs are held within this many standard deviations: far enough out to
/// score 100 from any model, near enough that squared errors stay finite in `f32`.
const INPUT_LIMIT: f32 = 1_000.0;

/// The error and score of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowScore {
    /// Mean squared forecast error over the scored rows, normalised units, plus the
    /// level term ([`Levels`]) of a format 2 model.
    pub error: f64,
    /// 0..=100 by the model's calibration.
    pub score: u8,
}

/// A loaded, checked model of one application type, ready to score.
#[derive(Debug, Clone)]
pub struct AnomalyModel {
    metadata: Metadata,
    tensors: HashMap<String, Tensor>,
    fused: fast::Fused,
}

impl AnomalyModel {
    /// Loads `dir/metadata.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let (metadata, tensors) = artifact::read(dir)?;
        Self::from_parts(metadata, tensors)
    }

    /// Loads a model from the bytes of its two files (as announced on a topic or
    /// embedded); `origin` names it in errors, as a directory would.
    pub fn from_bytes(metadata_json: &[u8], weights: &[u8], origin: &str) -> Result<Self, ModelError> {
        let dir = PathBuf::from(origin);
        let (metadata, tensors) = artifact::parse(
            metadata_json,
            &dir.join(artifact::METADATA_FILE),
            weights,
            &dir.join(artifact::WEIGHTS_FILE),
        )?;
        Self::from_parts(metadata, tensors)
    }

    /// A model from checked metadata and weights (the trainer's output).
    pub(crate) fn from_parts(metadata: Metadata, tensors: HashMap<String, Tensor>) -> Result<Self, ModelError> {
        let fused = fast::Fused::new(metadata.model, |name| {
            tensors.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} missing")))
        })?;
        Ok(Self { metadata, tensors, fused })
    }

    /// The newest version of `app_type`'s model under `root` (`root/<app_type>/<version>/`).
    pub fn load_latest(root: &Path, app_type: &str) -> Result<Self, ModelError> {
        Self::load(&artifact::latest_version(root, app_type)?)
    }

    /// The default model shipped for `app_type`: the newest version under the
    /// repository's `models/` (read at run time from the path the crate was built in,
    /// or from `$AUGUR_MODELS` if set, so that an image can carry them elsewhere).
    pub fn shipped(app_type: &str) -> Result<Self, ModelError> {
        Self::load_latest(&shipped_dir(), app_type)
    }

    /// Writes the model into `dir` (`model.safetensors`, `metadata.json`).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        artifact::write(dir, &self.metadata, &self.tensors)
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The weights by PyTorch name.
    #[cfg(test)]
    pub(crate) fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// The model as candle defines it, on the CPU (for training further or checking).
    pub fn forecaster(&self) -> Result<Forecaster, ModelError> {
        let vb = VarBuilder::from_tensors(self.tensors.clone(), candle_core::DType::F32, &Device::Cpu);
        Ok(Forecaster::new(self.metadata.model, vb)?)
    }

    /// Refuses windows cut differently from the ones the model was trained on: other
    /// features (or order), points or step.
    pub fn check_window(&self, features: &[String], points: usize, step_ms: i64) -> Result<(), ModelError> {
        let m = &self.metadata;
        if features != m.features.as_slice() || points != m.window.points || step_ms != m.window.step_ms {
            return Err(ModelError::Mismatch {
                app_type: m.app_type.clone(),
                version: m.version.clone(),
                expected: format!("features {:?}, {} points of {} ms", m.features, m.window.points, m.window.step_ms),
                found: format!("features {features:?}, {points} points of {step_ms} ms"),
            });
        }
        Ok(())
    }

    /// Scores many windows at once, one result per window, in order: `None` where the
    /// window has no value in its scored rows. Each window must be `points × features`
    /// long ([`AnomalyModel::check_window`]); one that is not gets `None` too.
    pub fn score(&self, windows: &[&[f64]]) -> Vec<Option<WindowScore>> {
        let m = &self.metadata;
        let (points, channels) = (m.window.points, m.features.len());
        let len = points * channels;
        let good: Vec<usize> = (0..windows.len()).filter(|&i| windows[i].len() == len).collect();
        let mut x = Vec::with_capacity(good.len() * len);
        for &i in &good {
            normalise_into(windows[i], &m.normalisation, &mut x);
        }
        let mut forecasts = vec![0f32; x.len()];
        self.fused.forecast(&x, points, &mut forecasts);
        let mut out = vec![None; windows.len()];
        for (k, &i) in good.iter().enumerate() {
            let span = k * len..(k + 1) * len;
            let steps = m.model.score_steps;
            out[i] = window_error(windows[i], &x[span.clone()], &forecasts[span], channels, steps).map(|forecast| {
                let level = m.levels.as_ref().map_or(0.0, |l| level_error(windows[i], &m.normalisation, l));
                let error = forecast + level;
                WindowScore { error, score: m.calibration.score(error) }
            });
        }
        out
    }
}

/// Where the shipped models are: `$AUGUR_MODELS`, else `models/` of the source tree
/// the crate was built from.
pub fn shipped_dir() -> PathBuf {
    std::env::var_os("AUGUR_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// Appends the window's values normalised by `scales`, `NaN` as 0 (the training
/// mean), held within ±[`INPUT_LIMIT`].
pub(crate) fn normalise_into(window: &[f64], scales: &[FeatureScale], out: &mut Vec<f32>) {
    let c = scales.len();
    out.extend(window.iter().enumerate().map(|(j, &v)| {
        let s = scales[j % c];
        let z = ((v - s.mean) / s.std) as f32;
        if z.is_nan() {
            0.0
        } else {
            z.clamp(-INPUT_LIMIT, INPUT_LIMIT)
        }
    }));
}

/// The level term of a window's error (see [`Levels`]): over the present cells of its
/// last `levels.rows` rows, the mean squared distance above the feature's highest
/// training value in its standard deviations, times the weight. A window shorter than
/// that many rows is taken whole (the metadata check ties the rows to the points).
pub(crate) fn level_error(raw: &[f64], scales: &[FeatureScale], levels: &Levels) -> f64 {
    let c = levels.highs.len();
    let (mut sum, mut n) = (0f64, 0usize);
    let start = raw.len().saturating_sub(levels.rows * c);
    for (j, &v) in raw[start..].iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let d = ((v - levels.highs[j % c]).max(0.0) / scales[j % c].std).min(f64::from(INPUT_LIMIT));
        sum += d * d;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        levels.weight * sum / n as f64
    }
}

/// Mean squared error of the forecasts of the last `steps` rows of a window against
/// its normalised values, over the cells whose raw value is present.
pub(crate) fn window_error(raw: &[f64], x: &[f32], forecast: &[f32], channels: usize, steps: usize) -> Option<f64> {
    let points = raw.len() / channels;
    let (mut sum, mut n) = (0f64, 0usize);
    for t in points - 1 - steps..points - 1 {
        for ch in 0..channels {
            let target = (t + 1) * channels + ch;
            if raw[target].is_nan() {
                continue;
            }
            let d = f64::from(forecast[t * channels + ch]) - f64::from(x[target]);
            sum += d * d;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}
