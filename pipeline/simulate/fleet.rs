//! The simulated fleet: its instances, their resources, and the clock that steps them.
//!
//! In: a [`FleetConfig`], and optionally [`Change`]s to instances' resources between
//! steps. Out: per step, one [`TelemetrySample`] per instance that is up, in instance
//! order, and the [`GroundTruth`] of every injected failure. The fleet is a pure
//! function of its configuration and the changes applied (and when): no wall clock, no
//! shared random state. Every instance draws from its own ChaCha8 streams keyed by
//! (seed, instance index), so an instance behaves the same in a fleet of any size, and
//! a change alters the physics of its instance but never the random values it draws.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::codec::TelemetrySample;

use super::model::{Model, Traits};
use super::profile::{self, Profile};
use super::scenario::{FailureKind, Load, Scenario, Stress, Window};

/// Largest fleet one simulator runs.
pub const MAX_INSTANCES: usize = 1_000_000;
/// Sampling steps between 1 s (the finest PSI `avg10` is worth sampling) and 1 h.
pub const MIN_INTERVAL_MS: i64 = 1_000;
pub const MAX_INTERVAL_MS: i64 = 3_600_000;
/// A run covers at most a year of event time.
pub const MAX_DURATION_MS: i64 = 366 * 86_400_000;
/// Failures are injected only into runs of at least this many steps: fewer leave no
/// room for a healthy lead-in, a visible development and a tail.
pub const MIN_STEPS_WITH_FAILURES: i64 = 30;
/// 9999-12-31T23:59:59.999Z: beyond it no RFC 3339 tool can show the timestamps.
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// What to simulate. Validation messages name the `augur simulate` flag of each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Number of instances (`--instances`).
    pub instances: usize,
    /// Seed of every random draw (`--seed`).
    pub seed: u64,
    /// Event time of the first sample, epoch ms (`--start`).
    pub start_ms: i64,
    /// Time between two samples of an instance, ms (`--interval`).
    pub interval_ms: i64,
    /// Simulated time covered, ms (`--duration`); samples are at `start + k·interval`
    /// for every `k` with `k·interval < duration`.
    pub duration_ms: i64,
    /// Share of instances that get one injected failure (`--failure-fraction`),
    /// rounded to the nearest whole number of instances.
    pub failure_fraction: f64,
    /// Kinds of failure to inject, in turn (`--kinds`).
    pub kinds: Vec<FailureKind>,
}

/// A [`FleetConfig`] field out of range: `"{flag} {reason}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

fn invalid(flag: &'static str, reason: String) -> Result<(), ConfigError> {
    Err(ConfigError { flag, reason })
}

impl FleetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |v: i64| humantime::format_duration(std::time::Duration::from_millis(v.max(0) as u64));
        if !(1..=MAX_INSTANCES).contains(&self.instances) {
            return invalid("--instances", format!("must be from 1 to {MAX_INSTANCES}, got {}", self.instances));
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return invalid("--interval", format!("must be from 1s to 1h, got {}ms", self.interval_ms));
        }
        if self.duration_ms < self.interval_ms || self.duration_ms > MAX_DURATION_MS {
            return invalid(
                "--duration",
                format!(
                    "must be from one --interval ({}) to 366 days, got {}",
                    ms(self.interval_ms),
                    ms(self.duration_ms)
                ),
            );
        }
        if !(0..=MAX_TIMESTAMP_MS - self.duration_ms).contains(&self.start_ms) {
            return invalid("--start", format!("puts the run outside 1970..9999, got {} ms", self.start_ms));
        }
        if !(0.0..=1.0).contains(&self.failure_fraction) {
            return invalid("--failure-fraction", format!("must be from 0 to 1, got {}", self.failure_fraction));
        }
        if self.failures() > 0 {
            if self.kinds.is_empty() {
                return invalid("--kinds", "must name at least one failure kind".to_owned());
            }
            let min = MIN_STEPS_WITH_FAILURES * self.interval_ms;
            if self.duration_ms < min {
                return invalid(
                    "--duration",
                    format!(
                        "{} is too short to inject failures: it needs {MIN_STEPS_WITH_FAILURES} intervals ({}); \
                         lengthen it or pass --failure-fraction 0",
                        ms(self.duration_ms),
                        ms(min)
                    ),
                );
            }
        }
        Ok(())
    }

    /// Number of steps of the run.
    pub fn steps(&self) -> i64 {
        (self.duration_ms + self.interval_ms - 1) / self.interval_ms
    }

    /// Number of instances that get a failure.
    pub fn failures(&self) -> usize {
        (self.failure_fraction * self.instances as f64).round() as usize
    }
}

/// The resources of one instance, which actuations change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU the instance may use; demand above it queues.
    pub cpu_limit_cores: f64,
    /// Memory the instance may use; reaching it is an OOM kill.
    pub memory_limit_bytes: f64,
    /// Replicas sharing the instance's traffic, itself included (the others are not
    /// simulated): the instance serves `1 / replicas` of it.
    pub replicas: u32,
    /// Share of the instance's traffic rejected before it reaches the instance.
    pub shed_fraction: f64,
    /// Share of its non-critical work (background CPU and IO, compactions) moved to
    /// other nodes.
    pub migrated_fraction: f64,
}

impl Resources {
    fn nominal(profile: &Profile) -> Self {
        Self {
            cpu_limit_cores: profile.cpu_limit_cores,
            memory_limit_bytes: profile.memory_limit_bytes,
            replicas: 1,
            shed_fraction: 0.0,
            migrated_fraction: 0.0,
        }
    }

    /// Share of the service's traffic this instance serves.
    pub fn traffic_share(&self) -> f64 {
        (1.0 - self.shed_fraction) / f64::from(self.replicas)
    }
}

/// A change to one instance's resources, as the actuator applies it. Effective from
/// the next step; it survives crashes (it is the deployment's, not the process's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Multiplies the CPU and memory limits in place (a vertical resize). Limits stay
    /// within 0.1..256 cores and 64 MiB..4 TiB.
    Resize { cpu_factor: f64, memory_factor: f64 },
    /// Adds (negative: removes) replicas that share the traffic; at least 1, at most 1,000.
    ScaleOut { replicas_delta: i32 },
    /// Sets the share of traffic rejected upstream, 0..1; at most 0.95 takes effect, so
    /// the service keeps serving.
    Shed { fraction: f64 },
    /// Sets the share of non-critical work moved to other nodes, 0..1.
    Migrate { fraction: f64 },
}

const MIN_CPU_CORES: f64 = 0.1;
const MAX_CPU_CORES: f64 = 256.0;
const MIN_MEMORY_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
const MAX_MEMORY_BYTES: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0;
const MAX_REPLICAS: i64 = 1_000;
const MAX_SHED: f64 = 0.95;

/// Why [`Fleet::apply`] refused a change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("no simulated instance {0:?}")]
    UnknownInstance(String),
    #[error("{change:?} is not applicable: {reason}")]
    Invalid { change: Change, reason: &'static str },
}

/// One injected failure. `failure_ms` is `None` (JSON `null`) while the failure has not
/// happened: it is still developing at the end of the run, or a change averted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Instance id, as in the samples' `instance_id`.
    pub instance: String,
    pub kind: FailureKind,
    /// Event time the failure starts to develop, epoch ms.
    pub onset_ms: i64,
    /// Event time of the first sample on which the failure condition holds, epoch ms;
    /// the instance then crashes and reports nothing for 1–3 minutes.
    pub failure_ms: Option<i64>,
    /// Event time the failure was planned for: when the instance fails if nothing
    /// changes its resources, epoch ms. A failure due after the run's end is not
    /// expected within it.
    pub expected_failure_ms: i64,
    /// Application type and function of the instance, as in its samples.
    pub app_type: String,
    pub function: String,
}

/// One simulated instance.
#[derive(Debug, Clone)]
pub struct Instance {
    id: String,
    profile: &'static Profile,
    labels: BTreeMap<String, String>,
    resources: Resources,
    model: Model,
    scenario: Option<Scenario>,
    seq: i64,
    /// Down (crashed, restarting) until this event time.
    down_until: Option<i64>,
}

impl Instance {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn app_type(&self) -> &'static str {
        self.profile.app_type
    }
    pub fn function(&self) -> &'static str {
        self.profile.function
    }
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    pub fn resources(&self) -> &Resources {
        &self.resources
    }
    /// Client timeout of its function, seconds: the latency failure conditions use it.
    pub fn timeout_s(&self) -> f64 {
        self.profile.timeout_s
    }
    /// Kind of the failure injected into it, if any.
    pub fn injected(&self) -> Option<FailureKind> {
        self.scenario.as_ref().map(|s| s.kind)
    }
}

/// Random streams of one instance.
const TRAITS_STREAM: u64 = 0;
const NOISE_STREAM: u64 = 1;
const EVENT_STREAM: u64 = 2;
const PLAN_STREAM: u64 = 3;
/// The "instance index" of fleet-wide draws (who fails, with what).
const FLEET_INDEX: u64 = u64::MAX;

fn rng(seed: u64, index: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(b"augursim");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// The simulated fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    instances: Vec<Instance>,
    by_id: HashMap<String, usize>,
    ground_truth: Vec<GroundTruth>,
    /// Index into `ground_truth` of each instance's failure.
    truth_of: Vec<Option<usize>>,
    step: i64,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let window =
            Window { start_ms: config.start_ms, interval_ms: config.interval_ms, duration_ms: config.duration_ms };
        let failing = Self::draw_failures(&config);
        let zones = ["a", "b", "c"];
        let mut instances = Vec::with_capacity(config.instances);
        let mut ground_truth = Vec::with_capacity(failing.len());
        let mut truth_of = vec![None; config.instances];
        let mut failing = failing.into_iter().peekable();
        for index in 0..config.instances {
            let (profile, id) = profile::assign(index);
            let key = index as u64;
            let mut traits_rng = rng(config.seed, key, TRAITS_STREAM);
            let traits = Traits::draw(&mut traits_rng);
            let zone = zones[index % zones.len()];
            let node = format!("node-{zone}{:02}", traits_rng.random_range(1..=12));
            let labels = BTreeMap::from([("zone".to_owned(), format!("zone-{zone}")), ("node".to_owned(), node)]);
            let model =
                Model::new(profile, traits, rng(config.seed, key, NOISE_STREAM), rng(config.seed, key, EVENT_STREAM));
            let scenario = match failing.next_if(|(i, _)| *i == index) {
                Some((_, kind)) => {
                    let s = Scenario::plan(kind, window, &mut rng(config.seed, key, PLAN_STREAM));
                    truth_of[index] = Some(ground_truth.len());
                    ground_truth.push(GroundTruth {
                        instance: id.clone(),
                        kind,
                        onset_ms: s.onset_ms,
                        failure_ms: None,
                        expected_failure_ms: s.expected_failure_ms(),
                        app_type: profile.app_type.to_owned(),
                        function: profile.function.to_owned(),
                    });
                    Some(s)
                }
                None => None,
            };
            instances.push(Instance {
                id,
                profile,
                labels,
                resources: Resources::nominal(profile),
                model,
                scenario,
                seq: 0,
                down_until: None,
            });
        }
        let by_id = instances.iter().enumerate().map(|(i, inst)| (inst.id.clone(), i)).collect();
        Ok(Self { config, instances, by_id, ground_truth, truth_of, step: 0 })
    }

    /// Which instances fail and how: the kinds are dealt in turn, from a seeded
    /// starting point, to a seeded choice of instances (ascending).
    fn draw_failures(config: &FleetConfig) -> Vec<(usize, FailureKind)> {
        let count = config.failures();
        if count == 0 {
            return Vec::new();
        }
        let mut kinds = config.kinds.clone();
        kinds.sort();
        kinds.dedup();
        let mut rng = rng(config.seed, FLEET_INDEX, 0);
        let mut chosen = rand::seq::index::sample(&mut rng, config.instances, count).into_vec();
        chosen.sort_unstable();
        let first = rng.random_range(0..kinds.len());
        chosen.into_iter().enumerate().map(|(n, i)| (i, kinds[(first + n) % kinds.len()])).collect()
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.by_id.get(id).map(|&i| &self.instances[i])
    }

    /// Event time of the next step, `None` once the run is over.
    pub fn next_timestamp_ms(&self) -> Option<i64> {
        (self.step < self.config.steps()).then(|| self.config.start_ms + self.step * self.config.interval_ms)
    }

    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        self.step as u64
    }

    /// The injected failures, in instance order; `failure_ms` fills in as they happen.
    pub fn ground_truth(&self) -> &[GroundTruth] {
        &self.ground_truth
    }

    /// Changes the resources of `instance` from the next step on; returns them as they
    /// now are. Out-of-range results are clamped to the documented bounds; invalid
    /// inputs (non-finite or non-positive factors, fractions outside 0..1) are refused.
    pub fn apply(&mut self, instance: &str, change: Change) -> Result<Resources, ApplyError> {
        let &index = self.by_id.get(instance).ok_or_else(|| ApplyError::UnknownInstance(instance.to_owned()))?;
        let refuse = |reason| Err(ApplyError::Invalid { change, reason });
        let r = &mut self.instances[index].resources;
        match change {
            Change::Resize { cpu_factor, memory_factor } => {
                let ok = |f: f64| f.is_finite() && f > 0.0;
                if !ok(cpu_factor) || !ok(memory_factor) {
                    return refuse("factors must be finite and positive");
                }
                r.cpu_limit_cores = (r.cpu_limit_cores * cpu_factor).clamp(MIN_CPU_CORES, MAX_CPU_CORES);
                r.memory_limit_bytes =
                    (r.memory_limit_bytes * memory_factor).round().clamp(MIN_MEMORY_BYTES, MAX_MEMORY_BYTES);
            }
            Change::ScaleOut { replicas_delta } => {
                r.replicas = (i64::from(r.replicas) + i64::from(replicas_delta)).clamp(1, MAX_REPLICAS) as u32;
            }
            Change::Shed { fraction } | Change::Migrate { fraction } if !(0.0..=1.0).contains(&fraction) => {
                return refuse("fraction must be from 0 to 1");
            }
            Change::Shed { fraction } => r.shed_fraction = fraction.min(MAX_SHED),
            Change::Migrate { fraction } => r.migrated_fraction = fraction,
        }
        Ok(*r)
    }

    /// All samples of the next step, in instance order (instances that are down are
    /// absent); `None` once the run is over.
    pub fn tick(&mut self) -> Option<Vec<TelemetrySample>> {
        let t = self.next_timestamp_ms()?;
        let dt_s = self.config.interval_ms as f64 / 1000.0;
        let mut samples = Vec::with_capacity(self.instances.len());
        for (index, inst) in self.instances.iter_mut().enumerate() {
            let up = match inst.down_until {
                Some(until) if t < until => false,
                Some(_) => {
                    inst.down_until = None;
                    inst.model.restart();
                    true
                }
                None => true,
            };
            let (stress, developing) = match &mut inst.scenario {
                Some(s) if up && s.active(t) => {
                    // Calibrated against the nominal resources: the cause (a leak rate,
                    // a surge) is the application's; what resources it has decides how
                    // soon it fails.
                    let at = s.expected_failure_ms();
                    let (model, nominal) = (&inst.model, Resources::nominal(inst.profile));
                    let load = Load::relative(&inst.resources, &nominal);
                    (s.stress(t, dt_s, load, || model.baseline(at, &nominal)), true)
                }
                _ => (Stress::NONE, false),
            };
            let Some(reading) = inst.model.step(t, dt_s, &inst.resources, &stress, up, !developing) else {
                continue;
            };
            let sample = TelemetrySample {
                instance_id: inst.id.clone(),
                app_type: inst.profile.app_type.to_owned(),
                function: inst.profile.function.to_owned(),
                seq: inst.seq,
                timestamp_ms: t,
                metrics: reading.metrics(),
                labels: inst.labels.clone(),
            };
            inst.seq += 1;
            if let Some(s) = inst.scenario.as_mut().filter(|_| developing) {
                if s.kind.holds(&sample, inst.profile.timeout_s) {
                    s.failed_ms = Some(t);
                    // The sample that shows the failure is the last before the crash.
                    inst.down_until = Some(t + s.restart_gap_ms);
                    if let Some(truth) = self.truth_of[index] {
                        self.ground_truth[truth].failure_ms = Some(t);
                    }
                    tracing::debug!(instance = %inst.id, kind = %s.kind, t, "simulated failure");
                }
            }
            samples.push(sample);
        }
        self.step += 1;
        Some(samples)
    }
}
