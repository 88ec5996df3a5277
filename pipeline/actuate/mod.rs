//! `augur actuate`: applies adjustments to the infrastructure exactly once.
//!
//! In: `augur.adjustments` (`read_committed`, a consumer group). Out: the changes,
//! made through a [`backend::Backend`], and one [`Actuation`](crate::codec::Actuation)
//! record per adjustment in `augur.actuations`, committed in one transaction with the
//! consumed offset only after the change is durable. The guardrails (caps, cooldowns,
//! rate limits, dry run) stand between the two and audit every refusal.

pub mod backend;
pub mod kubernetes;
