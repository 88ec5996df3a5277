//! Guardrails: the bounds every adjustment passes before the actuator applies it.
//!
//! In: an [`Adjustment`], the [`Resources`] its backend read, and (through
//! [`Guardrails::remember`]) every adjustment allowed before it. Out: a [`Verdict`]:
//! a [`Plan`] of absolute targets, or a refusal whose reason names the guardrail and its
//! numbers. Guarantee, for every sequence of adjustments the actuator allows and
//! remembers:
//! - no planned CPU or memory value is above its cap or below its floor (from the
//!   application type's policy file); factors are held within the file's factor caps,
//!   which are also all that bounds a resource whose current value is unknown (the
//!   plan then carries `None` for it and the capped factor in `cpu_factor` /
//!   `memory_factor`);
//! - no two actions on one instance, or on one workload (application type + function),
//!   decided from different alerts lie closer in event time than that cooldown (the
//!   adjustments of one alert, or on one instance of one window, act together and share
//!   their cooldown), except on one instance when the later is of a higher tier: a
//!   failure that worsens is not made to wait behind the mild step taken at its first
//!   signs (the workload cooldown is between different instances);
//! - no rolling minute of event time holds more than K actions fleet-wide
//!   ([`FleetLimits::max_actions_per_minute`]);
//! - at no moment are more than P% of a workload's instances within their instance
//!   cooldown (at least one instance is always allowed, or a single-instance workload
//!   could never act); the workload's size is `current.replicas`, else the file's
//!   `expected_instances`, else 1;
//! - a scale-out never passes `max_replicas`, and is refused when the replica count is
//!   unknown; notifications bypass the resource caps and cooldowns but have their own
//!   fleet-wide rate ([`FleetLimits::max_notifications_per_minute`]);
//! - dry run (fleet-wide, or from the policy file) allows the plan with `dry_run` set,
//!   and still counts it, so a dry run audits what a live run would do.
//!
//! Time is event time (`adjustment.event_time_ms`), never the wall clock, so state
//! rebuilt after a restart by remembering earlier records judges as before. Event times
//! may come out of order (adjustments of many partitions interleave): every window is
//! checked on both sides of the new action, so the guarantees hold for any order. An
//! adjustment more than [`FleetLimits::history_ms`] (at least the longest cooldown and a
//! minute) behind the latest one remembered is refused as late, because the state it
//! would be checked against is gone.

mod caps;
mod window;

use std::collections::{BTreeSet, HashMap};

use crate::codec::{Action, Adjustment};

use super::plan::{Plan, Resources, Verdict};
use super::Policies;

/// The rolling window of the fleet-wide rate limits.
pub const MINUTE_MS: i64 = 60_000;

/// Six hours: the partitions of a consumer group drift apart by minutes in steady state
/// and by hours after an outage; actions a few hundred a hour at most.
pub const DEFAULT_HISTORY_MS: i64 = 6 * 3_600_000;

/// Limits that hold for the whole fleet, whatever the application type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLimits {
    /// K: at most this many actions (not notifications) in any minute of event time.
    pub max_actions_per_minute: u32,
    /// At most this many notifications in any minute of event time.
    pub max_notifications_per_minute: u32,
    /// Decide and audit only, for every application type.
    pub dry_run: bool,
    /// How far behind the latest action (event time) actions are still remembered, so
    /// that partitions read unevenly (one hours behind another after a restart) are
    /// still judged against each other; at least the longest cooldown.
    pub history_ms: i64,
}

impl Default for FleetLimits {
    /// 30 actions and 10 notifications a minute: enough for a bad minute of a large
    /// fleet, too few for a feedback loop to resize everything at once.
    fn default() -> Self {
        Self {
            max_actions_per_minute: 30,
            max_notifications_per_minute: 10,
            dry_run: false,
            history_ms: DEFAULT_HISTORY_MS,
        }
    }
}

/// The guardrails and what they remember of the actions allowed before.
#[derive(Debug, Clone)]
pub struct Guardrails {
    policies: Policies,
    fleet: FleetLimits,
    /// How far back actions matter: the longest cooldown, at least a minute.
    horizon_ms: i64,
    /// Event time of the latest action remembered.
    watermark: i64,
    /// Actions before this event time have been forgotten.
    forgotten_before: i64,
    /// Per instance: (event time, alert id).
    /// Per instance: (event time, alert id, tier) of each action.
    instances: HashMap<String, BTreeSet<(i64, String, i32)>>,
    /// Per workload: (event time, instance, alert id).
    workloads: HashMap<String, BTreeSet<(i64, String, String)>>,
    /// Fleet-wide actions: (event time, adjustment id).
    actions: BTreeSet<(i64, String)>,
    /// Fleet-wide notifications: (event time, adjustment id).
    notifications: BTreeSet<(i64, String)>,
}

impl Guardrails {
    pub fn new(policies: &Policies, fleet: FleetLimits) -> Self {
        let default = super::GuardrailSettings::default();
        let longest_s = policies
            .app_types()
            .filter_map(|a| policies.get(a))
            .map(|p| &p.guardrails)
            .chain([&default])
            .map(|g| g.instance_cooldown_s.max(g.workload_cooldown_s))
            .max()
            .unwrap_or(0);
        let horizon_ms =
            i64::try_from(longest_s.saturating_mul(1000)).unwrap_or(i64::MAX / 4).max(MINUTE_MS).max(fleet.history_ms);
        Self {
            policies: policies.clone(),
            fleet,
            horizon_ms,
            watermark: i64::MIN,
            forgotten_before: i64::MIN,
            instances: HashMap::new(),
            workloads: HashMap::new(),
            actions: BTreeSet::new(),
            notifications: BTreeSet::new(),
        }
    }

    /// The verdict on one adjustment given its target's current resources. Pure: call
    /// [`Guardrails::remember`] once the allowed adjustment is applied.
    pub fn check(&self, adjustment: &Adjustment, current: &Resources) -> Verdict {
        match self.judge(adjustment, current) {
            Ok(plan) => Verdict::Allow(plan),
            Err(reason) => Verdict::Refuse(reason),
        }
    }

    fn judge(&self, a: &Adjustment, current: &Resources) -> Result<Plan, String> {
        let policy = self.policies.policy_or_default(&a.app_type);
        let g = &policy.guardrails;
        let function = policy.function(&a.function);
        let t = a.event_time_ms;
        if t < self.forgotten_before.saturating_add(self.horizon_ms) {
            return Err(format!(
                "late: event time {t} is more than {} behind the latest action at {}; \
                 the cooldowns and rates it would be checked against are forgotten",
                secs(self.horizon_ms),
                self.watermark
            ));
        }
        let mut plan = caps::plan(g, a, current, function.critical)?;
        if a.action == Action::Notify {
            let k = self.fleet.max_notifications_per_minute;
            let busiest = window::busiest_minute(&self.notifications, t, &a.id);
            if busiest > k as usize {
                return Err(format!(
                    "notification rate limit: {busiest} notifications within a minute of event time {t}; \
                     at most {k} per minute"
                ));
            }
        } else {
            let ic = secs_ms(g.instance_cooldown_s);
            if let Some((x, alert)) =
                window::cooldown_conflict(self.instances.get(&a.instance_id), t, ic, &a.alert_id, a.tier)
            {
                return Err(format!(
                    "instance cooldown: {} was acted on {} (alert {alert}); cooldown {}",
                    a.instance_id,
                    apart(x, t),
                    secs(ic)
                ));
            }
            let wc = secs_ms(g.workload_cooldown_s);
            let key = workload(&a.app_type, &a.function);
            let in_workload = self.workloads.get(&key);
            if let Some((x, instance, alert)) =
                window::workload_conflict(in_workload, t, wc, &a.instance_id, &a.alert_id)
            {
                return Err(format!(
                    "workload cooldown: {key} was acted on {} (instance {instance}, alert {alert}); cooldown {}",
                    apart(x, t),
                    secs(wc)
                ));
            }
            let size = current.replicas.or(function.expected_instances).unwrap_or(1).max(1);
            let allowed = allowed_instances(size, g.max_workload_percent);
            let busiest = window::busiest_share(in_workload, t, ic, &a.instance_id);
            if busiest > allowed {
                return Err(format!(
                    "workload share: {busiest} of {size} instances of {key} would be acted on within one \
                     {} instance cooldown; at most {}% ({allowed})",
                    secs(ic),
                    g.max_workload_percent
                ));
            }
            let k = self.fleet.max_actions_per_minute;
            let busiest = window::busiest_minute(&self.actions, t, &a.id);
            if busiest > k as usize {
                return Err(format!(
                    "fleet rate limit: {busiest} actions within a minute of event time {t}; at most {k} per minute"
                ));
            }
        }
        plan.dry_run = self.fleet.dry_run || policy.dry_run || a.dry_run;
        if plan.dry_run {
            let from = if self.fleet.dry_run { "fleet" } else { "policy of the application type" };
            let note = format!("dry run ({from}): nothing changed");
            plan.note = if plan.note.is_empty() { note } else { format!("{}; {note}", plan.note) };
        }
        Ok(plan)
    }

    /// Counts an allowed adjustment (applied, or decided in dry run) against the
    /// cooldowns and rates. Idempotent: remembering one adjustment twice counts it once,
    /// so state can be rebuilt from records that overlap with what was remembered live.
    pub fn remember(&mut self, adjustment: &Adjustment, plan: &Plan) {
        let t = adjustment.event_time_ms;
        if t < self.forgotten_before {
            return;
        }
        if plan.action == Action::Notify {
            self.notifications.insert((t, adjustment.id.clone()));
        } else {
            self.instances.entry(adjustment.instance_id.clone()).or_default().insert((
                t,
                adjustment.alert_id.clone(),
                adjustment.tier,
            ));
            self.workloads.entry(workload(&adjustment.app_type, &adjustment.function)).or_default().insert((
                t,
                adjustment.instance_id.clone(),
                adjustment.alert_id.clone(),
            ));
            self.actions.insert((t, adjustment.id.clone()));
        }
        self.watermark = self.watermark.max(t);
        // Amortised: forget in steps of one horizon, keeping two horizons behind the
        // watermark so an adjustment up to one horizon late still sees both sides.
        if self.watermark >= self.forgotten_before.saturating_add(self.horizon_ms.saturating_mul(3)) {
            self.forget_before(self.watermark.saturating_sub(self.horizon_ms.saturating_mul(2)));
        }
    }

    fn forget_before(&mut self, cut: i64) {
        self.forgotten_before = cut;
        self.instances.retain(|_, s| {
            s.retain(|e| e.0 >= cut);
            !s.is_empty()
        });
        self.workloads.retain(|_, s| {
            s.retain(|e| e.0 >= cut);
            !s.is_empty()
        });
        self.actions.retain(|e| e.0 >= cut);
        self.notifications.retain(|e| e.0 >= cut);
    }
}

/// The instances of a workload of `size` that may be within their cooldown at once:
/// `floor(size × percent / 100)`, at least 1.
pub fn allowed_instances(size: u32, percent: f64) -> usize {
    ((f64::from(size) * percent / 100.0).floor() as usize).max(1)
}

fn workload(app_type: &str, function: &str) -> String {
    format!("{app_type}/{function}")
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX / 4)
}

fn secs(ms: i64) -> String {
    format!("{} s", ms as f64 / 1000.0)
}

/// "40 s before" / "12.5 s after": where an earlier action lies from `t`.
fn apart(x: i64, t: i64) -> String {
    let d = i128::from(t) - i128::from(x);
    let s = d.unsigned_abs() as f64 / 1000.0;
    if d >= 0 {
        format!("{s} s before")
    } else {
        format!("{s} s after (out of order)")
    }
}

#[cfg(test)]
mod tests;
