//! The closed loop, stepped in event time: the fleet runs a minute, the detector
//! catches up with it, the actuator applies what the policy decided, the fleet takes
//! the changes, and the next minute begins.
//!
//! In: a simulated [`Fleet`], a running detector's commit counter, the cluster. Out:
//! the fleet's telemetry on `<prefix>.telemetry`, every adjustment of
//! `<prefix>.adjustments` applied (or refused, or held out) through the actuator's own
//! [`actuate`] with the `sim` backend and audited on `<prefix>.actuations`, and the
//! fleet changed accordingly from the next step on. Guarantees: the run is a function
//! of the seed. Each minute's adjustments are applied in event-time order once the
//! detector has committed every record before them, so neither the cluster nor the
//! machine's speed changes what is decided, refused or averted. (`augur actuate` runs
//! the same [`actuate`] behind a consumer group, in the order records arrive.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::feedback::FeedbackLoop;
use super::DemoError;
use crate::actuate::apply::{self, Retry};
use crate::actuate::engine::no_notifier;
use crate::actuate::sim::{SimBackend, SimFleet};
use crate::codec::{Action, Actuation, Adjustment, Codec, Record, TelemetrySample};
use crate::kafka::reader::Follower;
use crate::kafka::{Cluster, Publisher};
use crate::policy::guardrails::{FleetLimits, Guardrails};
use crate::policy::Policies;
use crate::simulate::Fleet;

/// Steps of the fleet between two turns of the loop: one minute at the demo's 10 s
/// interval, as often as an actuator would act on a real fleet's minute-old telemetry.
pub(super) const EPOCH_STEPS: usize = 6;
/// How long a delivery or the detector may take before the demo gives up.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Instances whose adjustments are deliberately not made, so the report can compare
/// with doing nothing. Chosen by a hash of the seed and the instance id: the same for
/// every run of a seed, blind to which instances will fail.
#[derive(Debug, Clone, Copy)]
pub struct Holdout {
    pub seed: u64,
    pub fraction: f64,
}

impl Holdout {
    pub fn holds(&self, instance: &str) -> bool {
        let digest = Sha256::new().chain_update(self.seed.to_le_bytes()).chain_update(instance.as_bytes()).finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        (u64::from_le_bytes(head) as f64 / u64::MAX as f64) < self.fraction
    }
}

/// What the actuator did with the adjustments, by outcome.
#[derive(Debug, Clone, Default)]
pub(super) struct Audits {
    /// Every audit, in the order made.
    pub records: Vec<Actuation>,
    /// Adjustments the detector's policy decided, notifications of the critical tier
    /// excluded.
    pub decided: u64,
    pub notifications: u64,
    pub held_out: u64,
}

/// One instance's telemetry, kept for its chart.
pub(super) type Recorded = BTreeMap<String, Vec<TelemetrySample>>;

pub(super) struct Stepper {
    pub fleet: Fleet,
    telemetry: Publisher<TelemetrySample>,
    /// Records confirmed by the cluster.
    pub produced: u64,
    detected: Arc<AtomicU64>,
    adjustments: Tail<Adjustment>,
    audits_out: Publisher<Actuation>,
    pub backend: SimBackend,
    gate: Guardrails,
    holdout: Holdout,
    pub audits: Audits,
    /// Telemetry of the instances with an injected failure.
    pub recorded: Recorded,
    /// The feedback loop, unless turned off.
    pub feedback: Option<FeedbackLoop>,
}

impl Stepper {
    pub async fn new(
        cluster: &Cluster,
        fleet: Fleet,
        detected: Arc<AtomicU64>,
        holdout: Holdout,
        feedback: Option<FeedbackLoop>,
    ) -> Result<Self, DemoError> {
        let policies = Policies::shipped().map_err(crate::actuate::ActuateError::from)?;
        // The defaults of `augur actuate`.
        let limits = FleetLimits {
            max_actions_per_minute: 30,
            max_notifications_per_minute: 10,
            dry_run: false,
            history_ms: 6 * 3_600_000,
        };
        let recorded = fleet.ground_truth().iter().map(|g| (g.instance.clone(), Vec::new())).collect();
        let mut workloads = BTreeMap::new();
        for i in fleet.instances() {
            *workloads.entry((i.app_type().to_owned(), i.function().to_owned())).or_insert(0) += 1;
        }
        let producer = cluster.producer_config();
        Ok(Self {
            telemetry: Publisher::new(&producer, cluster.topic::<TelemetrySample>())?,
            audits_out: Publisher::new(&producer, cluster.topic::<Actuation>())?,
            fleet,
            produced: 0,
            detected,
            adjustments: Tail::new(cluster),
            backend: SimBackend { fleet: SimFleet::with_workloads(workloads) },
            gate: Guardrails::new(&policies, limits),
            holdout,
            audits: Audits::default(),
            recorded,
            feedback,
        })
    }

    /// One turn: up to [`EPOCH_STEPS`] steps of the fleet, the detector caught up, the
    /// adjustments applied, the fleet changed. False once the run is over.
    pub async fn turn(&mut self, cluster: &Cluster, stop: &CancellationToken) -> Result<bool, DemoError> {
        let mut now_ms = i64::MIN;
        for _ in 0..EPOCH_STEPS {
            let Some(samples) = self.fleet.tick() else { break };
            for sample in &samples {
                now_ms = now_ms.max(sample.timestamp_ms);
                self.telemetry.publish(&sample.instance_id, sample, sample.timestamp_ms).await?;
                if let Some(r) = self.recorded.get_mut(&sample.instance_id) {
                    r.push(sample.clone());
                }
            }
        }
        self.produced = self.telemetry.flush(STALL_LIMIT).await?;
        self.wait_for_detector(stop).await?;
        // The feedback loop's inputs are read beside the adjustments: each read waits
        // for the transaction markers at the ends of its partitions.
        let (adjustments, evidence) = tokio::join!(self.adjustments.read_new(cluster), async {
            match &mut self.feedback {
                Some(feedback) => feedback.read(cluster).await,
                None => Ok(()),
            }
        });
        evidence?;
        let mut adjustments = adjustments?;
        // Event time first, then the higher tier (of two actions at one moment the
        // guardrails keep the first); the id breaks ties the same way in every run.
        adjustments.sort_by(|a, b| (a.event_time_ms, -a.tier, &a.id).cmp(&(b.event_time_ms, -b.tier, &b.id)));
        let mut actuated = Vec::with_capacity(adjustments.len());
        for a in adjustments {
            let audit = self.actuate(&a).await?;
            self.audits_out.publish(&audit.instance_id, &audit, audit.event_time_ms).await?;
            self.audits.records.push(audit.clone());
            actuated.push((a, audit));
        }
        self.audits_out.flush(STALL_LIMIT).await?;
        if let (Some(feedback), true) = (&mut self.feedback, now_ms > i64::MIN) {
            feedback.judge(&actuated, now_ms).await?;
        }
        for (instance, change) in self.backend.fleet.take_changes() {
            if let Err(e) = self.fleet.apply(&instance, change) {
                tracing::warn!(%instance, error = %e, "the simulated fleet refused a change");
            }
        }
        Ok(self.fleet.next_timestamp_ms().is_some())
    }

    async fn actuate(&mut self, a: &Adjustment) -> Result<Actuation, DemoError> {
        if a.action == Action::Notify {
            self.audits.notifications += 1;
            return Ok(no_notifier(a));
        }
        self.audits.decided += 1;
        if self.holdout.holds(&a.instance_id) {
            self.audits.held_out += 1;
            let detail = format!("held out: {} is in the demo's unadjusted holdout", a.instance_id);
            return Ok(apply::refusal(a, "sim", detail));
        }
        let retry = Retry { attempts: 1, ..Retry::default() };
        apply::actuate(&self.backend, &mut self.gate, a, &retry, false).await.map_err(|e| {
            DemoError::Actuate(crate::actuate::ActuateError::Backend {
                backend: "sim",
                source: crate::actuate::backend::BackendError::Fatal(e.message),
            })
        })
    }

    /// Waits until the detector has committed every record produced so far.
    async fn wait_for_detector(&self, stop: &CancellationToken) -> Result<(), DemoError> {
        let (mut last, mut since) = (u64::MAX, Instant::now());
        loop {
            let done = self.detected.load(Ordering::Relaxed);
            if done >= self.produced {
                return Ok(());
            }
            if stop.is_cancelled() {
                return Err(DemoError::Stopped);
            }
            if done != last {
                (last, since) = (done, Instant::now());
            } else if since.elapsed() > STALL_LIMIT {
                return Err(DemoError::Stalled {
                    stage: "detector",
                    done: done as i64,
                    total: self.produced,
                    idle: STALL_LIMIT,
                });
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    }
}

/// A topic read from where the last read ended, records of committed transactions only.
pub(super) struct Tail<T: Record> {
    topic: String,
    follower: Option<Follower>,
    codec: Arc<Codec<T>>,
}

impl<T: Record + Send + Sync + 'static> Tail<T> {
    pub fn new(cluster: &Cluster) -> Self {
        Self { topic: cluster.topic::<T>(), follower: None, codec: Arc::new(Codec::new()) }
    }

    /// The records committed since the last call.
    pub async fn read_new(&mut self, cluster: &Cluster) -> Result<Vec<T>, DemoError> {
        let follower = match self.follower.take() {
            Some(f) => f,
            None => {
                let (config, topic) = (cluster.client_config(), self.topic.clone());
                tokio::task::spawn_blocking(move || Follower::new(&config, &topic)).await??
            }
        };
        let codec = Arc::clone(&self.codec);
        let (follower, read) = tokio::task::spawn_blocking(move || {
            let mut follower = follower;
            let mut out = Vec::new();
            let read = follower.read_new(|m| {
                // The loop's own stages wrote them: one that does not decode is a bug to see.
                match m.payload().map(|p| codec.decode(p)) {
                    Some(Ok(a)) => out.push(a),
                    Some(Err(e)) => tracing::error!(offset = m.offset(), error = %e, "undecodable record skipped"),
                    None => tracing::error!(offset = m.offset(), "record without a value skipped"),
                }
            });
            (follower, read.map(|_| out))
        })
        .await?;
        self.follower = Some(follower);
        Ok(read?)
    }
}

/// Counts of audits by result name (`applied`, `refused`, ...).
pub(super) fn by_result(audits: &[Actuation]) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for a in audits {
        *counts.entry(a.result.name()).or_insert(0) += 1;
    }
    counts
}
