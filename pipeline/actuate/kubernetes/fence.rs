//! The fence a Kubernetes object carries: the ids of the adjustments recently applied to
//! it, each with its state and plan, in one annotation.
//!
//! In: the object's annotations as read. Out: the [`Fence`] of one adjustment, and the
//! annotation value to write back with the change (or with the intent, where the change
//! goes through a subresource that cannot carry it). The history is bounded to
//! [`HISTORY`] ids per object so the annotation stays small; an adjustment redelivered
//! after that many newer ones on the same object would not be recognised, far beyond the
//! actuator's redelivery window of one uncommitted batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::actuate::backend::Fence;
use crate::policy::plan::Plan;

/// The annotation holding the fence, on pods (in-place resize, shed) and Deployments
/// (template resize, scale-out, migrate).
pub const ANNOTATION: &str = "augur.io/adjustments";

/// How many adjustment ids an object remembers.
pub const HISTORY: usize = 32;

/// Where an adjustment stands on one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Intent written; the change may or may not have been made.
    Pending,
    /// The change is durable.
    Done,
}

/// One adjustment remembered by an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub state: State,
    pub plan: Plan,
    /// The node a migration cordons, recorded with its intent: the evicted pod that
    /// named it may be gone when an interrupted migration is completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The adjustments an object remembers, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger(Vec<Entry>);

impl Ledger {
    /// Reads the ledger from an object's annotations; a missing annotation is empty, a
    /// malformed one an error naming what is wrong (someone edited it by hand).
    pub fn read(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, String> {
        match annotations.and_then(|a| a.get(ANNOTATION)) {
            None => Ok(Self::default()),
            Some(text) => serde_json::from_str(text)
                .map(Self)
                .map_err(|e| format!("annotation {ANNOTATION} is not a list of adjustment entries: {e}")),
        }
    }

    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.0.iter().find(|e| e.id == id)
    }

    /// The fence of one adjustment as the actuator sees it.
    pub fn fence(&self, id: &str) -> Fence {
        match self.entry(id) {
            None => Fence::Absent,
            Some(Entry { state: State::Done, .. }) => Fence::Done,
            Some(Entry { state: State::Pending, plan, .. }) => Fence::Pending(plan.clone()),
        }
    }

    /// Records an adjustment's new state, replacing its earlier entry and forgetting the
    /// oldest beyond [`HISTORY`].
    pub fn record(&mut self, entry: Entry) {
        self.0.retain(|e| e.id != entry.id);
        self.0.push(entry);
        let excess = self.0.len().saturating_sub(HISTORY);
        self.0.drain(..excess);
    }

    /// A merge patch of the object's metadata that writes this ledger, valid only if the
    /// object is still at `resource_version` (the API server answers 409 otherwise).
    pub fn patch(&self, resource_version: &str) -> Result<Value, String> {
        let text = serde_json::to_string(&self.0).map_err(|e| format!("cannot encode annotation {ANNOTATION}: {e}"))?;
        Ok(json!({ "metadata": { "resourceVersion": resource_version, "annotations": { ANNOTATION: text } } }))
    }
}

/// The stronger of two fences for one adjustment: a change recorded as done anywhere is
/// done; otherwise a recorded intent is pending.
pub fn combine(a: Fence, b: Fence) -> Fence {
    match (a, b) {
        (Fence::Done, _) | (_, Fence::Done) => Fence::Done,
        (Fence::Pending(plan), _) | (_, Fence::Pending(plan)) => Fence::Pending(plan),
        _ => Fence::Absent,
    }
}

/// Merges `change` into `base` (JSON merge patch semantics, objects only), so a fenced
/// write can carry the change and the ledger in one request.
pub fn merge(base: &mut Value, change: Value) {
    match (base, change) {
        (Value::Object(base), Value::Object(change)) => {
            for (key, value) in change {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, change) => *base = change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Action;

    fn plan(cpu: u64) -> Plan {
        Plan { cpu_millis: Some(cpu), ..Plan::unchanged(Action::Resize) }
    }

    fn entry(id: &str, state: State) -> Entry {
        Entry { id: id.into(), state, plan: plan(1000), node: None }
    }

    #[test]
    fn a_pending_entry_becomes_done_in_place() {
        let mut ledger = Ledger::default();
        ledger.record(entry("a", State::Pending));
        assert_eq!(ledger.fence("a"), Fence::Pending(plan(1000)));
        ledger.record(entry("a", State::Done));
        assert_eq!(ledger.fence("a"), Fence::Done);
        assert_eq!(ledger.0.len(), 1);
        assert_eq!(ledger.fence("b"), Fence::Absent);
    }

    #[test]
    fn history_is_bounded_and_forgets_the_oldest() {
        let mut ledger = Ledger::default();
        for i in 0..HISTORY + 5 {
            ledger.record(entry(&format!("id-{i}"), State::Done));
        }
        assert_eq!(ledger.0.len(), HISTORY);
        assert_eq!(ledger.fence("id-4"), Fence::Absent);
        assert_eq!(ledger.fence("id-5"), Fence::Done);
    }

    #[test]
    fn the_annotation_round_trips_and_bad_text_is_named() {
        let mut ledger = Ledger::default();
        ledger.record(entry("a", State::Pending));
        let patch = ledger.patch("42").unwrap_or_default();
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        let text = patch["metadata"]["annotations"][ANNOTATION].as_str().map(str::to_owned);
        let annotations: BTreeMap<String, String> = [(ANNOTATION.to_owned(), text.unwrap_or_default())].into();
        assert_eq!(Ledger::read(Some(&annotations)), Ok(ledger));
        let broken: BTreeMap<String, String> = [(ANNOTATION.to_owned(), "{".to_owned())].into();
        assert!(Ledger::read(Some(&broken)).is_err_and(|e| e.contains(ANNOTATION)));
    }

    #[test]
    fn done_beats_pending_beats_absent() {
        assert_eq!(combine(Fence::Absent, Fence::Done), Fence::Done);
        assert_eq!(combine(Fence::Pending(plan(1)), Fence::Done), Fence::Done);
        assert_eq!(combine(Fence::Absent, Fence::Pending(plan(1))), Fence::Pending(plan(1)));
        assert_eq!(combine(Fence::Absent, Fence::Absent), Fence::Absent);
    }
}
