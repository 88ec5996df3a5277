//! The resource model of one instance: from offered traffic, its resources and the
//! stress of a developing failure to one reading of every canonical metric.
//!
//! Load follows a 24-hour sinusoid with per-instance scale, smooth noise and benign
//! events (traffic bursts, GC pauses, deploys, compactions). CPU demand is traffic
//! times cost per request plus background work; latency grows like a queue as
//! utilisation approaches 1 and, past it, by the backlog that piles up; errors follow
//! requests that exceed the timeout; memory is base + working set + requests in
//! flight (+ a leak), clamped at the limit; PSI follows contention on CPU, memory and
//! disk. Every step draws the same number of random values from its own streams
//! whatever happens, so changing resources changes the physics, never the dice.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::codec::metric_names as m;
use crate::codec::Metric;

use super::fleet::Resources;
use super::profile::Profile;
use super::scenario::{Baseline, Stress};

/// Fixed traits of one instance, drawn once: no two instances look alike.
#[derive(Debug, Clone)]
pub(crate) struct Traits {
    pub load_scale: f64,
    pub memory_scale: f64,
    pub latency_scale: f64,
    pub error_scale: f64,
    /// Shift of the diurnal peak, hours.
    pub phase_h: f64,
    /// Seconds between collections of a garbage-collected heap.
    pub gc_period_s: f64,
}

impl Traits {
    pub fn draw(rng: &mut impl Rng) -> Self {
        Self {
            load_scale: rng.random_range(0.8..1.1),
            memory_scale: rng.random_range(0.9..1.1),
            latency_scale: rng.random_range(0.85..1.2),
            error_scale: rng.random_range(0.5..1.5),
            phase_h: rng.random_range(-0.5..0.5),
            gc_period_s: rng.random_range(120.0..400.0),
        }
    }
}

/// A benign event in progress.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// More traffic for a while (a campaign, a crawler, a retrying client).
    Burst { factor: f64, left_s: f64 },
    /// A compaction (vacuum, index merge, AOF rewrite) loading the disk.
    Compaction { share: f64, left_s: f64 },
}

/// Mean time between benign events of one instance, seconds.
const BURST_EVERY_S: f64 = 90.0 * 60.0;
const GC_PAUSE_EVERY_S: f64 = 20.0 * 60.0;
const DEPLOY_EVERY_S: f64 = 8.0 * 3600.0;
const COMPACTION_EVERY_S: f64 = 3.0 * 3600.0;
/// How long a freshly started process runs cold (JIT, caches, connection pools).
const WARMUP_S: f64 = 180.0;
/// Queueing latency stops growing here; past it the backlog takes over.
const MAX_QUEUE_UTILISATION: f64 = 0.97;

/// Random values of one step, always drawn in full.
struct Draws {
    normal: [f64; 12],
    event_start: f64,
    event_kind: f64,
    event_length: f64,
    event_size: f64,
}

/// The dynamic state of one instance's application.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    profile: &'static Profile,
    traits: Traits,
    noise_rng: ChaCha8Rng,
    event_rng: ChaCha8Rng,
    /// Smooth relative deviation of the traffic (AR(1)).
    load_noise: f64,
    /// Position in the GC cycle, 0..1.
    sawtooth: f64,
    /// Seconds of work queued beyond what the CPU can serve.
    backlog_s: f64,
    event: Option<Event>,
    warmup_left_s: f64,
}

/// One reading, in the canonical units.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reading {
    pub cpu_utilization: f64,
    pub cpu_limit: f64,
    pub memory_used: f64,
    pub memory_limit: f64,
    pub psi_cpu_some: f64,
    pub psi_memory_some: f64,
    pub psi_memory_full: f64,
    pub psi_io_some: f64,
    pub psi_io_full: f64,
    pub network_receive: f64,
    pub network_transmit: f64,
    pub network_errors: f64,
    pub disk_read: f64,
    pub disk_write: f64,
    pub disk_busy: f64,
    pub request_rate: f64,
    pub error_rate: f64,
    pub latency_p99: f64,
    pub log_errors: f64,
}

impl Reading {
    /// Every canonical metric, in [`m::ALL`] order.
    pub fn metrics(&self) -> Vec<Metric> {
        let values = [
            (m::CPU_UTILIZATION, self.cpu_utilization),
            (m::CPU_LIMIT, self.cpu_limit),
            (m::MEMORY_USED, self.memory_used),
            (m::MEMORY_AVAILABLE, self.memory_limit - self.memory_used),
            (m::MEMORY_LIMIT, self.memory_limit),
            (m::PSI_CPU_SOME, self.psi_cpu_some),
            (m::PSI_MEMORY_SOME, self.psi_memory_some),
            (m::PSI_MEMORY_FULL, self.psi_memory_full),
            (m::PSI_IO_SOME, self.psi_io_some),
            (m::PSI_IO_FULL, self.psi_io_full),
            (m::NETWORK_RECEIVE, self.network_receive),
            (m::NETWORK_TRANSMIT, self.network_transmit),
            (m::NETWORK_ERRORS, self.network_errors),
            (m::DISK_READ, self.disk_read),
            (m::DISK_WRITE, self.disk_write),
            (m::DISK_BUSY, self.disk_busy),
            (m::REQUEST_RATE, self.request_rate),
            (m::ERROR_RATE, self.error_rate),
            (m::LATENCY_P99, self.latency_p99),
            (m::LOG_ERRORS, self.log_errors),
        ];
        values.iter().map(|&(name, value)| Metric::new(name, value)).collect()
    }
}

impl Model {
    pub fn new(profile: &'static Profile, traits: Traits, noise_rng: ChaCha8Rng, event_rng: ChaCha8Rng) -> Self {
        Self {
            profile,
            traits,
            noise_rng,
            event_rng,
            load_noise: 0.0,
            sawtooth: 0.0,
            backlog_s: 0.0,
            event: None,
            warmup_left_s: 0.0,
        }
    }

    /// The process starts again (after a crash or a deploy): empty heap, empty queue,
    /// cold caches.
    pub fn restart(&mut self) {
        self.sawtooth = 0.0;
        self.backlog_s = 0.0;
        self.event = None;
        self.warmup_left_s = WARMUP_S;
    }

    /// Diurnal traffic factor at `t_ms`, 1 at the peak hour.
    fn diurnal(&self, t_ms: i64) -> f64 {
        let hour = t_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
        let angle = (hour - self.profile.peak_hour_utc - self.traits.phase_h) * std::f64::consts::TAU / 24.0;
        1.0 - self.profile.diurnal_amplitude * (1.0 - angle.cos()) / 2.0
    }

    /// Requests per second reaching this instance without noise or events.
    fn expected_rate(&self, t_ms: i64, res: &Resources) -> f64 {
        self.profile.peak_rps * self.traits.load_scale * self.diurnal(t_ms) * res.traffic_share()
    }

    fn background_cpu(&self, res: &Resources) -> f64 {
        let p = self.profile;
        p.background_cpu_share * p.cpu_limit_cores * (1.0 - 0.8 * res.migrated_fraction)
    }

    fn base_memory(&self) -> f64 {
        self.profile.memory_base_bytes * self.traits.memory_scale
    }

    /// The instance's expected state at `t_ms`, for calibrating a scenario.
    pub fn baseline(&self, t_ms: i64, res: &Resources) -> Baseline {
        let p = self.profile;
        let rate = self.expected_rate(t_ms, res);
        let inflight = (rate * p.service_s * self.traits.latency_scale).min(p.max_inflight);
        Baseline {
            memory_used_bytes: self.base_memory()
                + p.memory_per_rps_bytes * rate
                + p.memory_per_inflight_bytes * inflight,
            memory_limit_bytes: res.memory_limit_bytes,
            request_cpu_cores: p.cpu_per_request() * rate,
            background_cpu_cores: self.background_cpu(res),
            cpu_limit_cores: res.cpu_limit_cores,
            timeout_s: p.timeout_s,
        }
    }

    fn draw(&mut self) -> Draws {
        let mut normal = [0.0; 12];
        for n in &mut normal {
            *n = self.noise_rng.sample::<f64, _>(StandardNormal).clamp(-4.0, 4.0);
        }
        Draws {
            normal,
            event_start: self.event_rng.random(),
            event_kind: self.event_rng.random(),
            event_length: self.event_rng.random(),
            event_size: self.event_rng.random(),
        }
    }

    /// Starts, continues and ends benign events; returns this step's traffic factor,
    /// compaction share of the disk bandwidth, and GC pause (s).
    fn benign_events(&mut self, d: &Draws, dt_s: f64, res: &Resources, allow_deploy: bool) -> (f64, f64, f64) {
        let p = self.profile;
        let mut gc_pause_s = 0.0;
        if self.event.is_none() && self.warmup_left_s <= 0.0 {
            let rates = [
                1.0 / BURST_EVERY_S,
                if p.garbage_collected { 1.0 / GC_PAUSE_EVERY_S } else { 0.0 },
                if allow_deploy { 1.0 / DEPLOY_EVERY_S } else { 0.0 },
                if p.compacts { 1.0 / COMPACTION_EVERY_S } else { 0.0 },
            ];
            let total: f64 = rates.iter().sum();
            // Poisson arrivals: at most one event starts per step, whatever its length.
            if d.event_start < 1.0 - (-total * dt_s).exp() {
                let mut pick = d.event_kind * total;
                let kind = rates.iter().position(|r| {
                    pick -= r;
                    pick < 0.0
                });
                match kind.unwrap_or(0) {
                    0 => {
                        let (factor, left_s) = (1.25 + 0.25 * d.event_size, 60.0 + 240.0 * d.event_length);
                        self.event = Some(Event::Burst { factor, left_s });
                    }
                    1 => {
                        gc_pause_s = p.service_s * (1.5 + 2.5 * d.event_size);
                        self.sawtooth = 0.0;
                    }
                    2 => self.restart(),
                    _ => {
                        let (share, left_s) = (0.15 + 0.2 * d.event_size, 600.0 + 1200.0 * d.event_length);
                        self.event = Some(Event::Compaction { share, left_s });
                    }
                }
            }
        }
        let (burst, compaction, left_s) = match &mut self.event {
            Some(Event::Burst { factor, left_s }) => (*factor, 0.0, left_s),
            Some(Event::Compaction { share, left_s }) => (1.0, *share * (1.0 - res.migrated_fraction), left_s),
            None => return (1.0, 0.0, gc_pause_s),
        };
        *left_s -= dt_s;
        if *left_s <= 0.0 {
            self.event = None;
        }
        (burst, compaction, gc_pause_s)
    }

    /// Advances the instance by one step ending at `t_ms`. Returns `None` when the
    /// instance is down (`up == false`): the dice are still thrown, so the streams stay
    /// aligned with a run in which it was up. Deploys only happen when `allow_deploy`
    /// (a deploy restarts the process and would cure a developing failure).
    pub fn step(
        &mut self,
        t_ms: i64,
        dt_s: f64,
        res: &Resources,
        stress: &Stress,
        up: bool,
        allow_deploy: bool,
    ) -> Option<Reading> {
        let d = self.draw();
        if !up {
            return None;
        }
        let p = self.profile;
        let n = d.normal;

        let (burst, compaction, gc_pause_s) = self.benign_events(&d, dt_s, res, allow_deploy);
        let warm = (self.warmup_left_s / WARMUP_S).clamp(0.0, 1.0);
        self.warmup_left_s = (self.warmup_left_s - dt_s).max(0.0);

        // Traffic. Clients retry failed requests, so an error burst brings more of them.
        self.load_noise = (0.85 * self.load_noise + 0.03 * n[0]).clamp(-0.12, 0.12);
        let offered = self.expected_rate(t_ms, res)
            * (1.0 + self.load_noise)
            * burst
            * stress.load_factor
            * (1.0 + 0.5 * stress.error_ratio);

        // Memory pressure feeds back into CPU and latency (GC thrash, reclaim).
        let leak_fill = (self.base_memory() + stress.leaked_bytes) / res.memory_limit_bytes;
        let thrash = ((leak_fill - 0.85) / 0.15).clamp(0.0, 1.0) * if p.garbage_collected { 1.0 } else { 0.4 };

        // CPU and the queue in front of it.
        let request_cpu = p.cpu_per_request() * offered * (1.0 + 0.3 * warm) * (1.0 + 1.5 * thrash);
        let gc_cpu = if gc_pause_s > 0.0 { 0.1 * res.cpu_limit_cores } else { 0.0 };
        // A compaction keeps about a quarter core per core of limit busy at full share.
        let demand = request_cpu + self.background_cpu(res) + 0.25 * compaction * p.cpu_limit_cores + gc_cpu;
        let rho = demand / res.cpu_limit_cores;
        self.backlog_s = (self.backlog_s + (rho - 1.0) * dt_s).clamp(0.0, 10.0 * p.timeout_s);
        let served = if rho > 1.0 { offered / rho } else { offered };

        // Disk.
        let io_demand = p.disk_read_per_request_bytes * served
            + p.disk_write_per_request_bytes * served
            + p.background_disk_write_bytes * (1.0 - 0.8 * res.migrated_fraction)
            + 2.0 * compaction * p.disk_bandwidth_bytes;
        let util = io_demand / p.disk_bandwidth_bytes;
        let stall = stress.io_stall.max(0.0);
        let disk_busy = (util + (1.0 - util) * stall.min(1.0)).clamp(0.0, 1.0);
        let throughput = 1.0 - 0.7 * stall.min(1.0);
        let read = (p.disk_read_per_request_bytes * served + compaction * p.disk_bandwidth_bytes) * throughput;
        let write =
            (io_demand - p.disk_read_per_request_bytes * served - compaction * p.disk_bandwidth_bytes) * throughput;

        // Latency: queueing, backlog, disk waits, the wait downstream, pauses.
        let q = rho.min(MAX_QUEUE_UTILISATION);
        let latency = p.service_s
            * self.traits.latency_scale
            * (1.0 + 0.6 * q / (1.0 - q))
            * (1.0 + 0.6 * warm)
            * (1.0 + 2.0 * thrash)
            * (1.0 + 0.5 * disk_busy * disk_busy + 8.0 * stall.min(1.5).powi(2))
            * (1.0 + 0.02 * n[1]).max(0.5)
            + self.backlog_s
            + stress.dependency_delay_s
            + gc_pause_s;

        // Errors: the fault's own, timeouts, cold starts.
        let timeouts = ((latency / p.timeout_s - 0.6) / 0.8).clamp(0.0, 1.0).powi(2) * 0.5;
        let base_errors = p.base_error_ratio * self.traits.error_scale * (1.0 + 0.2 * n[2]).max(0.0);
        let error_rate = (base_errors + 0.01 * warm + timeouts + stress.error_ratio).clamp(0.0, 1.0);

        // Memory.
        let inflight = (served * latency).min(p.max_inflight);
        if p.garbage_collected {
            self.sawtooth += dt_s / self.traits.gc_period_s;
            if self.sawtooth >= 1.0 {
                self.sawtooth = self.sawtooth.fract();
            }
        }
        let used_raw = self.base_memory() * (1.0 + 0.08 * self.sawtooth + 0.003 * n[3])
            + p.memory_per_rps_bytes * served
            + p.memory_per_inflight_bytes * inflight
            + stress.leaked_bytes;
        let fill = used_raw / res.memory_limit_bytes;
        let memory_used = used_raw.clamp(0.0, res.memory_limit_bytes).round();
        let psi_memory_some = ((fill - 0.8) / 0.2).clamp(0.0, 1.0).powi(2) * 0.6;
        let psi_memory_full = psi_memory_some * ((fill - 0.9) / 0.1).clamp(0.0, 1.0) * 0.6;

        // Pressure stall on CPU and IO.
        let psi_cpu_some = 0.01 + 0.3 * rho.min(2.0).powi(3);
        let psi_io_some = 0.4 * disk_busy.powi(3) + 0.5 * stall.min(1.0);
        let psi_io_full = 0.1 * psi_io_some + 0.6 * stall.min(1.5).powf(1.5);

        // Network: failed requests answer with short error pages.
        let receive = p.receive_per_request_bytes * served * (1.0 + 0.02 * n[4]);
        let transmit = p.transmit_per_request_bytes * served * (1.0 - 0.8 * error_rate) * (1.0 + 0.02 * n[5]);
        let network_errors = served * (2e-6 * n[6].abs() + 0.01 * error_rate);
        let log_errors = served * error_rate * p.log_lines_per_error + 0.02 * n[7].abs() + 0.5 * warm;

        let jitter = |x: f64, k: usize| (x + 0.004 * n[k].abs()).clamp(0.0, 1.0);
        Some(Reading {
            cpu_utilization: (rho * (1.0 + 0.02 * n[8])).clamp(0.0, 1.0),
            cpu_limit: res.cpu_limit_cores,
            memory_used,
            memory_limit: res.memory_limit_bytes,
            psi_cpu_some: jitter(psi_cpu_some, 9),
            psi_memory_some: jitter(psi_memory_some, 10),
            psi_memory_full: psi_memory_full.clamp(0.0, 1.0),
            psi_io_some: jitter(psi_io_some, 11),
            psi_io_full: psi_io_full.clamp(0.0, 1.0),
            network_receive: receive.max(0.0),
            network_transmit: transmit.max(0.0),
            network_errors,
            disk_read: read.max(0.0),
            disk_write: write.max(0.0),
            disk_busy,
            request_rate: served,
            error_rate,
            latency_p99: latency,
            log_errors,
        })
    }
}
