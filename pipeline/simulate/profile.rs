//! The application types of the simulated fleet and the nominal resource profile of
//! each function: how much traffic it sees, what a request costs, how it is sized.
//!
//! Every profile is sized the way a capacity planner would: at the diurnal peak a
//! typical instance uses [`PEAK_UTILISATION`] of its CPU limit and about three
//! quarters of its memory limit, so benign spikes are visible but never fail it.

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * KIB;
const GIB: f64 = 1024.0 * MIB;

/// Share of the CPU limit a typical instance uses at the diurnal peak; headroom that
/// keeps the worst benign burst (×1.5 on a busy instance) below saturation.
pub(crate) const PEAK_UTILISATION: f64 = 0.42;

/// Nominal behaviour of one function of one application type.
#[derive(Debug)]
pub(crate) struct Profile {
    pub app_type: &'static str,
    pub function: &'static str,
    /// Requests (queries, operations, jobs, messages) per second at the diurnal peak.
    pub peak_rps: f64,
    /// Hour of day (UTC) of the traffic peak.
    pub peak_hour_utc: f64,
    /// Depth of the diurnal trough: the quietest hour sees `1 - amplitude` of the peak.
    pub diurnal_amplitude: f64,
    pub cpu_limit_cores: f64,
    /// Share of the CPU limit busy with no traffic (housekeeping, replication, timers).
    pub background_cpu_share: f64,
    /// p99 latency of an unloaded instance, seconds.
    pub service_s: f64,
    /// Client timeout, seconds: a p99 above it means requests are failing.
    pub timeout_s: f64,
    pub memory_limit_bytes: f64,
    /// Resident memory of an idle instance (heap, buffer pool, dataset).
    pub memory_base_bytes: f64,
    /// Working set per request/s of traffic (sessions, buffers, caches).
    pub memory_per_rps_bytes: f64,
    /// Memory held by each request in flight.
    pub memory_per_inflight_bytes: f64,
    /// Concurrency limit (worker threads, connection pool).
    pub max_inflight: f64,
    pub receive_per_request_bytes: f64,
    pub transmit_per_request_bytes: f64,
    pub disk_read_per_request_bytes: f64,
    pub disk_write_per_request_bytes: f64,
    /// Write-ahead log, replication apply, log files: written whatever the traffic.
    pub background_disk_write_bytes: f64,
    /// Throughput at which the volume is fully busy.
    pub disk_bandwidth_bytes: f64,
    /// Errors per request of a healthy instance.
    pub base_error_ratio: f64,
    pub log_lines_per_error: f64,
    /// A garbage-collected runtime: memory saw-tooth and stop-the-world pauses.
    pub garbage_collected: bool,
    /// Runs compactions (vacuum, index merges, AOF rewrites) that load the disk.
    pub compacts: bool,
}

impl Profile {
    /// CPU core-seconds per request, so that a typical instance at peak uses
    /// [`PEAK_UTILISATION`] of its limit.
    pub fn cpu_per_request(&self) -> f64 {
        (PEAK_UTILISATION - self.background_cpu_share) * self.cpu_limit_cores / self.peak_rps
    }
}

pub(crate) const WEB_CHECKOUT: Profile = Profile {
    app_type: "web",
    function: "checkout",
    peak_rps: 120.0,
    peak_hour_utc: 14.0,
    diurnal_amplitude: 0.6,
    cpu_limit_cores: 2.0,
    background_cpu_share: 0.05,
    service_s: 0.25,
    timeout_s: 3.0,
    memory_limit_bytes: 1.5 * GIB,
    memory_base_bytes: 600.0 * MIB,
    memory_per_rps_bytes: 2.0 * MIB,
    memory_per_inflight_bytes: 64.0 * KIB,
    max_inflight: 256.0,
    receive_per_request_bytes: 3.0 * KIB,
    transmit_per_request_bytes: 15.0 * KIB,
    disk_read_per_request_bytes: 0.0,
    disk_write_per_request_bytes: 1.5 * KIB,
    background_disk_write_bytes: 50.0 * KIB,
    disk_bandwidth_bytes: 100.0 * MIB,
    base_error_ratio: 0.003,
    log_lines_per_error: 2.0,
    garbage_collected: true,
    compacts: false,
};

pub(crate) const WEB_SEARCH: Profile = Profile {
    app_type: "web",
    function: "search",
    peak_rps: 300.0,
    peak_hour_utc: 14.0,
    diurnal_amplitude: 0.6,
    cpu_limit_cores: 4.0,
    background_cpu_share: 0.05,
    service_s: 0.12,
    timeout_s: 2.0,
    memory_limit_bytes: 3.0 * GIB,
    memory_base_bytes: 1.2 * GIB,
    memory_per_rps_bytes: 1.0 * MIB,
    memory_per_inflight_bytes: 64.0 * KIB,
    max_inflight: 256.0,
    receive_per_request_bytes: 1.0 * KIB,
    transmit_per_request_bytes: 25.0 * KIB,
    disk_read_per_request_bytes: 40.0 * KIB,
    disk_write_per_request_bytes: 0.5 * KIB,
    background_disk_write_bytes: 100.0 * KIB,
    disk_bandwidth_bytes: 200.0 * MIB,
    base_error_ratio: 0.002,
    log_lines_per_error: 2.0,
    garbage_collected: true,
    compacts: true,
};

pub(crate) const WEB_FRONTEND: Profile = Profile {
    app_type: "web",
    function: "frontend",
    peak_rps: 500.0,
    peak_hour_utc: 15.0,
    diurnal_amplitude: 0.65,
    cpu_limit_cores: 2.0,
    background_cpu_share: 0.05,
    service_s: 0.08,
    timeout_s: 2.0,
    memory_limit_bytes: 1.0 * GIB,
    memory_base_bytes: 300.0 * MIB,
    memory_per_rps_bytes: 0.4 * MIB,
    memory_per_inflight_bytes: 32.0 * KIB,
    max_inflight: 512.0,
    receive_per_request_bytes: 2.0 * KIB,
    transmit_per_request_bytes: 60.0 * KIB,
    disk_read_per_request_bytes: 0.0,
    disk_write_per_request_bytes: 0.3 * KIB,
    background_disk_write_bytes: 20.0 * KIB,
    disk_bandwidth_bytes: 100.0 * MIB,
    base_error_ratio: 0.004,
    log_lines_per_error: 1.0,
    garbage_collected: false,
    compacts: false,
};

pub(crate) const DATABASE_PRIMARY: Profile = Profile {
    app_type: "database",
    function: "primary",
    peak_rps: 800.0,
    peak_hour_utc: 14.0,
    diurnal_amplitude: 0.45,
    cpu_limit_cores: 8.0,
    background_cpu_share: 0.06,
    service_s: 0.03,
    timeout_s: 1.0,
    memory_limit_bytes: 16.0 * GIB,
    memory_base_bytes: 8.0 * GIB,
    memory_per_rps_bytes: 2.0 * MIB,
    memory_per_inflight_bytes: 1.0 * MIB,
    max_inflight: 200.0,
    receive_per_request_bytes: 2.0 * KIB,
    transmit_per_request_bytes: 8.0 * KIB,
    disk_read_per_request_bytes: 8.0 * KIB,
    disk_write_per_request_bytes: 6.0 * KIB,
    background_disk_write_bytes: 1.0 * MIB,
    disk_bandwidth_bytes: 250.0 * MIB,
    base_error_ratio: 0.0005,
    log_lines_per_error: 1.0,
    garbage_collected: false,
    compacts: true,
};

pub(crate) const DATABASE_REPLICA: Profile = Profile {
    app_type: "database",
    function: "replica",
    peak_rps: 1200.0,
    peak_hour_utc: 14.0,
    diurnal_amplitude: 0.45,
    cpu_limit_cores: 6.0,
    background_cpu_share: 0.06,
    service_s: 0.02,
    timeout_s: 1.0,
    memory_limit_bytes: 16.0 * GIB,
    memory_base_bytes: 8.0 * GIB,
    memory_per_rps_bytes: 1.0 * MIB,
    memory_per_inflight_bytes: 1.0 * MIB,
    max_inflight: 200.0,
    receive_per_request_bytes: 1.0 * KIB,
    transmit_per_request_bytes: 10.0 * KIB,
    disk_read_per_request_bytes: 6.0 * KIB,
    disk_write_per_request_bytes: 1.0 * KIB,
    background_disk_write_bytes: 2.0 * MIB,
    disk_bandwidth_bytes: 250.0 * MIB,
    base_error_ratio: 0.0005,
    log_lines_per_error: 1.0,
    garbage_collected: false,
    compacts: true,
};

pub(crate) const CACHE_SESSION: Profile = Profile {
    app_type: "cache",
    function: "session",
    peak_rps: 4000.0,
    peak_hour_utc: 14.0,
    diurnal_amplitude: 0.6,
    cpu_limit_cores: 1.0,
    background_cpu_share: 0.04,
    service_s: 0.004,
    timeout_s: 0.25,
    memory_limit_bytes: 4.0 * GIB,
    memory_base_bytes: 2.0 * GIB,
    memory_per_rps_bytes: 0.1 * MIB,
    memory_per_inflight_bytes: 4.0 * KIB,
    max_inflight: 1024.0,
    receive_per_request_bytes: 0.5 * KIB,
    transmit_per_request_bytes: 2.0 * KIB,
    disk_read_per_request_bytes: 0.0,
    disk_write_per_request_bytes: 0.2 * KIB,
    background_disk_write_bytes: 0.0,
    disk_bandwidth_bytes: 100.0 * MIB,
    base_error_ratio: 0.0002,
    log_lines_per_error: 1.0,
    garbage_collected: false,
    compacts: true,
};

pub(crate) const WORKER_BATCH: Profile = Profile {
    app_type: "worker",
    function: "batch",
    peak_rps: 12.0,
    // Batch work is scheduled at night, against the traffic.
    peak_hour_utc: 2.0,
    diurnal_amplitude: 0.5,
    cpu_limit_cores: 4.0,
    background_cpu_share: 0.05,
    service_s: 8.0,
    timeout_s: 120.0,
    memory_limit_bytes: 6.0 * GIB,
    memory_base_bytes: 1.5 * GIB,
    memory_per_rps_bytes: 100.0 * MIB,
    memory_per_inflight_bytes: 16.0 * MIB,
    max_inflight: 32.0,
    receive_per_request_bytes: 500.0 * KIB,
    transmit_per_request_bytes: 100.0 * KIB,
    disk_read_per_request_bytes: 2.0 * MIB,
    disk_write_per_request_bytes: 1.0 * MIB,
    background_disk_write_bytes: 100.0 * KIB,
    disk_bandwidth_bytes: 200.0 * MIB,
    base_error_ratio: 0.002,
    log_lines_per_error: 3.0,
    garbage_collected: true,
    compacts: false,
};

pub(crate) const WORKER_INGEST: Profile = Profile {
    app_type: "worker",
    function: "ingest",
    peak_rps: 400.0,
    peak_hour_utc: 14.0,
    diurnal_amplitude: 0.55,
    cpu_limit_cores: 2.0,
    background_cpu_share: 0.05,
    service_s: 0.5,
    timeout_s: 10.0,
    memory_limit_bytes: 2.0 * GIB,
    memory_base_bytes: 700.0 * MIB,
    memory_per_rps_bytes: 1.0 * MIB,
    memory_per_inflight_bytes: 64.0 * KIB,
    max_inflight: 256.0,
    receive_per_request_bytes: 8.0 * KIB,
    transmit_per_request_bytes: 1.0 * KIB,
    disk_read_per_request_bytes: 0.0,
    disk_write_per_request_bytes: 10.0 * KIB,
    background_disk_write_bytes: 200.0 * KIB,
    disk_bandwidth_bytes: 150.0 * MIB,
    base_error_ratio: 0.001,
    log_lines_per_error: 1.5,
    garbage_collected: true,
    compacts: false,
};

/// The fleet's mix: instance `i` runs `MIX[i % MIX.len()]`, so a fleet of any size
/// has mostly web instances, and every profile appears once the fleet has ten.
pub(crate) const MIX: [&Profile; 10] = [
    &WEB_FRONTEND,
    &WEB_CHECKOUT,
    &DATABASE_PRIMARY,
    &CACHE_SESSION,
    &WORKER_INGEST,
    &WEB_SEARCH,
    &WEB_FRONTEND,
    &DATABASE_REPLICA,
    &WORKER_BATCH,
    &WEB_CHECKOUT,
];

/// Profile and instance id of instance `index`: `<app>-<function>-<ordinal>`, where the
/// ordinal counts the earlier instances of the same profile. Ids do not depend on the
/// fleet size, so instance 3 is the same instance in a fleet of 5 and of 5,000.
pub(crate) fn assign(index: usize) -> (&'static Profile, String) {
    let profile = MIX[index % MIX.len()];
    let per_round = MIX.iter().filter(|p| std::ptr::eq(**p, profile)).count();
    let in_round = MIX[..index % MIX.len()].iter().filter(|p| std::ptr::eq(**p, profile)).count();
    let ordinal = index / MIX.len() * per_round + in_round;
    (profile, format!("{}-{}-{ordinal:04}", profile.app_type, profile.function))
}

/// CPU (millicores) and memory (bytes) limits a simulated instance starts with, from its
/// id `<app>-<function>-<ordinal>`; `None` for an id the simulator would not make.
pub fn nominal_limits(instance_id: &str) -> Option<(u64, u64)> {
    let (prefix, ordinal) = instance_id.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let profile = MIX.iter().find(|p| prefix == format!("{}-{}", p.app_type, p.function))?;
    Some(((profile.cpu_limit_cores * 1000.0).round() as u64, profile.memory_limit_bytes.round() as u64))
}
