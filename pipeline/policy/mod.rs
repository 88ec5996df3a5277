//! Policy: from alerts to resource adjustments, and the guardrails that bound them.
//!
//! In: alerts (signature matches with their confidence, anomaly scores with their
//! tier) and a policy file per application type. Out: [`Adjustment`](crate::codec::Adjustment)s
//! with deterministic ids, decided inside the detector's transaction; and, in the
//! actuator, a [`plan::Verdict`] per adjustment from the guardrails (caps, floors,
//! cooldowns, rate limits, dry run). Every decision is a function of event time and
//! the records before it, never of the wall clock.

pub mod plan;
