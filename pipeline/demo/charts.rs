//! The demo's charts: per failure kind, the story of one instance.
//!
//! In: the finished loop (each failing instance's telemetry and audits) and its report.
//! Out: one SVG per failure kind through [`crate::charts`]. Which instance: one that
//! was adjusted and did not fail if there is one, else one that was predicted, else the
//! first of the kind — the chart an SRE wants first is the one where the loop worked,
//! and the report's lines say where it did not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::report::{FailureLine, Report};
use super::stepper::Stepper;
use super::DemoError;
use crate::charts::{self, InstanceChart, Marker};
use crate::codec::ActuationResult;
use crate::detect::models::ModelSet;
use crate::window::WindowConfig;

/// How much of an instance's telemetry a chart shows before the failure's onset.
const LEAD_IN_MS: i64 = 20 * 60_000;
/// And after the failure (or when it was due).
const TAIL_MS: i64 = 10 * 60_000;

fn rank(f: &FailureLine) -> u8 {
    let adjusted = f.adjustments.iter().any(|a| a.contains(" applied "));
    match (f.holdout, adjusted, f.failed_s.is_none(), f.predicted_s.is_some()) {
        (false, true, true, _) => 0,
        (false, true, false, _) => 1,
        (_, _, _, true) => 2,
        _ => 3,
    }
}

pub(super) fn draw_all(
    dir: &Path,
    stepper: &Stepper,
    report: &Report,
    window: &WindowConfig,
    start_ms: i64,
) -> Result<Vec<PathBuf>, DemoError> {
    let mut chosen: BTreeMap<&str, &FailureLine> = BTreeMap::new();
    for f in &report.failures {
        let best = chosen.entry(&f.kind).or_insert(f);
        if rank(f) < rank(best) {
            *best = f;
        }
    }
    let matcher = charts::starter_matcher(window)?;
    let models = ModelSet::shipped(&crate::detect::lstm::shipped_dir(), window);
    let ms = |s: f64| start_ms + (s * 1000.0).round() as i64;
    let mut paths = Vec::new();
    for (kind, f) in chosen {
        let (onset, due) = (ms(f.onset_s), ms(f.due_s));
        let end = f.failed_s.map_or(due, ms).max(due) + TAIL_MS;
        let samples: Vec<_> = stepper
            .recorded
            .get(&f.instance)
            .map(|all| {
                all.iter().filter(|s| s.timestamp_ms >= onset - LEAD_IN_MS && s.timestamp_ms <= end).cloned().collect()
            })
            .unwrap_or_default();
        let Some(first) = samples.first() else { continue };
        let (app_type, function) = (first.app_type.clone(), first.function.clone());
        let scores = charts::score_series(&samples, window, &models, &matcher)?;
        let markers = stepper
            .audits
            .records
            .iter()
            .filter(|a| a.instance_id == f.instance && a.event_time_ms >= onset - LEAD_IN_MS && a.event_time_ms <= end)
            .map(|a| Marker {
                timestamp_ms: a.event_time_ms,
                label: match a.result {
                    // "resize cpu 2000m→2500m" without " on <instance>"
                    ActuationResult::Applied => a.detail.split(" on ").next().unwrap_or(&a.detail).to_owned(),
                    _ => a.action.to_lowercase(),
                },
                outcome: if a.detail.starts_with("held out") {
                    "held out".to_owned()
                } else {
                    a.result.name().to_owned()
                },
            })
            .collect();
        let chart = InstanceChart {
            instance: f.instance.clone(),
            app_type,
            function,
            kind: kind.to_owned(),
            samples,
            scores,
            markers,
            onset_ms: onset,
            failure_ms: f.failed_s.map(ms),
            expected_failure_ms: Some(due),
            holdout: f.holdout,
        };
        paths.push(charts::draw(dir, &chart)?);
    }
    Ok(paths)
}
