//! Failure scenarios: what goes wrong in an instance, how it develops from its onset,
//! and the condition on the telemetry that says it has failed.
//!
//! A scenario never writes its failure time down in advance. It pushes one physical
//! cause (leaked bytes, a traffic surge, contention downstream, capacity lost to a
//! fault, IO contention) harder as time passes, calibrated so that the untouched
//! instance reaches its failure condition about `develop` after the onset; the failure
//! is the first sample on which [`FailureKind::holds`] is true. Actuations that change
//! the instance's resources therefore delay or avert the failure the way they would in
//! a real fleet. How each cause meets the resources ([`Load`]: the instance's traffic
//! and traffic per core, relative to the untouched instance):
//!
//! - a leak is bytes per second of the process: more memory buys time;
//! - a surge is traffic (the model turns it into CPU demand and queueing): replicas,
//!   shedding and CPU relieve it, and it levels off, so enough of them outlast it;
//! - latency creep is contention on a downstream resource that requests hold while
//!   they compute (a connection pool, a lock): the wait grows with how many requests
//!   compete and how long each holds it, so in proportion to the load per core; it
//!   stops growing at the planned failure time, where it is 1.2× the timeout for the
//!   untouched instance, so a load per core below about three quarters holds it off
//!   for good and less relief only for a while;
//! - an error burst is a fault taking up to 61 % of the capacity away (a thread pool
//!   stuck on a failing call): requests beyond what is left fail, so shedding, replicas
//!   and CPU, which lower the load per core, fail fewer; the untouched instance fails
//!   when half of them do, before the loss levels off, and a load per core below about
//!   three quarters keeps it under half for good;
//! - an IO stall is contention on the node: migrating non-critical IO relieves it.
//!
//! For the untouched instance every relief factor is exactly 1 and the causes level
//! off only past the point where it has failed, so its telemetry is, bit for bit, what
//! it was before resources mattered to creep and bursts (the starter signatures and the
//! shipped models were cut from it): always up to its failure, and at the failing sample
//! too unless a step is longer than a twelfth of the development.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::codec::metric_names as m;
use crate::codec::TelemetrySample;

use super::fleet::Resources;

/// What goes wrong in an instance with an injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum FailureKind {
    /// Memory grows at a steady rate until used reaches the limit: OOM kill.
    MemoryLeak,
    /// A load surge until the CPU saturates and p99 latency passes the timeout.
    CpuSaturation,
    /// Contention on a downstream resource (a connection pool, a lock): latency creeps
    /// up to the timeout.
    LatencyCreep,
    /// A fault takes capacity away and requests start failing until half of them do:
    /// the instance is taken out.
    ErrorBurst,
    /// IO contention until all tasks stall on the disk half of the time.
    IoStall,
}

impl FailureKind {
    /// Every kind, in the order of the names on the command line.
    pub const ALL: [FailureKind; 5] =
        [Self::MemoryLeak, Self::CpuSaturation, Self::LatencyCreep, Self::ErrorBurst, Self::IoStall];

    /// The snake_case name used on the command line and in the ground truth.
    pub const fn name(self) -> &'static str {
        match self {
            Self::MemoryLeak => "memory_leak",
            Self::CpuSaturation => "cpu_saturation",
            Self::LatencyCreep => "latency_creep",
            Self::ErrorBurst => "error_burst",
            Self::IoStall => "io_stall",
        }
    }

    /// Nominal time from onset to failure in a long run (leaks are slow, bursts fast);
    /// shorter runs scale it down so the failure still fits.
    pub const fn development(self) -> (Duration, Duration) {
        const MIN: u64 = 60;
        let (lo, hi) = match self {
            Self::MemoryLeak => (20 * MIN, 60 * MIN),
            Self::CpuSaturation => (5 * MIN, 20 * MIN),
            Self::LatencyCreep => (10 * MIN, 40 * MIN),
            Self::ErrorBurst => (2 * MIN, 6 * MIN),
            Self::IoStall => (5 * MIN, 20 * MIN),
        };
        (Duration::from_secs(lo), Duration::from_secs(hi))
    }

    /// The failure condition on one sample of an instance whose client timeout is
    /// `timeout_s`:
    /// - `memory_leak`: memory used has reached the limit;
    /// - `cpu_saturation`: CPU at least 90 % busy and p99 latency at or above the timeout;
    /// - `latency_creep`: p99 latency at or above the timeout;
    /// - `error_burst`: at least half of the requests fail;
    /// - `io_stall`: `psi_io_full` at or above 0.5 (every task stalled on IO half the time).
    pub fn holds(self, sample: &TelemetrySample, timeout_s: f64) -> bool {
        let get = |name| sample.metric(name).unwrap_or(f64::NAN);
        match self {
            Self::MemoryLeak => get(m::MEMORY_USED) >= get(m::MEMORY_LIMIT),
            Self::CpuSaturation => get(m::CPU_UTILIZATION) >= 0.9 && get(m::LATENCY_P99) >= timeout_s,
            Self::LatencyCreep => get(m::LATENCY_P99) >= timeout_s,
            Self::ErrorBurst => get(m::ERROR_RATE) >= 0.5,
            Self::IoStall => get(m::PSI_IO_FULL) >= 0.5,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a developing failure does to its instance in one step; the neutral value
/// changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stress {
    /// Multiplies the offered traffic.
    pub load_factor: f64,
    /// Leaked memory, bytes.
    pub leaked_bytes: f64,
    /// Time every request waits downstream (a contended pool or lock), seconds.
    pub dependency_delay_s: f64,
    /// Share of requests failing from the fault itself.
    pub error_ratio: f64,
    /// IO contention, 0 (none) to 1 (the device barely completes anything) and beyond.
    pub io_stall: f64,
}

impl Stress {
    pub const NONE: Stress =
        Stress { load_factor: 1.0, leaked_bytes: 0.0, dependency_delay_s: 0.0, error_ratio: 0.0, io_stall: 0.0 };
}

/// The load on an instance relative to the untouched instance at the same moment,
/// which the causes that depend on resources scale with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Load {
    /// Traffic per core of CPU limit: 1 untouched (exactly), less with replicas sharing
    /// the traffic, shedding or more CPU.
    pub per_cpu: f64,
    /// Share of the non-critical work moved to other nodes.
    pub migrated: f64,
}

impl Load {
    /// The load of an instance with `res` whose untouched self has `nominal`.
    pub fn relative(res: &Resources, nominal: &Resources) -> Self {
        let share = res.traffic_share() / nominal.traffic_share();
        Self { per_cpu: share * nominal.cpu_limit_cores / res.cpu_limit_cores, migrated: res.migrated_fraction }
    }
}

/// The instance's expected state (no noise, no benign events) at the time the failure
/// should happen, which a scenario calibrates against when it starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Baseline {
    pub memory_used_bytes: f64,
    pub memory_limit_bytes: f64,
    pub request_cpu_cores: f64,
    pub background_cpu_cores: f64,
    pub cpu_limit_cores: f64,
    pub timeout_s: f64,
}

/// Where in the run failures may develop, in event time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start_ms: i64,
    pub interval_ms: i64,
    pub duration_ms: i64,
}

/// Share of the development time a failure may overrun its nominal time and still
/// happen before the end of the run (plus the tail margin).
const OVERRUN: f64 = 1.2;

/// Development (share of the nominal time) at which a latency creep's contention stops
/// growing, and an error burst's loss of capacity (at 61 %). The untouched instance has
/// failed by then, at about 0.91 and 0.82 at the latest, so these caps never reach it
/// before its failing sample, nor that sample while a step is at most a twelfth of the
/// development (a 10 s step against the shortest burst, 2 min).
const CREEP_LEVELS_OFF: f64 = 1.0;
const BURST_LEVELS_OFF: f64 = 0.9;

/// One injected failure as it develops in its instance.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub kind: FailureKind,
    pub onset_ms: i64,
    pub develop_ms: i64,
    /// How long the instance stays down after it failed.
    pub restart_gap_ms: i64,
    pub failed_ms: Option<i64>,
    /// Set on the first step at or after the onset.
    calibration: Option<f64>,
    leaked_bytes: f64,
}

impl Scenario {
    /// Draws onset, development time and restart gap so that the failure fits in the
    /// window: a healthy lead-in first (so detectors learn the normal), then the
    /// development, then a tail margin.
    pub fn plan(kind: FailureKind, window: Window, rng: &mut impl Rng) -> Self {
        let (lead_ms, tail_ms) = margins(window);
        let room_ms = (window.duration_ms - lead_ms - tail_ms).max(window.interval_ms) as f64;
        let (lo, hi) = kind.development();
        let (lo, hi) = (lo.as_millis() as f64, hi.as_millis() as f64);
        // Scale the whole range down, so bursts stay faster than leaks in a short run.
        let scale = (0.75 * room_ms / hi).min(1.0);
        let develop_ms = (rng.random_range(lo..=hi) * scale).max(2.0 * window.interval_ms as f64);
        let latest_onset = (room_ms - OVERRUN * develop_ms).max(0.0);
        let onset_offset = rng.random_range(0.0..=latest_onset);
        // Onsets fall on sample times, so "before the onset" is a whole number of samples.
        let steps = ((lead_ms as f64 + onset_offset) / window.interval_ms as f64).ceil() as i64;
        let restart_gap_ms = rng.random_range(60_000..=180_000);
        Self {
            kind,
            onset_ms: window.start_ms + steps * window.interval_ms,
            develop_ms: develop_ms.round() as i64,
            restart_gap_ms,
            failed_ms: None,
            calibration: None,
            leaked_bytes: 0.0,
        }
    }

    /// Event time at which the untouched instance is expected to fail.
    pub fn expected_failure_ms(&self) -> i64 {
        self.onset_ms + self.develop_ms
    }

    /// Whether the failure is developing at `t_ms`.
    pub fn active(&self, t_ms: i64) -> bool {
        self.failed_ms.is_none() && t_ms >= self.onset_ms
    }

    /// The stress at `t_ms` on an instance under `load`; `baseline` is consulted once,
    /// on the first active step.
    pub fn stress(&mut self, t_ms: i64, dt_s: f64, load: Load, baseline: impl FnOnce() -> Baseline) -> Stress {
        if !self.active(t_ms) {
            return Stress::NONE;
        }
        let develop_s = self.develop_ms as f64 / 1000.0;
        let calibration = *self.calibration.get_or_insert_with(|| calibrate(self.kind, &baseline(), develop_s));
        // Past the nominal time a leak and IO contention keep growing, so those failures
        // happen unless something changed; a surge, contention downstream and a loss of
        // capacity level off. The cap only keeps the arithmetic finite.
        let p = ((t_ms - self.onset_ms) as f64 / self.develop_ms as f64).clamp(0.0, 4.0);
        let mut stress = Stress::NONE;
        match self.kind {
            FailureKind::MemoryLeak => {
                // A leak is bytes per second of the process, whatever its limit: raising
                // the limit buys time, restarting clears it.
                if t_ms > self.onset_ms {
                    self.leaked_bytes += calibration * dt_s;
                }
                stress.leaked_bytes = self.leaked_bytes;
            }
            // A surge levels off (at about 1.4–1.8× the CPU limit of the untouched
            // instance): enough capacity outlasts it, a little more only delays.
            FailureKind::CpuSaturation => stress.load_factor = 1.0 + calibration * p.min(1.3).powf(1.5),
            // Contention downstream: the wait is in proportion to the load per core.
            FailureKind::LatencyCreep => {
                let p = p.min(CREEP_LEVELS_OFF);
                stress.dependency_delay_s = calibration * p * p * load.per_cpu;
            }
            // Capacity lost: the untouched instance fails `lost` of its requests; one
            // with load per core L can serve (1 - lost) / L of its own and fails the
            // rest, written so that L = 1 gives `lost` exactly.
            FailureKind::ErrorBurst => {
                let p = p.min(BURST_LEVELS_OFF);
                let lost = 0.75 * p * p;
                stress.error_ratio = (lost - (1.0 - lost) * (1.0 / load.per_cpu - 1.0)).clamp(0.0, 0.95);
            }
            // Contention on the node: moving non-critical IO away relieves it.
            FailureKind::IoStall => stress.io_stall = p.powf(1.5) * (1.0 - load.migrated).clamp(0.0, 1.0),
        }
        stress
    }
}

/// The one number each kind needs from the instance's expected state: leak rate
/// (bytes/s), surge amplitude (×load), or the untouched instance's wait downstream at
/// the nominal time (s).
fn calibrate(kind: FailureKind, b: &Baseline, develop_s: f64) -> f64 {
    match kind {
        FailureKind::MemoryLeak => (b.memory_limit_bytes - b.memory_used_bytes).max(0.0) / develop_s,
        FailureKind::CpuSaturation => {
            // Demand 20 % above the limit at the nominal time.
            let target = 1.2 * b.cpu_limit_cores - b.background_cpu_cores;
            (target / b.request_cpu_cores.max(1e-9) - 1.0).max(0.5)
        }
        FailureKind::LatencyCreep => 1.2 * b.timeout_s,
        FailureKind::ErrorBurst | FailureKind::IoStall => 0.0,
    }
}

/// Healthy lead-in and tail margin of a run: 15 % of it each, at most 15 and 10
/// minutes, at least three samples.
pub(crate) fn margins(window: Window) -> (i64, i64) {
    let share = window.duration_ms * 15 / 100;
    let lead = share.min(15 * 60_000).max(3 * window.interval_ms);
    let tail = share.min(10 * 60_000).max(3 * window.interval_ms);
    (lead, tail)
}
