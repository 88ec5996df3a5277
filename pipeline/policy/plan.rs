//! The values the policy engine, its guardrails and the actuator's backends exchange.
//!
//! In: an [`Adjustment`](crate::codec::Adjustment) (relative factors decided from an
//! alert) and the [`Resources`] a backend reads from the object it will change. Out: a
//! [`Plan`] of absolute target values, or a refusal with its reason ([`Verdict`]). A
//! plan is what a backend records beside its fence, so a re-delivered adjustment
//! converges on the same values instead of applying its factors twice.

use serde::{Deserialize, Serialize};

use crate::codec::Action;

/// What a backend reads from the object an adjustment would change. `None` where the
/// backend does not know (the `log` backend knows nothing; a pod has no replica count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU allocation (limit, else request) of the instance, in millicores.
    pub cpu_millis: Option<u64>,
    /// Memory allocation (limit, else request) of the instance, in bytes.
    pub memory_bytes: Option<u64>,
    /// Replicas of the instance's workload (Deployment, simulated group).
    pub replicas: Option<u32>,
}

/// Absolute values a backend sets for one adjustment, after the guardrails clamped them.
/// `None`: leave that resource as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub action: Action,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub replicas: Option<u32>,
    /// Fraction 0..1: of new requests to turn away (SHED), or of the instance's
    /// non-critical work to move to other nodes (MIGRATE, as the adjustment's
    /// `shed_fraction` carries it); 0 for other actions.
    pub shed_fraction: f64,
    /// What the guardrails changed, e.g. "cpu clamped to the 4000m cap"; empty if nothing.
    pub note: String,
    /// CPU factor after the guardrails: target ÷ current where the current value is
    /// known, else the adjustment's factor held within the factor cap. For backends
    /// that change resources relatively (webhook, log).
    #[serde(default = "one")]
    pub cpu_factor: f64,
    /// Memory factor after the guardrails, as `cpu_factor`.
    #[serde(default = "one")]
    pub memory_factor: f64,
    /// Decide and audit only: the backend must change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

const fn one() -> f64 {
    1.0
}

impl Plan {
    /// A plan that changes nothing yet: the base the guardrails build on.
    pub fn unchanged(action: Action) -> Self {
        Self {
            action,
            cpu_millis: None,
            memory_bytes: None,
            replicas: None,
            shed_fraction: 0.0,
            note: String::new(),
            cpu_factor: 1.0,
            memory_factor: 1.0,
            dry_run: false,
        }
    }
}

/// The guardrails' answer to one adjustment.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow(Plan),
    /// Refused; the reason names the guardrail and its numbers ("cooldown: 40 s of 300 s left").
    Refuse(String),
}
