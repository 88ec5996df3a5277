//! The promotion gate and the announcement: a newly trained model replaces the serving
//! one only if it does no worse on the same held-out windows, and a promotion is
//! announced on the compacted `<prefix>.models` topic, which every detector follows.
//!
//! In: the candidate, the serving model of its application type (the one announced,
//! loaded and checked like a detector loads it), the dataset the candidate was trained
//! on. Out: a [`Gate`] verdict and, for a promotion, a [`ModelAnnouncement`]
//! (key: the app type) with the digest of the weights. Guarantees: both models are
//! scored on the candidate's held-out windows (the last share in event time, as
//! training held them out), so the comparison is like with like.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{fit, Dataset, TrainError};
use crate::codec::ModelAnnouncement;
use crate::detect::lstm::{artifact, AnomalyModel};
use crate::detect::models::{load_announced, sha256_hex};
use crate::kafka::table::{ensure_topic, read_table};
use crate::kafka::{Cluster, Publisher};
use crate::window::WindowConfig;

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gate {
    pub app_type: String,
    /// Mean forecast error of the candidate on the held-out windows.
    pub candidate_error: f64,
    /// The serving model's on the same windows; `None` when nothing is announced (or
    /// the announced model no longer loads), which promotes the candidate.
    pub serving_error: Option<f64>,
    pub serving_version: Option<String>,
    pub promote: bool,
}

/// Mean error of `model` over the held-out windows of `data` (those without a score left out).
pub fn held_out_error(model: &AnomalyModel, data: &Dataset, share: f64) -> f64 {
    let (_, held) = fit::split(data, share);
    let windows: Vec<&[f64]> = held.iter().map(|&i| data.windows[i].1.as_slice()).collect();
    let errors: Vec<f64> = model.score(&windows).into_iter().flatten().map(|s| s.error).collect();
    if errors.is_empty() {
        return f64::INFINITY;
    }
    errors.iter().sum::<f64>() / errors.len() as f64
}

/// Compares `candidate` with the model announced for its app type on `cluster`.
pub async fn gate(
    cluster: &Cluster,
    candidate: &AnomalyModel,
    data: &Dataset,
    share: f64,
    window: &WindowConfig,
) -> Result<Gate, TrainError> {
    let announced: BTreeMap<String, ModelAnnouncement> =
        read_table(cluster).await.map_err(|e| TrainError::Replay(e.to_string()))?;
    let app_type = candidate.metadata().app_type.clone();
    let serving = announced.get(&app_type).and_then(|a| match load_announced(a, window) {
        Ok(m) => Some(m),
        Err(error) => {
            tracing::warn!(%error, %app_type, "the announced model does not load; the candidate is compared with nothing");
            None
        }
    });
    let candidate_error = held_out_error(candidate, data, share);
    let serving_error = serving.as_ref().map(|m| held_out_error(m, data, share));
    Ok(Gate {
        app_type,
        candidate_error,
        serving_error,
        serving_version: serving.map(|m| m.metadata().version.clone()),
        promote: serving_error.is_none_or(|s| candidate_error <= s),
    })
}

/// How far past the newest telemetry a promoted model takes effect: time for every
/// running detector to read the announcement before its windows reach that event time.
pub const SWAP_DELAY_MS: i64 = 60_000;

/// Announces the model written in `dir` on `<prefix>.models`, in effect for windows
/// that end [`SWAP_DELAY_MS`] after the newest telemetry record there is now (after
/// the end of its training range if the topic holds nothing newer).
pub async fn announce(cluster: &Cluster, model: &AnomalyModel, dir: &Path) -> Result<ModelAnnouncement, TrainError> {
    let weights = dir.join(artifact::WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).map_err(|source| TrainError::Read { path: weights.clone(), source })?;
    let dir = std::fs::canonicalize(dir).map_err(|source| TrainError::Read { path: dir.to_owned(), source })?;
    let m = model.metadata();
    let (config, telemetry) = (cluster.client_config(), cluster.topic::<crate::codec::TelemetrySample>());
    let newest = tokio::task::spawn_blocking(move || crate::kafka::reader::latest_timestamp(&config, &telemetry))
        .await
        .map_err(|_| TrainError::Poisoned)?
        .map_err(|e| TrainError::Replay(e.to_string()))?;
    let announcement = ModelAnnouncement {
        app_type: m.app_type.clone(),
        version: m.version.clone(),
        uri: dir.to_string_lossy().into_owned(),
        sha256: sha256_hex(&bytes),
        features: m.features.clone(),
        trained_from_ms: m.training.first_event_ms,
        trained_to_ms: m.training.last_event_ms,
        validation: BTreeMap::from([
            ("mean_error".to_owned(), m.validation.mean_error),
            ("at_most_30_share".to_owned(), m.validation.at_most_30_share),
        ]),
        created_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        effective_from_ms: newest.map_or(m.training.last_event_ms, |n| n.max(m.training.last_event_ms)) + SWAP_DELAY_MS,
    };
    ensure_topic::<ModelAnnouncement>(cluster).await.map_err(|e| TrainError::Replay(e.to_string()))?;
    let topic = cluster.topic::<ModelAnnouncement>();
    let publish = |e: crate::kafka::PublishError| TrainError::Replay(format!("announcing on {topic}: {e}"));
    let mut publisher =
        Publisher::<ModelAnnouncement>::new(&cluster.producer_config(), topic.clone()).map_err(publish)?;
    publisher.publish(&announcement.app_type, &announcement, announcement.created_ms).await.map_err(publish)?;
    publisher.flush(Duration::from_secs(30)).await.map_err(publish)?;
    Ok(announcement)
}
