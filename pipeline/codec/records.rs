//! The records of the wire contract, one Rust type per schema in `schemas/*.avsc`.
//!
//! Field names and types follow the schemas exactly (serde maps them one to one); the
//! schema text is attached to each type through [`Record::SCHEMA`], so a type cannot be
//! encoded with a schema other than its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A type of the wire contract: its Avro schema and the topic it travels on.
pub trait Record: Serialize + for<'de> Deserialize<'de> {
    /// The schema text from `schemas/`, as shipped.
    const SCHEMA: &'static str;
    /// The suffix of its topic (`<prefix>.<suffix>`).
    const TOPIC: &'static str;
}

/// One sample of an application instance: many metrics observed at one event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    pub seq: i64,
    pub timestamp_ms: i64,
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TelemetrySample {
    /// The value of one metric, if the sample carries it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// One observed value of a [`TelemetrySample`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
}

impl Metric {
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Self { name: name.into(), value }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    Signature,
    Anomaly,
    Offline,
    Recovered,
}

impl AlertKind {
    /// Lower-case name, as alert ids spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Anomaly => "anomaly",
            Self::Offline => "offline",
            Self::Recovered => "recovered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    pub kind: AlertKind,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub signature: Option<String>,
    pub confidence: f64,
    pub runner_up: Option<String>,
    pub runner_up_confidence: f64,
    pub explanation: Vec<MetricContribution>,
    pub anomaly_score: Option<f64>,
    pub model_version: Option<String>,
    pub source_partition: i32,
    pub source_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricContribution {
    pub metric: String,
    pub distance: f64,
    pub share: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Resize,
    ScaleOut,
    Shed,
    Migrate,
    Notify,
    None,
}

impl Action {
    /// The schema's symbol, as audits and logs spell it.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Resize => "RESIZE",
            Self::ScaleOut => "SCALE_OUT",
            Self::Shed => "SHED",
            Self::Migrate => "MIGRATE",
            Self::Notify => "NOTIFY",
            Self::None => "NONE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adjustment {
    pub id: String,
    pub alert_id: String,
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    pub action: Action,
    pub cpu_factor: f64,
    pub memory_factor: f64,
    pub replicas_delta: i32,
    pub shed_fraction: f64,
    pub tier: i32,
    pub reason: String,
    pub dry_run: bool,
    pub event_time_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActuationResult {
    Applied,
    Duplicate,
    Refused,
    Failed,
    DryRun,
}

impl ActuationResult {
    /// Lower-case name, as metrics and people read it (`applied`, `dry_run`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::DryRun => "dry_run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actuation {
    pub adjustment_id: String,
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    pub action: String,
    pub backend: String,
    pub result: ActuationResult,
    pub detail: String,
    pub cpu_millis: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub replicas: Option<i32>,
    pub attempts: i32,
    pub event_time_ms: i64,
    pub applied_at_ms: i64,
}

/// How a signature compares one metric (see `window::features::normalise`); on the
/// command line in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "lower")]
pub enum Normalisation {
    /// Its value: for metrics whose level says something is wrong.
    Level,
    /// The series z-normalised: only its course counts.
    Shape,
    /// The log of each value over the window's opening level: the same relative climb
    /// matches on instances whose levels differ.
    Rise,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureSignature {
    pub name: String,
    pub app_type: String,
    pub function: String,
    pub failure_kind: String,
    pub metrics: Vec<String>,
    pub normalisation: Vec<Normalisation>,
    pub series: Vec<Vec<f64>>,
    pub interval_ms: i64,
    pub threshold: f64,
    pub lead_ms: i64,
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Helped,
    NoEffect,
    Worsened,
    FailedAnyway,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackOutcome {
    pub adjustment_id: String,
    pub instance_id: String,
    pub app_type: String,
    pub signature: Option<String>,
    pub action: String,
    pub score_before: Option<f64>,
    pub score_after: Option<f64>,
    pub confidence_before: f64,
    pub confidence_after: f64,
    pub failed: bool,
    pub verdict: Verdict,
    pub horizon_ms: i64,
    pub event_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEvidence {
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    pub window_end_ms: i64,
    pub anomaly_score: Option<f64>,
    pub tier: i32,
    pub model_version: Option<String>,
    pub signature: Option<String>,
    pub confidence: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedStep {
    pub from_ms: i64,
    pub value: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedValue {
    pub key: String,
    pub app_type: String,
    pub default_value: f64,
    pub floor: f64,
    pub ceiling: f64,
    pub steps: Vec<TunedStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnnouncement {
    pub app_type: String,
    pub version: String,
    pub uri: String,
    pub sha256: String,
    pub features: Vec<String>,
    pub trained_from_ms: i64,
    pub trained_to_ms: i64,
    pub validation: BTreeMap<String, f64>,
    pub created_ms: i64,
    /// Event time from which windows are scored with this model (window end ≥ it).
    pub effective_from_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    pub stage: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub payload: Option<Vec<u8>>,
    pub event_time_ms: i64,
}

macro_rules! record {
    ($ty:ty, $file:literal, $topic:literal) => {
        impl Record for $ty {
            const SCHEMA: &'static str = include_str!(concat!("../../schemas/", $file));
            const TOPIC: &'static str = $topic;
        }
    };
}

record!(TelemetrySample, "telemetry.avsc", "telemetry");
record!(Alert, "alert.avsc", "alerts");
record!(Adjustment, "adjustment.avsc", "adjustments");
record!(Actuation, "actuation.avsc", "actuations");
record!(FailureSignature, "signature.avsc", "signatures");
record!(FeedbackOutcome, "feedback.avsc", "feedback");
record!(WindowEvidence, "evidence.avsc", "scores");
record!(TunedValue, "tuned.avsc", "tuned");
record!(ModelAnnouncement, "model.avsc", "models");
record!(DeadLetter, "dead_letter.avsc", "dlq");
