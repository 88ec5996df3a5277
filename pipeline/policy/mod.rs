//! Policy: from alerts to resource adjustments, and the guardrails that bound them.
//!
//! In: alerts (signature matches with their confidence, anomaly scores with their
//! tier) and a policy file per application type (`policies/*.toml`). Out:
//! [`Adjustment`](crate::codec::Adjustment)s with deterministic ids, decided inside the
//! detector's transaction by [`Policies::decide`]; and, in the actuator, a
//! [`plan::Verdict`] per adjustment from the [`Guardrails`] (caps, floors, cooldowns,
//! rate limits, dry run). Every decision is a function of event time and the records
//! before it, never of the wall clock.

pub mod decide;
pub mod file;
pub mod guardrails;
pub mod load;
pub mod plan;
pub mod tiers;

pub use file::{Cpu, FunctionPolicy, GuardrailSettings, Memory, PolicyFile, Rule, TierOptions};
pub use guardrails::{FleetLimits, Guardrails};
pub use load::{shipped_dir, Policies, PolicyError};
pub use tiers::{tier, tier_of_score};
