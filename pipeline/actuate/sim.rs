//! The `sim` backend: adjustments applied to simulated instances, held in memory.
//!
//! In: adjustments for instances the simulator names (`web-checkout-0001`). Out: each
//! instance's current allocation (starting from its profile's nominal limits), its
//! shed fraction and whether its non-critical work was moved away, readable through
//! [`SimFleet`] by a simulator in the same process (the demo), with the fence kept in
//! the same map entry as the change, so both are made in one step. Every change is also
//! queued as the simulator's [`Change`], in the order made, for the simulator to take.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::actuate::backend::{Backend, BackendError, Fence, Observed};
use crate::codec::{Action, Adjustment};
use crate::policy::plan::{Plan, Resources};
use crate::simulate::Change;

/// Adjustment ids remembered per instance; far more than an actuator has in flight.
const FENCE_HISTORY: usize = 64;

/// What the actuator has done to one simulated instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SimInstance {
    pub resources: Resources,
    pub shed_fraction: f64,
    pub migrated: bool,
    /// Adjustment ids applied here, newest last.
    pub fence: VecDeque<String>,
    /// Changes made (one per adjustment applied), for tests and the demo's report.
    pub changes: u64,
}

/// The simulated fleet's allocations, shared between the backend and a simulator.
#[derive(Debug, Clone, Default)]
pub struct SimFleet {
    instances: Arc<DashMap<String, SimInstance>>,
    /// Changes made and not yet taken by the simulator, in order.
    queued: Arc<Mutex<Vec<(String, Change)>>>,
    /// Instances per workload (application type, function), when the simulator told.
    workloads: Arc<BTreeMap<(String, String), u32>>,
}

/// Share of an instance's non-critical work a migration moves: all of it.
const MIGRATED_SHARE: f64 = 1.0;

impl SimFleet {
    /// The changes made since the last call, in the order they were made, as the
    /// simulator's [`Change`]s of each instance.
    pub fn take_changes(&self) -> Vec<(String, Change)> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn get(&self, instance_id: &str) -> Option<SimInstance> {
        self.instances.get(instance_id).map(|e| e.value().clone())
    }

    /// Total changes made across the fleet.
    pub fn changes(&self) -> u64 {
        self.instances.iter().map(|e| e.changes).sum()
    }

    /// A fleet whose workloads have these many instances: scale-outs start from them
    /// (unknown otherwise, which the guardrails refuse to scale).
    pub fn with_workloads(sizes: impl IntoIterator<Item = ((String, String), u32)>) -> Self {
        Self { workloads: Arc::new(sizes.into_iter().collect()), ..Self::default() }
    }

    fn fresh(&self, adjustment: &Adjustment) -> Option<SimInstance> {
        let (cpu, memory) = crate::simulate::nominal_limits(&adjustment.instance_id)?;
        let replicas = self.workloads.get(&(adjustment.app_type.clone(), adjustment.function.clone())).copied();
        Some(SimInstance {
            resources: Resources { cpu_millis: Some(cpu), memory_bytes: Some(memory), replicas },
            shed_fraction: 0.0,
            migrated: false,
            fence: VecDeque::new(),
            changes: 0,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct SimBackend {
    pub fleet: SimFleet,
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn observe(&self, adjustment: &Adjustment) -> Result<Observed, BackendError> {
        let instance = match self.fleet.get(&adjustment.instance_id) {
            Some(i) => i,
            None => self.fleet.fresh(adjustment).ok_or_else(|| unknown(adjustment))?,
        };
        let fence = if instance.fence.contains(&adjustment.id) { Fence::Done } else { Fence::Absent };
        Ok(Observed { resources: instance.resources, fence })
    }

    async fn apply(&self, adjustment: &Adjustment, plan: &Plan) -> Result<String, BackendError> {
        let fresh = self.fleet.fresh(adjustment).ok_or_else(|| unknown(adjustment))?;
        let mut entry = self.fleet.instances.entry(adjustment.instance_id.clone()).or_insert(fresh);
        let i = entry.value_mut();
        if i.fence.contains(&adjustment.id) {
            return Ok("already in place".to_owned());
        }
        let before = i.resources;
        match plan.action {
            Action::Resize | Action::ScaleOut => {
                i.resources.cpu_millis = plan.cpu_millis.or(i.resources.cpu_millis);
                i.resources.memory_bytes = plan.memory_bytes.or(i.resources.memory_bytes);
                i.resources.replicas = plan.replicas.or(i.resources.replicas);
            }
            Action::Shed => i.shed_fraction = plan.shed_fraction,
            Action::Migrate => i.migrated = true,
            Action::Notify | Action::None => {
                return Err(BackendError::Refused(format!("{:?} is not a change the simulator makes", plan.action)))
            }
        }
        i.fence.push_back(adjustment.id.clone());
        if i.fence.len() > FENCE_HISTORY {
            i.fence.pop_front();
        }
        i.changes += 1;
        let changes = simulated(plan.action, &before, i);
        self.fleet
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(changes.into_iter().map(|c| (adjustment.instance_id.clone(), c)));
        Ok(format!("{} on {}", crate::actuate::apply::describe(plan, &before), adjustment.instance_id))
    }
}

/// The simulator's changes that take an instance from `before` to `after`: its model
/// speaks of factors and deltas, the plan of absolute values. A scale-out's new
/// replicas of the workload share the instance's traffic (the simulator's instance
/// stands for the part of the service in trouble).
fn simulated(action: Action, before: &Resources, after: &SimInstance) -> Vec<Change> {
    let factor = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(f), Some(t)) if f > 0 => t as f64 / f as f64,
        _ => 1.0,
    };
    let mut changes = Vec::new();
    match action {
        Action::Resize | Action::ScaleOut => {
            let cpu_factor = factor(before.cpu_millis, after.resources.cpu_millis);
            let memory_factor = factor(before.memory_bytes, after.resources.memory_bytes);
            if cpu_factor != 1.0 || memory_factor != 1.0 {
                changes.push(Change::Resize { cpu_factor, memory_factor });
            }
            let replicas = |r: Option<u32>| i64::from(r.unwrap_or(1));
            let delta = replicas(after.resources.replicas) - replicas(before.replicas);
            if delta != 0 {
                changes.push(Change::ScaleOut {
                    replicas_delta: delta.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                });
            }
        }
        Action::Shed => changes.push(Change::Shed { fraction: after.shed_fraction }),
        Action::Migrate => changes.push(Change::Migrate { fraction: MIGRATED_SHARE }),
        Action::Notify | Action::None => {}
    }
    changes
}

fn unknown(adjustment: &Adjustment) -> BackendError {
    BackendError::Refused(format!("{} is not an instance of the simulated fleet", adjustment.instance_id))
}

/// The `log` backend: a dry run's target. It knows no resources and changes nothing;
/// the actuator runs it with dry run on, so its `apply` only writes the log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogBackend;

impl Backend for LogBackend {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn observe(&self, _: &Adjustment) -> Result<Observed, BackendError> {
        Ok(Observed { resources: Resources::default(), fence: Fence::Absent })
    }

    async fn apply(&self, adjustment: &Adjustment, plan: &Plan) -> Result<String, BackendError> {
        let what = crate::actuate::apply::describe(plan, &Resources::default());
        tracing::info!(adjustment = %adjustment.id, instance = %adjustment.instance_id, %what, "adjustment");
        Ok(format!("logged: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adjustment(id: &str, instance: &str) -> Adjustment {
        Adjustment {
            id: id.into(),
            alert_id: "a".into(),
            instance_id: instance.into(),
            app_type: "web".into(),
            function: "checkout".into(),
            action: Action::Resize,
            cpu_factor: 1.5,
            memory_factor: 1.3,
            replicas_delta: 0,
            shed_fraction: 0.0,
            tier: 3,
            reason: String::new(),
            dry_run: false,
            event_time_ms: 0,
        }
    }

    #[tokio::test]
    async fn starts_from_nominal_limits_and_fences_each_change() {
        let b = SimBackend::default();
        let a = adjustment("x", "web-checkout-0003");
        let o = b.observe(&a).await.unwrap();
        let (cpu, memory) = crate::simulate::nominal_limits("web-checkout-0003").unwrap();
        assert_eq!(o.resources.cpu_millis, Some(cpu));
        assert_eq!(o.fence, Fence::Absent);
        let plan =
            Plan { cpu_millis: Some(cpu * 3 / 2), memory_bytes: Some(memory), ..Plan::unchanged(Action::Resize) };
        b.apply(&a, &plan).await.unwrap();
        b.apply(&a, &plan).await.unwrap();
        assert_eq!(b.observe(&a).await.unwrap().fence, Fence::Done);
        let i = b.fleet.get("web-checkout-0003").unwrap();
        assert_eq!(i.resources.cpu_millis, Some(cpu * 3 / 2));
        assert_eq!(i.changes, 1, "the second apply found its fence");
        let queued = b.fleet.take_changes();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(matches!(queued[0], (ref id, Change::Resize { cpu_factor, memory_factor })
            if id == "web-checkout-0003" && (cpu_factor - 1.5).abs() < 1e-3 && memory_factor == 1.0));
        assert!(b.fleet.take_changes().is_empty(), "taken once");
    }

    #[tokio::test]
    async fn instances_the_simulator_would_not_make_are_refused() {
        let b = SimBackend::default();
        let e = b.observe(&adjustment("x", "nginx-7f9c")).await.unwrap_err();
        assert!(matches!(e, BackendError::Refused(m) if m.contains("nginx-7f9c")));
    }
}
