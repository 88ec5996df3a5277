//! Fitting a forecaster to the windows of one application type.
//!
//! In: a [`Dataset`] (windows cut by the detector's own windowing code) and
//! [`Settings`]. Out: an [`AnomalyModel`] with its normalisation, calibration and
//! validation figures in its metadata. Guarantees: the same dataset and settings give
//! the same weights bit for bit (weights drawn from a seeded ChaCha stream rather than
//! candle's unseeded CPU generator, batches shuffled by the same stream, one thread
//! of arithmetic order); the held-out windows are the last ones in event time and
//! never trained on; training stops between two batches when `shutdown` fires.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use super::{Dataset, TrainError};
use crate::detect::lstm::{
    normalise_into, AnomalyModel, Calibration, Config, FeatureScale, Forecaster, Levels, Metadata, Training, Validation,
};
use crate::window::features::level_unit;

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model: Config,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Share of the windows, the last in event time, held out for validation and
    /// calibration.
    pub validation_share: f64,
    /// Weight of the level term ([`Levels`]); 0 scores the forecast error alone.
    pub level_weight: f64,
    /// The window's last rows the level term looks at.
    pub level_rows: usize,
    pub version: String,
}

/// Adam's usual step size; the simulator's windows converge within 20 epochs at it.
pub const DEFAULT_LEARNING_RATE: f64 = 1e-3;

/// Weight of the level term. With the 8 default features, a window whose last rows hold
/// one feature `d` deviations above its training high adds `4 d²` to the error.
/// Measured on the simulator's load surges (CPU from 0.2–0.4 to 0.9 and more, a climb
/// the forecaster follows) with whole-day models: 8 left more than half of them below 70
/// before they failed, 32 none, and neither moved a fresh fleet's normal windows.
pub const DEFAULT_LEVEL_WEIGHT: f64 = 32.0;

/// The level term looks at the window's last minute (6 rows of 10 s): where the
/// instance is now, smoothed over a few samples.
pub const DEFAULT_LEVEL_ROWS: usize = 6;

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: Config::default(),
            epochs: 20,
            batch_size: 64,
            learning_rate: DEFAULT_LEARNING_RATE,
            seed: 1,
            validation_share: 0.2,
            level_weight: DEFAULT_LEVEL_WEIGHT,
            level_rows: DEFAULT_LEVEL_ROWS,
            version: "1".to_owned(),
        }
    }
}

/// Trains a model on `data`.
/// The windows trained on and those held out, as indices into `data.windows`: the last
/// `share` in event time is held out, less those that overlap a training window.
pub(crate) fn split(data: &Dataset, share: f64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..data.windows.len()).collect();
    order.sort_by_key(|&i| data.windows[i].0);
    let n_val = ((data.windows.len() as f64) * share).round() as usize;
    let (train_idx, val_idx) = order.split_at(data.windows.len() - n_val);
    // Windows overlap: a held-out window must start after the last training window ends.
    let train_end = train_idx.last().map_or(i64::MIN, |&i| data.windows[i].0);
    let length = data.shape.points as i64 * data.shape.step_ms;
    let val_idx: Vec<usize> = val_idx.iter().copied().filter(|&i| data.windows[i].0 - length >= train_end).collect();
    (train_idx.to_vec(), val_idx)
}

pub fn fit(data: &Dataset, settings: &Settings, shutdown: &CancellationToken) -> Result<AnomalyModel, TrainError> {
    let channels = data.features.len();
    let points = data.shape.points;
    let mut config = settings.model;
    config.input = channels;
    config.check(points).map_err(TrainError::Settings)?;
    if settings.epochs == 0 || settings.batch_size == 0 {
        return Err(TrainError::Settings("epochs and batch size must be at least 1".to_owned()));
    }

    let (train_idx, val_idx) = split(data, settings.validation_share);
    let train_idx = train_idx.as_slice();
    if train_idx.len() < settings.batch_size.min(16) || val_idx.len() < 10 {
        return Err(TrainError::TooFewWindows {
            app_type: data.app_type.clone(),
            train: train_idx.len(),
            validation: val_idx.len(),
        });
    }

    let scales = scales(data, train_idx);
    let levels =
        Levels { weight: settings.level_weight, rows: settings.level_rows.min(points), highs: highs(data, train_idx) };
    let flat = |idx: &[usize]| {
        let mut x = Vec::with_capacity(idx.len() * points * channels);
        let mut mask = Vec::with_capacity(idx.len() * (points - 1) * channels);
        for &i in idx {
            let w = &data.windows[i].1;
            normalise_into(w, &scales, &mut x);
            mask.extend(w[channels..].iter().map(|v| if v.is_nan() { 0f32 } else { 1.0 }));
        }
        (x, mask)
    };
    let (train_x, train_mask) = flat(train_idx);

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Forecaster::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    init_weights(&varmap, config.hidden, &mut rng)?;
    let params = ParamsAdamW { lr: settings.learning_rate, weight_decay: 0.0, ..ParamsAdamW::default() };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;

    let n = train_idx.len();
    let batches_per_epoch = n.div_ceil(settings.batch_size);
    let bar = progress_bar((settings.epochs * batches_per_epoch) as u64, &data.app_type);
    let mut perm: Vec<usize> = (0..n).collect();
    let (row, mrow) = (points * channels, (points - 1) * channels);
    for epoch in 1..=settings.epochs {
        perm.shuffle(&mut rng);
        let started = Instant::now();
        let (mut loss_sum, mut loss_n) = (0f64, 0usize);
        for batch in perm.chunks(settings.batch_size) {
            if shutdown.is_cancelled() {
                bar.abandon();
                return Err(TrainError::Interrupted);
            }
            let b = batch.len();
            let mut xb = Vec::with_capacity(b * row);
            let mut mb = Vec::with_capacity(b * mrow);
            for &k in batch {
                xb.extend_from_slice(&train_x[k * row..(k + 1) * row]);
                mb.extend_from_slice(&train_mask[k * mrow..(k + 1) * mrow]);
            }
            let x = Tensor::from_vec(xb, (b, points, channels), &device)?;
            let mask = Tensor::from_vec(mb, (b, points - 1, channels), &device)?;
            let loss = masked_loss(&model, &x, &mask)?;
            opt.backward_step(&loss)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * b as f64;
            loss_n += b;
            bar.inc(1);
        }
        let secs = started.elapsed().as_secs_f64();
        let loss = loss_sum / loss_n.max(1) as f64;
        bar.set_message(format!("loss {loss:.4}"));
        tracing::info!(
            app_type = %data.app_type,
            epoch,
            epochs = settings.epochs,
            loss = format!("{loss:.5}"),
            windows_per_s = format!("{:.0}", n as f64 / secs.max(1e-9)),
            "epoch done"
        );
    }
    bar.finish_and_clear();

    let tensors = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Poisoned)?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect::<candle_core::Result<HashMap<String, Tensor>>>()?;
    let mut meta = Metadata {
        format: crate::detect::lstm::artifact::FORMAT,
        app_type: data.app_type.clone(),
        version: settings.version.clone(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        created_from: data.created_from.clone(),
        features: data.features.clone(),
        normalisation: scales,
        levels: Some(levels),
        window: data.shape,
        model: config,
        // Placeholder until the held-out errors are known; replaced below.
        calibration: Calibration {
            anchor_error: 1.0,
            anchor_quantile: 0.0,
            anchor_score: 30.0,
            points_per_doubling: 20.0,
        },
        training: Training {
            first_event_ms: data.first_event_ms,
            last_event_ms: data.last_event_ms,
            train_windows: train_idx.len(),
            validation_windows: val_idx.len(),
            epochs: settings.epochs,
            batch_size: settings.batch_size,
            learning_rate: settings.learning_rate,
            seed: settings.seed,
        },
        validation: Validation { mean_error: 0.0, at_most_30_share: 0.0, windows: val_idx.len() },
    };
    let draft = AnomalyModel::from_parts(meta.clone(), tensors.clone())?;
    let val_windows: Vec<&[f64]> = val_idx.iter().map(|&i| data.windows[i].1.as_slice()).collect();
    let errors: Vec<f64> = draft.score(&val_windows).iter().flatten().map(|s| s.error).collect();
    let calibration = Calibration::fit(&errors).ok_or_else(|| TrainError::TooFewWindows {
        app_type: data.app_type.clone(),
        train: train_idx.len(),
        validation: 0,
    })?;
    meta.calibration = calibration;
    meta.validation = Validation {
        mean_error: errors.iter().sum::<f64>() / errors.len() as f64,
        at_most_30_share: errors.iter().filter(|&&e| calibration.score(e) <= 30).count() as f64 / errors.len() as f64,
        windows: errors.len(),
    };
    meta.check().map_err(TrainError::Settings)?;
    tracing::info!(
        app_type = %data.app_type,
        mean_error = format!("{:.5}", meta.validation.mean_error),
        anchor_error = format!("{:.5}", calibration.anchor_error),
        at_most_30 = format!("{:.4}", meta.validation.at_most_30_share),
        "validated"
    );
    Ok(AnomalyModel::from_parts(meta, tensors)?)
}

/// The training loss: mean squared one-step forecast error of `x` `(batch, points,
/// input)` over the cells `mask` `(batch, points − 1, input)` marks present (1).
pub fn masked_loss(model: &Forecaster, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let points = x.dim(1)?;
    let pred = model.forward(x)?.narrow(1, 0, points - 1)?;
    let target = x.narrow(1, 1, points - 1)?;
    let sq = (pred - target)?.sqr()?.mul(mask)?;
    let n = mask.sum_all()?.maximum(1f32)?;
    sq.sum_all()?.div(&n)
}

/// PyTorch's initialisation of `nn.LSTM` and `nn.Linear(hidden, …)`: uniform in
/// ±1/√hidden, drawn from the seeded stream in name order so that it is reproducible.
fn init_weights(varmap: &VarMap, hidden: usize, rng: &mut ChaCha8Rng) -> Result<(), TrainError> {
    let k = 1.0 / (hidden as f32).sqrt();
    let data = varmap.data().lock().map_err(|_| TrainError::Poisoned)?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var: &Var = &data[name];
        let shape = var.shape().clone();
        let values: Vec<f32> = (0..shape.elem_count()).map(|_| rng.random_range(-k..k)).collect();
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

/// Per feature mean and standard deviation of the present values of the training
/// windows. The deviation is floored at a hundredth of the feature's unit
/// ([`level_unit`]): a channel that never moved in training (no errors at all) would
/// otherwise turn its first error into thousands of deviations.
fn scales(data: &Dataset, train: &[usize]) -> Vec<FeatureScale> {
    let c = data.features.len();
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    let mut n = vec![0usize; c];
    for &i in train {
        for (j, &v) in data.windows[i].1.iter().enumerate() {
            if !v.is_nan() {
                sum[j % c] += v;
                sq[j % c] += v * v;
                n[j % c] += 1;
            }
        }
    }
    (0..c)
        .map(|j| {
            let count = n[j].max(1) as f64;
            let mean = sum[j] / count;
            let var = (sq[j] / count - mean * mean).max(0.0);
            FeatureScale { mean, std: var.sqrt().max(0.01 * level_unit(&data.features[j])) }
        })
        .collect()
}

/// Per feature, the highest present value of the training windows. The extreme rather
/// than an inner quantile: training holds every benign event (bursts, GC pauses,
/// compactions) and a level that cut them off would score them on a fresh fleet as if
/// they were new.
fn highs(data: &Dataset, train: &[usize]) -> Vec<f64> {
    let c = data.features.len();
    let mut highs = vec![f64::NEG_INFINITY; c];
    for &i in train {
        for (j, &v) in data.windows[i].1.iter().enumerate() {
            if !v.is_nan() {
                highs[j % c] = highs[j % c].max(v);
            }
        }
    }
    // A feature never present in training: nothing to pass, so nothing is held against it.
    highs.iter().map(|&h| if h.is_finite() { h } else { f64::MAX }).collect()
}

/// A bar on a terminal; hidden otherwise (the per-epoch log lines say the same).
fn progress_bar(len: u64, app_type: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches, {eta} left, {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(app_type.to_owned());
    bar
}
