//! The trainer's view of itself for Prometheus, on `--metrics-addr` (with `--brokers`,
//! most useful with `--every`).
//!
//! In: each round of replay, training and gating. Out: the `augur_train_*` families:
//! rounds, windows replayed and trained on, models written, promoted and held back by
//! the gate, the held-out error of the last candidate and of the serving model per
//! application type (a handful of series), the last successful round's time, and the
//! time a round takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::promote::Gate;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AppLabels {
    pub app_type: String,
}

#[derive(Debug, Clone)]
pub(super) struct Metrics {
    pub rounds: Counter,
    pub windows: Counter,
    pub models_written: Counter,
    pub models_promoted: Counter,
    pub models_held_back: Counter,
    pub candidate_error: Family<AppLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub serving_error: Family<AppLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub last_success_seconds: Gauge,
    pub round_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            rounds: Counter::default(),
            windows: Counter::default(),
            models_written: Counter::default(),
            models_promoted: Counter::default(),
            models_held_back: Counter::default(),
            candidate_error: Family::default(),
            serving_error: Family::default(),
            last_success_seconds: Gauge::default(),
            // 1 s (a small replay) to about 9 h (a large one on one core).
            round_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
        }
    }
}

impl Metrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("augur_train_rounds", "Rounds of replay, training and gating completed", self.rounds.clone());
        r.register("augur_train_windows", "Windows trained on", self.windows.clone());
        r.register("augur_train_models_written", "Models written to the model tree", self.models_written.clone());
        r.register(
            "augur_train_models_promoted",
            "Models announced on the models topic after passing the gate",
            self.models_promoted.clone(),
        );
        r.register(
            "augur_train_models_held_back",
            "Models not announced: worse than the serving one on held-out windows, or --no-promote",
            self.models_held_back.clone(),
        );
        r.register(
            "augur_train_candidate_error",
            "Mean held-out forecast error of the last candidate, per app type",
            self.candidate_error.clone(),
        );
        r.register(
            "augur_train_serving_error",
            "Mean error of the serving model on the same held-out windows, per app type",
            self.serving_error.clone(),
        );
        r.register(
            "augur_train_last_success_timestamp_seconds",
            "When the last round completed, seconds since the epoch",
            self.last_success_seconds.clone(),
        );
        r.register("augur_train_round_seconds", "Time one round takes", self.round_seconds.clone());
    }

    /// Counts one model's gate verdict.
    pub(super) fn gated(&self, gate: &Gate, announced: bool, train_windows: usize) {
        let labels = AppLabels { app_type: gate.app_type.clone() };
        self.models_written.inc();
        self.windows.inc_by(train_windows as u64);
        self.candidate_error.get_or_create(&labels).set(gate.candidate_error);
        if let Some(serving) = gate.serving_error {
            self.serving_error.get_or_create(&labels).set(serving);
        }
        if announced {
            self.models_promoted.inc();
        } else {
            self.models_held_back.inc();
        }
    }
}
