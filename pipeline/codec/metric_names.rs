//! Canonical metric names of the telemetry contract. Agents, the simulator, signatures
//! and models all speak these names; the unit is the suffix.

/// Share 0..1 of the CPU the instance may use (its limit, or all cores of the host).
pub const CPU_UTILIZATION: &str = "cpu_utilization_ratio";
/// CPU the instance may use, in cores (the cgroup limit, or the host's core count).
pub const CPU_LIMIT: &str = "cpu_limit_cores";
pub const MEMORY_USED: &str = "memory_used_bytes";
pub const MEMORY_AVAILABLE: &str = "memory_available_bytes";
/// Memory the instance may use (cgroup limit or host total).
pub const MEMORY_LIMIT: &str = "memory_limit_bytes";
/// Pressure stall information, `avg10` as a ratio 0..1 (`/proc/pressure/*`).
pub const PSI_CPU_SOME: &str = "psi_cpu_some_ratio";
pub const PSI_MEMORY_SOME: &str = "psi_memory_some_ratio";
pub const PSI_MEMORY_FULL: &str = "psi_memory_full_ratio";
pub const PSI_IO_SOME: &str = "psi_io_some_ratio";
pub const PSI_IO_FULL: &str = "psi_io_full_ratio";
pub const NETWORK_RECEIVE: &str = "network_receive_bytes_per_second";
pub const NETWORK_TRANSMIT: &str = "network_transmit_bytes_per_second";
pub const NETWORK_ERRORS: &str = "network_errors_per_second";
pub const DISK_READ: &str = "disk_read_bytes_per_second";
pub const DISK_WRITE: &str = "disk_write_bytes_per_second";
/// Share 0..1 of wall time some disk was busy.
pub const DISK_BUSY: &str = "disk_busy_ratio";
pub const REQUEST_RATE: &str = "request_rate_per_second";
/// Errors per request, 0..1.
pub const ERROR_RATE: &str = "error_rate_ratio";
pub const LATENCY_P99: &str = "latency_p99_seconds";
/// Log lines matching the error pattern, per second (the seed's "log anomalies").
pub const LOG_ERRORS: &str = "log_error_lines_per_second";

/// Every canonical name, in a stable order.
pub const ALL: &[&str] = &[
    CPU_UTILIZATION,
    CPU_LIMIT,
    MEMORY_USED,
    MEMORY_AVAILABLE,
    MEMORY_LIMIT,
    PSI_CPU_SOME,
    PSI_MEMORY_SOME,
    PSI_MEMORY_FULL,
    PSI_IO_SOME,
    PSI_IO_FULL,
    NETWORK_RECEIVE,
    NETWORK_TRANSMIT,
    NETWORK_ERRORS,
    DISK_READ,
    DISK_WRITE,
    DISK_BUSY,
    REQUEST_RATE,
    ERROR_RATE,
    LATENCY_P99,
    LOG_ERRORS,
];
