//! A model on disk: `<dir>/model.safetensors` (the weights, PyTorch names) and
//! `<dir>/metadata.json` (everything needed to use them).
//!
//! In: a model directory, or the two files' bytes (embedded, or read from a topic).
//! Out: checked [`Metadata`] and weights. Guarantees: nothing half-valid loads: the
//! JSON must parse with no unknown field, agree with itself (features, normalisation,
//! shape, calibration), and every tensor the shape names must be there, `f32`, of its
//! shape, finite, with no tensor besides; each refusal names the file and what is
//! wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::calibrate::Calibration;
use super::model::Config;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const METADATA_FILE: &str = "metadata.json";
/// Bumped when the meaning of a metadata field changes. Format 2 added [`Levels`] and
/// with them the level term of the error; format 1 (no levels, the forecast error
/// alone) still loads and scores as it did.
pub const FORMAT: u32 = 2;
/// The oldest format this build reads.
pub const OLDEST_FORMAT: u32 = 1;

/// Why a model could not be loaded, saved or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid model metadata: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {reason}")]
    Metadata { path: PathBuf, reason: String },
    #[error("{path}: not a readable safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor {name} is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name} is not expected by a {config}")]
    ExtraTensor { path: PathBuf, name: String, config: String },
    #[error("{path}: tensor {name} has shape {found:?} and dtype {dtype}, expected {expected:?} f32")]
    Shape { path: PathBuf, name: String, found: Vec<usize>, dtype: String, expected: Vec<usize> },
    #[error("{path}: tensor {name} holds values that are not finite")]
    NonFinite { path: PathBuf, name: String },
    #[error("model {app_type}/{version} expects {expected}, the windows have {found}")]
    Mismatch { app_type: String, version: String, expected: String, found: String },
    #[error("{dir}: no model for application type {app_type:?} (no <version>/{METADATA_FILE} under it)")]
    NotFound { dir: PathBuf, app_type: String },
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Scale of one feature: inputs enter the model as `(value − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureScale {
    pub mean: f64,
    pub std: f64,
}

/// What training saw of each feature's level, and how much going past it weighs: the
/// level term of a window's error is `weight` times the mean, over the present cells of
/// its last `rows` rows, of the squared distance above the feature's highest training
/// value in its standard deviations ([`super::level_error`]). A forecaster finds a
/// smooth climb predictable however far it goes; this term sees the climb pass what
/// normal ever reached. Only upwards: the failures the tiers answer (saturation, leaks,
/// latency, errors, IO stalls) push every feature up, and more resources never answer
/// a value below the range, which is where a quiet night goes the first time it is
/// quieter than the nights training saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub weight: f64,
    /// The window's last rows that count, 1 to the window's points.
    pub rows: usize,
    /// One per feature: its highest value in the training windows, raw units.
    pub highs: Vec<f64>,
}

/// The grid windows are cut on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowShape {
    pub points: usize,
    pub step_ms: i64,
}

/// What the model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Event time of the first and last sample read, epoch ms.
    pub first_event_ms: i64,
    pub last_event_ms: i64,
    pub train_windows: usize,
    pub validation_windows: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

/// How the model did on its held-out windows (the last part of the training range in
/// event time, never trained on).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// Mean forecast error (squared, normalised units) over the held-out windows: the
    /// figure a promotion gate compares, lower is better.
    pub mean_error: f64,
    /// Share of held-out windows that score at most 30.
    pub at_most_30_share: f64,
    pub windows: usize,
}

/// Everything beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub format: u32,
    pub app_type: String,
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Where the training data came from, for people.
    pub created_from: String,
    /// The window's channels, in order; the model's input `i` is `features[i]`.
    pub features: Vec<String>,
    /// One per feature.
    pub normalisation: Vec<FeatureScale>,
    /// From format 2 on (none in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Levels>,
    pub window: WindowShape,
    pub model: Config,
    pub calibration: Calibration,
    pub training: Training,
    pub validation: Validation,
}

impl Metadata {
    /// Why the metadata cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(OLDEST_FORMAT..=FORMAT).contains(&self.format) {
            return Err(format!(
                "format {} is not one this build reads ({OLDEST_FORMAT} to {FORMAT}); a newer augur wrote it",
                self.format
            ));
        }
        if self.app_type.is_empty() || self.version.is_empty() {
            return Err("app_type and version must not be empty".to_owned());
        }
        if self.features.is_empty() {
            return Err("features must name at least one feature".to_owned());
        }
        for (i, f) in self.features.iter().enumerate() {
            if self.features[..i].contains(f) {
                return Err(format!("feature {f:?} is listed twice"));
            }
        }
        if self.features.len() != self.model.input {
            return Err(format!("{} features but model.input is {}", self.features.len(), self.model.input));
        }
        if self.normalisation.len() != self.features.len() {
            return Err(format!(
                "{} normalisation entries for {} features",
                self.normalisation.len(),
                self.features.len()
            ));
        }
        for (f, s) in self.features.iter().zip(&self.normalisation) {
            if !(s.mean.is_finite() && s.std.is_finite() && s.std > 0.0) {
                return Err(format!("normalisation of {f:?} needs a finite mean and a std above 0, got {s:?}"));
            }
        }
        match (self.format, &self.levels) {
            (1, None) => {}
            (1, Some(_)) => return Err("format 1 has no levels; a model with levels is format 2".to_owned()),
            (_, None) => return Err(format!("format {} needs levels", self.format)),
            (_, Some(l)) => {
                if !(l.weight.is_finite() && l.weight >= 0.0) {
                    return Err(format!("levels.weight must be finite and at least 0, got {}", l.weight));
                }
                if l.rows == 0 || l.rows > self.window.points {
                    return Err(format!("levels.rows must be from 1 to {}, got {}", self.window.points, l.rows));
                }
                if l.highs.len() != self.features.len() {
                    return Err(format!("{} level highs for {} features", l.highs.len(), self.features.len()));
                }
                for (f, h) in self.features.iter().zip(&l.highs) {
                    if !h.is_finite() {
                        return Err(format!("level high of {f:?} must be finite, got {h}"));
                    }
                }
            }
        }
        if self.window.points < 2 || self.window.step_ms <= 0 {
            return Err(format!("window needs at least 2 points and a positive step, got {:?}", self.window));
        }
        self.model.check(self.window.points).map_err(|e| format!("model: {e}"))?;
        self.calibration.check()
    }
}

/// Reads and checks `dir/metadata.json` and `dir/model.safetensors`.
pub fn read(dir: &Path) -> Result<(Metadata, HashMap<String, Tensor>), ModelError> {
    let meta_path = dir.join(METADATA_FILE);
    let weights_path = dir.join(WEIGHTS_FILE);
    let json = std::fs::read(&meta_path).map_err(|source| ModelError::Read { path: meta_path.clone(), source })?;
    let weights =
        std::fs::read(&weights_path).map_err(|source| ModelError::Read { path: weights_path.clone(), source })?;
    parse(&json, &meta_path, &weights, &weights_path)
}

/// Checks a model given as the bytes of its two files; the paths name them in errors.
pub fn parse(
    json: &[u8],
    meta_path: &Path,
    weights: &[u8],
    weights_path: &Path,
) -> Result<(Metadata, HashMap<String, Tensor>), ModelError> {
    let meta: Metadata =
        serde_json::from_slice(json).map_err(|source| ModelError::Json { path: meta_path.to_owned(), source })?;
    meta.check().map_err(|reason| ModelError::Metadata { path: meta_path.to_owned(), reason })?;
    let tensors = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
        .map_err(|e| ModelError::Safetensors { path: weights_path.to_owned(), reason: e.to_string() })?;
    check_tensors(&meta.model, &tensors, weights_path)?;
    Ok((meta, tensors))
}

fn check_tensors(config: &Config, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let expected = config.tensors();
    for (name, shape) in &expected {
        let t =
            tensors.get(name).ok_or_else(|| ModelError::MissingTensor { path: path.to_owned(), name: name.clone() })?;
        if t.dims() != shape.as_slice() || t.dtype() != DType::F32 {
            return Err(ModelError::Shape {
                path: path.to_owned(),
                name: name.clone(),
                found: t.dims().to_vec(),
                dtype: format!("{:?}", t.dtype()).to_lowercase(),
                expected: shape.clone(),
            });
        }
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite { path: path.to_owned(), name: name.clone() });
        }
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !expected.iter().any(|(n, _)| n == *k)).collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(ModelError::ExtraTensor {
            path: path.to_owned(),
            name: (*name).clone(),
            config: format!("{}-layer LSTM ({} in, {} hidden)", config.layers, config.input, config.hidden),
        });
    }
    Ok(())
}

/// Writes the two files into `dir` (created if missing), metadata last so that a
/// reader polling for it never sees it without its weights.
pub fn write(dir: &Path, meta: &Metadata, tensors: &HashMap<String, Tensor>) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Write { path: dir.to_owned(), source })?;
    let weights_path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(tensors, &weights_path)
        .map_err(|e| ModelError::Write { path: weights_path.clone(), source: std::io::Error::other(e.to_string()) })?;
    let meta_path = dir.join(METADATA_FILE);
    let mut json =
        serde_json::to_vec_pretty(meta).map_err(|source| ModelError::Json { path: meta_path.clone(), source })?;
    json.push(b'\n');
    std::fs::write(&meta_path, json).map_err(|source| ModelError::Write { path: meta_path, source })
}

/// The newest version directory of `app_type` under `root` (`root/<app_type>/<version>/`):
/// versions compare by length, then text, so `10` is newer than `9` and
/// `20261123T0400Z` newer than `20261122T2300Z`.
pub fn latest_version(root: &Path, app_type: &str) -> Result<PathBuf, ModelError> {
    let dir = root.join(app_type);
    let not_found = || ModelError::NotFound { dir: root.to_owned(), app_type: app_type.to_owned() };
    let entries = std::fs::read_dir(&dir).map_err(|_| not_found())?;
    let mut best: Option<(usize, String)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().join(METADATA_FILE).is_file() {
            continue;
        }
        let key = (name.len(), name);
        if best.as_ref().is_none_or(|b| key > *b) {
            best = Some(key);
        }
    }
    best.map(|(_, v)| dir.join(v)).ok_or_else(not_found)
}
