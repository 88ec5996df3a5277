//! The contract every actuator backend keeps, so that the actuator's effects happen
//! exactly once although the systems it changes have no transactions.
//!
//! In: an [`Adjustment`] and, once the guardrails allowed it, its [`Plan`]. Out: the
//! change made durably in the target system, with a fence beside it that names the
//! adjustment's id and its plan. The actuator always calls [`Backend::observe`] first:
//! a fence saying [`Fence::Done`] means an earlier attempt (whose audit record died
//! with a crashed transaction) already made the change, so it is skipped; a fence
//! saying [`Fence::Pending`] means an attempt wrote its intent and died before the
//! change, so [`Backend::apply`] completes that same plan rather than deciding anew.

use std::future::Future;

use crate::codec::Adjustment;
use crate::policy::plan::{Plan, Resources};

/// What a backend knows about an adjustment's fence on the target object.
#[derive(Debug, Clone, PartialEq)]
pub enum Fence {
    /// No trace of this adjustment: decide and apply it.
    Absent,
    /// Its change is durable: skip it and record the duplicate.
    Done,
    /// Its intent was recorded but the change may not have been made: apply this plan.
    Pending(Plan),
}

/// The object's current resources and this adjustment's fence, read in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub resources: Resources,
    pub fence: Fence,
}

/// Sorted by what the actuator does next.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Worth retrying with backoff (network, 5xx, 409 conflict, 429).
    #[error("{0}")]
    Transient(String),
    /// The target refused this change for good (object gone, eviction blocked by a
    /// PodDisruptionBudget past the retry limit, action unsupported): audited as refused.
    #[error("{0}")]
    Refused(String),
    /// The backend cannot work at all (bad credentials, bad URL, missing permission):
    /// the actuator stops with this message.
    #[error("{0}")]
    Fatal(String),
}

/// One way of changing resources. Implementations must keep the contract in the module
/// docs: after `apply` returns `Ok`, `observe` of the same adjustment returns
/// [`Fence::Done`], whatever happens to the process afterwards.
pub trait Backend: Send + Sync + 'static {
    /// `kubernetes`, `webhook`, `sim` or `log`, as actuation records name it.
    fn name(&self) -> &'static str;

    /// Read the resources the adjustment would change and its fence.
    fn observe(&self, adjustment: &Adjustment) -> impl Future<Output = Result<Observed, BackendError>> + Send;

    /// Make the change durably, fence included; returns a one-line detail for the audit
    /// ("cpu 1000m→1250m, memory 512Mi→589Mi on pod web-3").
    fn apply(&self, adjustment: &Adjustment, plan: &Plan) -> impl Future<Output = Result<String, BackendError>> + Send;
}
