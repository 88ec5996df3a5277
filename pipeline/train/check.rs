//! How a model does on a simulated fleet: the share of normal windows it leaves in the
//! "no change" tier, and how early it sees injected failures coming.
//!
//! In: a model and a [`FleetConfig`]. Out: a [`Report`]. The simulated samples go
//! through the detector's [`Windows`] store at its default hop, and every closed window
//! of the model's application type is scored as the detector would score it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::TrainError;
use crate::detect::lstm::AnomalyModel;
use crate::simulate::{Fleet, FleetConfig};
use crate::window::{WindowConfig, Windows};

/// One injected failure of the model's application type, as the model saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureSeen {
    pub instance: String,
    pub kind: String,
    pub onset_ms: i64,
    pub failure_ms: Option<i64>,
    /// Highest score of a window that ended at or before the failure (or the run's end).
    pub max_score_before: u8,
    /// How long before the failure the score first passed 70, ms; `None` if it did not.
    pub lead_above_70_ms: Option<i64>,
    /// Likewise for 90.
    pub lead_above_90_ms: Option<i64>,
}

/// What [`check`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub app_type: String,
    /// Windows of instances without a failure.
    pub normal_windows: usize,
    pub normal_at_most_30_share: f64,
    pub failures: Vec<FailureSeen>,
}

/// Runs the fleet and scores every closed window of the model's application type.
pub fn check(model: &AnomalyModel, fleet: &FleetConfig) -> Result<Report, TrainError> {
    let meta = model.metadata();
    let window = WindowConfig {
        features: meta.features.clone(),
        points: meta.window.points,
        step_ms: meta.window.step_ms,
        ..WindowConfig::default()
    };
    window.validate().map_err(|e| TrainError::Settings(e.to_string()))?;
    let mut sim = Fleet::new(fleet.clone()).map_err(|e| TrainError::Settings(e.to_string()))?;
    let store = Windows::new(window);
    let mut closed = Vec::new();
    while let Some(samples) = sim.tick() {
        for s in samples.iter().filter(|s| s.app_type == meta.app_type) {
            closed.extend(store.push(0, s).closed);
        }
    }
    let refs: Vec<&[f64]> = closed.iter().map(|w| w.values.as_slice()).collect();
    let scores = model.score(&refs);
    let truth: BTreeMap<&str, _> = sim.ground_truth().iter().map(|g| (g.instance.as_str(), g)).collect();
    let (mut normal, mut quiet) = (0usize, 0usize);
    let mut per_instance: BTreeMap<&str, Vec<(i64, u8)>> = BTreeMap::new();
    for (w, s) in closed.iter().zip(&scores) {
        let Some(s) = s else { continue };
        if truth.contains_key(w.instance_id.as_str()) {
            per_instance.entry(w.instance_id.as_str()).or_default().push((w.end_ms, s.score));
        } else {
            normal += 1;
            quiet += usize::from(s.score <= 30);
        }
    }
    let end = fleet.start_ms + fleet.duration_ms;
    let failures = truth
        .values()
        .filter(|g| g.app_type == meta.app_type)
        .map(|g| {
            let until = g.failure_ms.unwrap_or(end);
            let seen: Vec<(i64, u8)> = per_instance
                .get(g.instance.as_str())
                .map(|v| v.iter().copied().filter(|&(t, _)| t >= g.onset_ms && t <= until).collect())
                .unwrap_or_default();
            let lead = |level: u8| seen.iter().find(|&&(_, s)| s > level).map(|&(t, _)| until - t);
            FailureSeen {
                instance: g.instance.clone(),
                kind: g.kind.name().to_owned(),
                onset_ms: g.onset_ms,
                failure_ms: g.failure_ms,
                max_score_before: seen.iter().map(|&(_, s)| s).max().unwrap_or(0),
                lead_above_70_ms: lead(70),
                lead_above_90_ms: lead(90),
            }
        })
        .collect();
    Ok(Report {
        app_type: meta.app_type.clone(),
        normal_windows: normal,
        normal_at_most_30_share: if normal == 0 { 0.0 } else { quiet as f64 / normal as f64 },
        failures,
    })
}
