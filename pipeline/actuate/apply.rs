//! One adjustment, from its record to its audit: fence first, guardrails second, the
//! change last, retried with backoff.
//!
//! In: an [`Adjustment`], a [`Backend`], the guardrails ([`Gate`]) and whether this is a
//! dry run. Out: an [`Actuation`] saying what happened — applied, a duplicate of an
//! earlier attempt found by its fence, refused (with the guardrail's or the target's
//! reason), failed after the retry limit, or dry-run — or a fatal error that stops the
//! actuator before anything is committed. Nothing is dropped: every adjustment that
//! reaches this code ends in exactly one of those.

use std::time::Duration;

use crate::actuate::backend::{Backend, BackendError, Fence};
use crate::codec::{Actuation, ActuationResult, Adjustment};
use crate::policy::plan::{Plan, Resources, Verdict};

/// The guardrails as the actuator uses them: a pure verdict, then state kept for the
/// adjustments that did change something (or would have, in a dry run).
pub trait Gate: Send {
    fn check(&self, adjustment: &Adjustment, current: &Resources) -> Verdict;
    fn remember(&mut self, adjustment: &Adjustment, plan: &Plan);
}

impl Gate for crate::policy::guardrails::Guardrails {
    fn check(&self, adjustment: &Adjustment, current: &Resources) -> Verdict {
        crate::policy::guardrails::Guardrails::check(self, adjustment, current)
    }
    fn remember(&mut self, adjustment: &Adjustment, plan: &Plan) {
        crate::policy::guardrails::Guardrails::remember(self, adjustment, plan);
    }
}

/// How often and how patiently a backend call is tried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Calls at most, the first included.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each next one.
    pub base: Duration,
    pub max: Duration,
}

impl Default for Retry {
    /// Eight calls over about 25 s: long enough to ride out an API server's restart or a
    /// PodDisruptionBudget that frees up, short enough that the partition keeps moving.
    fn default() -> Self {
        Self { attempts: 8, base: Duration::from_millis(200), max: Duration::from_secs(10) }
    }
}

impl Retry {
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The backend refused to work at all: the actuator must stop, committing nothing.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend}: {message}")]
pub struct Fatal {
    pub backend: &'static str,
    pub message: String,
}

/// What a call ended in after its retries.
enum Called<T> {
    Done(T),
    Refused(String),
    Failed(String),
}

async fn call<T, F, Fut>(backend: &'static str, retry: &Retry, attempts: &mut u32, mut f: F) -> Result<Called<T>, Fatal>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut failures = 0;
    loop {
        *attempts += 1;
        match f().await {
            Ok(v) => return Ok(Called::Done(v)),
            Err(BackendError::Refused(r)) => return Ok(Called::Refused(r)),
            Err(BackendError::Fatal(message)) => return Err(Fatal { backend, message }),
            Err(BackendError::Transient(e)) => {
                failures += 1;
                if failures >= retry.attempts {
                    return Ok(Called::Failed(format!("gave up after {failures} failed calls: {e}")));
                }
                tracing::warn!(backend, error = %e, failures, "backend call failed; retrying");
                tokio::time::sleep(retry.delay(failures)).await;
            }
        }
    }
}

/// Handles one adjustment end to end and returns its audit record.
pub async fn actuate<B: Backend, G: Gate + ?Sized>(
    backend: &B,
    gate: &mut G,
    adjustment: &Adjustment,
    retry: &Retry,
    dry_run: bool,
) -> Result<Actuation, Fatal> {
    let name = backend.name();
    let mut attempts = 0;
    let record = |result, detail: String, plan: Option<&Plan>, attempts: u32| Actuation {
        adjustment_id: adjustment.id.clone(),
        instance_id: adjustment.instance_id.clone(),
        app_type: adjustment.app_type.clone(),
        function: adjustment.function.clone(),
        action: adjustment.action.symbol().to_owned(),
        backend: name.to_owned(),
        result,
        detail,
        cpu_millis: plan.and_then(|p| p.cpu_millis).map(|v| v as i64),
        memory_bytes: plan.and_then(|p| p.memory_bytes).map(|v| v as i64),
        replicas: plan.and_then(|p| p.replicas).map(|v| v as i32),
        attempts: attempts as i32,
        event_time_ms: adjustment.event_time_ms,
        applied_at_ms: wall_ms(),
    };

    let observed = match call(name, retry, &mut attempts, || backend.observe(adjustment)).await? {
        Called::Done(o) => o,
        Called::Refused(r) => return Ok(record(ActuationResult::Refused, r, None, attempts)),
        Called::Failed(r) => {
            return Ok(record(ActuationResult::Failed, format!("reading the target: {r}"), None, attempts))
        }
    };
    let (plan, completing) = match observed.fence {
        Fence::Done => {
            // The change is in place; its audit died with an aborted transaction. The
            // guardrails learn of it again, as they would have the first time.
            let plan = Plan::unchanged(adjustment.action);
            gate.remember(adjustment, &plan);
            let detail = "the change of an earlier attempt is in place (fence found); not made again".to_owned();
            return Ok(record(ActuationResult::Duplicate, detail, None, attempts));
        }
        Fence::Pending(plan) => (plan, true),
        Fence::Absent => match gate.check(adjustment, &observed.resources) {
            Verdict::Refuse(reason) => return Ok(record(ActuationResult::Refused, reason, None, attempts)),
            Verdict::Allow(plan) => (plan, false),
        },
    };
    if dry_run || adjustment.dry_run || plan.dry_run {
        gate.remember(adjustment, &plan);
        let detail = format!("dry run: would {}", describe(&plan, &observed.resources));
        return Ok(record(ActuationResult::DryRun, detail, Some(&plan), attempts));
    }
    match call(name, retry, &mut attempts, || backend.apply(adjustment, &plan)).await? {
        Called::Done(detail) => {
            gate.remember(adjustment, &plan);
            let detail = if completing { format!("completed an interrupted attempt: {detail}") } else { detail };
            let detail = if plan.note.is_empty() { detail } else { format!("{detail} ({})", plan.note) };
            Ok(record(ActuationResult::Applied, detail, Some(&plan), attempts))
        }
        Called::Refused(r) => Ok(record(ActuationResult::Refused, r, Some(&plan), attempts)),
        Called::Failed(r) => Ok(record(ActuationResult::Failed, r, Some(&plan), attempts)),
    }
}

/// The audit of an adjustment refused before any backend saw it (no notifier for the
/// critical tier, a holdout).
pub fn refusal(a: &Adjustment, backend: &str, detail: String) -> Actuation {
    Actuation {
        adjustment_id: a.id.clone(),
        instance_id: a.instance_id.clone(),
        app_type: a.app_type.clone(),
        function: a.function.clone(),
        action: a.action.symbol().to_owned(),
        backend: backend.to_owned(),
        result: ActuationResult::Refused,
        detail,
        cpu_millis: None,
        memory_bytes: None,
        replicas: None,
        attempts: 0,
        event_time_ms: a.event_time_ms,
        applied_at_ms: wall_ms(),
    }
}

/// "set cpu 1000m→1250m, memory 512Mi→589Mi" for the audit.
pub fn describe(plan: &Plan, current: &Resources) -> String {
    let mut parts = Vec::new();
    let arrow = |from: Option<u64>, to: u64, unit: &dyn Fn(u64) -> String| match from {
        Some(f) => format!("{}→{}", unit(f), unit(to)),
        None => unit(to),
    };
    if let Some(c) = plan.cpu_millis {
        parts.push(format!("cpu {}", arrow(current.cpu_millis, c, &|v| format!("{v}m"))));
    }
    if let Some(m) = plan.memory_bytes {
        parts.push(format!("memory {}", arrow(current.memory_bytes, m, &|v| crate::policy::Memory(v).to_string())));
    }
    if let Some(r) = plan.replicas {
        parts.push(format!("replicas {}", arrow(current.replicas.map(u64::from), u64::from(r), &|v| v.to_string())));
    }
    if plan.shed_fraction > 0.0 {
        parts.push(format!("shed {:.0}% of new requests", plan.shed_fraction * 100.0));
    }
    let what = if parts.is_empty() { "change nothing measurable".to_owned() } else { parts.join(", ") };
    format!("{} {what}", plan.action.symbol().to_lowercase())
}

/// Wall time, for the audit's `applied_at_ms` only; no decision reads it.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::actuate::backend::Observed;
    use crate::codec::Action;

    fn adjustment(id: &str) -> Adjustment {
        Adjustment {
            id: id.into(),
            alert_id: "a".into(),
            instance_id: "web-checkout-0001".into(),
            app_type: "web".into(),
            function: "checkout".into(),
            action: Action::Resize,
            cpu_factor: 1.25,
            memory_factor: 1.15,
            replicas_delta: 0,
            shed_fraction: 0.0,
            tier: 2,
            reason: "tier 2".into(),
            dry_run: false,
            event_time_ms: 1_000,
        }
    }

    fn plan() -> Plan {
        Plan { cpu_millis: Some(1250), memory_bytes: Some(1 << 30), ..Plan::unchanged(Action::Resize) }
    }

    /// A backend whose answers are scripted: `failures` transient errors, then success.
    struct Scripted {
        fence: Fence,
        failures: AtomicU32,
        fatal: bool,
        applied: Mutex<Vec<Plan>>,
    }

    impl Scripted {
        fn new(fence: Fence, failures: u32) -> Self {
            Self { fence, failures: AtomicU32::new(failures), fatal: false, applied: Mutex::new(Vec::new()) }
        }
    }

    impl Backend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        async fn observe(&self, _: &Adjustment) -> Result<Observed, BackendError> {
            Ok(Observed {
                resources: Resources { cpu_millis: Some(1000), ..Resources::default() },
                fence: self.fence.clone(),
            })
        }
        async fn apply(&self, _: &Adjustment, plan: &Plan) -> Result<String, BackendError> {
            if self.fatal {
                return Err(BackendError::Fatal("403 forbidden: patch pods".into()));
            }
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(BackendError::Transient("connection refused".into()));
            }
            self.applied.lock().unwrap().push(plan.clone());
            Ok("changed".into())
        }
    }

    #[derive(Default)]
    struct Recorder {
        refuse: Option<String>,
        remembered: Vec<String>,
    }

    impl Gate for Recorder {
        fn check(&self, _: &Adjustment, _: &Resources) -> Verdict {
            match &self.refuse {
                Some(r) => Verdict::Refuse(r.clone()),
                None => Verdict::Allow(plan()),
            }
        }
        fn remember(&mut self, a: &Adjustment, _: &Plan) {
            self.remembered.push(a.id.clone());
        }
    }

    fn fast() -> Retry {
        Retry { attempts: 3, base: Duration::from_millis(1), max: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn applies_once_and_records_the_plan() {
        let backend = Scripted::new(Fence::Absent, 1);
        let mut gate = Recorder::default();
        let a = actuate(&backend, &mut gate, &adjustment("x"), &fast(), false).await.unwrap();
        assert_eq!(a.result, ActuationResult::Applied);
        assert_eq!(a.attempts, 3, "observe, one failed apply, one good apply");
        assert_eq!(a.cpu_millis, Some(1250));
        assert_eq!(a.action, "RESIZE");
        assert_eq!(backend.applied.lock().unwrap().len(), 1);
        assert_eq!(gate.remembered, vec!["x"]);
    }

    #[tokio::test]
    async fn a_fence_found_done_is_a_duplicate_and_changes_nothing() {
        let backend = Scripted::new(Fence::Done, 0);
        let mut gate = Recorder { refuse: Some("would refuse".into()), ..Recorder::default() };
        let a = actuate(&backend, &mut gate, &adjustment("x"), &fast(), false).await.unwrap();
        assert_eq!(a.result, ActuationResult::Duplicate);
        assert!(backend.applied.lock().unwrap().is_empty());
        assert_eq!(gate.remembered, vec!["x"], "the guardrails learn of the earlier change");
    }

    #[tokio::test]
    async fn a_pending_fence_completes_its_own_plan_without_asking_the_guardrails() {
        let mut recorded = plan();
        recorded.cpu_millis = Some(1111);
        let backend = Scripted::new(Fence::Pending(recorded.clone()), 0);
        let mut gate = Recorder { refuse: Some("cooldown".into()), ..Recorder::default() };
        let a = actuate(&backend, &mut gate, &adjustment("x"), &fast(), false).await.unwrap();
        assert_eq!(a.result, ActuationResult::Applied);
        assert!(a.detail.starts_with("completed an interrupted attempt"), "{}", a.detail);
        assert_eq!(*backend.applied.lock().unwrap(), vec![recorded]);
    }

    #[tokio::test]
    async fn refusals_carry_the_guardrails_reason_and_change_nothing() {
        let backend = Scripted::new(Fence::Absent, 0);
        let mut gate = Recorder { refuse: Some("cooldown: 40 s of 300 s left".into()), ..Recorder::default() };
        let a = actuate(&backend, &mut gate, &adjustment("x"), &fast(), false).await.unwrap();
        assert_eq!(a.result, ActuationResult::Refused);
        assert_eq!(a.detail, "cooldown: 40 s of 300 s left");
        assert!(backend.applied.lock().unwrap().is_empty());
        assert!(gate.remembered.is_empty());
    }

    #[tokio::test]
    async fn retries_end_in_a_failed_record_not_a_drop() {
        let backend = Scripted::new(Fence::Absent, 10);
        let mut gate = Recorder::default();
        let a = actuate(&backend, &mut gate, &adjustment("x"), &fast(), false).await.unwrap();
        assert_eq!(a.result, ActuationResult::Failed);
        assert!(a.detail.contains("gave up after 3 failed calls: connection refused"), "{}", a.detail);
        assert!(gate.remembered.is_empty());
    }

    #[tokio::test]
    async fn dry_run_decides_and_audits_but_changes_nothing() {
        let backend = Scripted::new(Fence::Absent, 0);
        let mut gate = Recorder::default();
        let a = actuate(&backend, &mut gate, &adjustment("x"), &fast(), true).await.unwrap();
        assert_eq!(a.result, ActuationResult::DryRun);
        assert!(a.detail.contains("cpu 1000m→1250m"), "{}", a.detail);
        assert!(backend.applied.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_fatal_backend_error_stops_instead_of_recording() {
        let mut backend = Scripted::new(Fence::Absent, 0);
        backend.fatal = true;
        let mut gate = Recorder::default();
        let e = actuate(&backend, &mut gate, &adjustment("x"), &fast(), false).await.unwrap_err();
        assert!(e.to_string().contains("403 forbidden"), "{e}");
    }
}
