//! One sample of the instance the agent runs on, from every source it was given.
//!
//! In: the sampling instant. Out: [`Readings`], the canonical metrics that could be
//! read, in a stable order. Guarantees: a source that cannot be read (a missing file,
//! a kernel without PSI, an endpoint that is down) leaves its metrics out, never zero,
//! and is reported by one warning when it stops working and one note when it works
//! again, never once per tick; rates come from the delta with the previous successful
//! reading, so the first reading of a counter yields no rate.

use std::fmt::Display;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{self, Cgroup, CgroupChoice};
use super::host::Host;
use super::logfile::{LogConfig, LogTail};
use super::prometheus::{PrometheusConfig, Scraper};
use crate::codec::metric_names as m;

/// Where the sampler reads from.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// Whose CPU and memory to report.
    pub cgroup: CgroupChoice,
    /// The application's metrics endpoint, if any.
    pub prometheus: Option<PrometheusConfig>,
    /// The application's log file, if any.
    pub log: Option<LogConfig>,
    /// How long one scrape of the endpoint may take.
    pub scrape_timeout: Duration,
}

/// The metrics of one sample, by canonical name. Reused from tick to tick so sampling
/// does not allocate once it has reached its size.
#[derive(Debug, Default, Clone)]
pub struct Readings(Vec<(&'static str, f64)>);

impl Readings {
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Records one value; a non-finite value (a division by a zero interval, say) is
    /// dropped because the contract refuses NaN and infinities.
    pub(super) fn push(&mut self, name: &'static str, value: f64) {
        if value.is_finite() {
            self.0.push((name, value));
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A source of readings, for reporting its failures once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Stat,
    Meminfo,
    PsiCpu,
    PsiMemory,
    PsiIo,
    NetDev,
    DiskStats,
    CpuMax,
    CpuStat,
    MemoryCurrent,
    MemoryMax,
    MemoryStat,
    Prometheus,
    LogFile,
}

impl Source {
    fn bit(self) -> u32 {
        1 << self as u32
    }

    fn metrics(self) -> &'static str {
        match self {
            Self::Stat | Self::CpuMax | Self::CpuStat => "cpu",
            Self::Meminfo | Self::MemoryCurrent | Self::MemoryMax | Self::MemoryStat => "memory",
            Self::PsiCpu => "cpu pressure",
            Self::PsiMemory => "memory pressure",
            Self::PsiIo => "io pressure",
            Self::NetDev => "network",
            Self::DiskStats => "disk",
            Self::Prometheus => "request rate, error rate, latency",
            Self::LogFile => "log errors",
        }
    }
}

/// Which sources are failing, so each outage is reported once.
#[derive(Debug, Default)]
pub(super) struct Health {
    failing: u32,
    warnings: u32,
}

impl Health {
    pub(super) fn ok(&mut self, source: Source) {
        if self.failing & source.bit() != 0 {
            self.failing &= !source.bit();
            tracing::info!(metrics = source.metrics(), "readable again");
        }
    }

    pub(super) fn failed(&mut self, source: Source, from: &dyn Display, error: &dyn Display) {
        if self.failing & source.bit() == 0 {
            self.failing |= source.bit();
            self.warnings += 1;
            tracing::warn!(metrics = source.metrics(), %from, %error, "cannot read; these metrics are left out until it can");
        }
    }

    pub(super) fn warnings(&self) -> u32 {
        self.warnings
    }
}

/// Reads a whole file into `buf`, replacing what it held.
pub(super) fn read_file(path: &Path, buf: &mut String) -> io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf)?;
    Ok(())
}

/// Reads and parses one file; any failure is reported through `health` and yields `None`.
pub(super) fn read_parsed<T>(
    path: &Path,
    buf: &mut String,
    health: &mut Health,
    source: Source,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    if let Err(error) = read_file(path, buf) {
        health.failed(source, &path.display(), &error);
        return None;
    }
    parsed(path, buf, health, source, parse)
}

/// Like [`read_parsed`], but a file that does not exist is `Some(None)`, not a failure:
/// a cgroup controller that is not enabled has no limit file and sets no limit.
pub(super) fn read_optional<T>(
    path: &Path,
    buf: &mut String,
    health: &mut Health,
    source: Source,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<Option<T>> {
    match read_file(path, buf) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            health.ok(source);
            Some(None)
        }
        Err(error) => {
            health.failed(source, &path.display(), &error);
            None
        }
        Ok(()) => parsed(path, buf, health, source, parse).map(Some),
    }
}

fn parsed<T>(
    path: &Path,
    text: &str,
    health: &mut Health,
    source: Source,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    match parse(text) {
        Some(value) => {
            health.ok(source);
            Some(value)
        }
        None => {
            health.failed(source, &path.display(), &"unexpected format");
            None
        }
    }
}

/// The increase of a counter per second between two readings `seconds` apart.
pub(super) fn per_second(increase: u64, seconds: f64) -> f64 {
    increase as f64 / seconds
}

/// Seconds between two instants, `None` when no time passed (a rate would divide by zero).
pub(super) fn seconds_between(earlier: Instant, later: Instant) -> Option<f64> {
    let s = later.saturating_duration_since(earlier).as_secs_f64();
    (s > 0.0).then_some(s)
}

/// Reads every configured source into one [`Readings`].
pub struct Sampler {
    host: Host,
    cgroup: Option<Cgroup>,
    prometheus: Option<Scraper>,
    log: Option<LogTail>,
    health: Health,
    buf: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("cannot build the HTTP client for --prometheus-url: {0}")]
    Http(#[source] reqwest::Error),
}

impl Sampler {
    /// Resolves the cgroup, opens the log file at its end and prepares the scraper;
    /// nothing is sampled yet.
    pub fn new(config: SamplerConfig) -> Result<Self, SamplerError> {
        let cgroup = cgroup::resolve(&config.cgroup);
        match &cgroup {
            Some(c) => {
                tracing::info!(cgroup = %c.dir().display(), "reporting CPU and memory of the cgroup against its limits")
            }
            None => tracing::info!(proc = %config.proc_root.display(), "reporting CPU and memory of the whole machine"),
        }
        let prometheus = match config.prometheus {
            Some(p) => Some(Scraper::new(p, config.scrape_timeout).map_err(SamplerError::Http)?),
            None => None,
        };
        Ok(Self {
            host: Host::new(&config.proc_root),
            cgroup,
            prometheus,
            log: config.log.map(LogTail::new),
            health: Health::default(),
            buf: String::with_capacity(16 * 1024),
        })
    }

    /// The cgroup whose CPU and memory are reported, if not the whole machine.
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(Cgroup::dir)
    }

    /// Warnings issued so far: one per outage of a source.
    pub fn warnings(&self) -> u32 {
        self.health.warnings()
    }

    /// Reads every source as of `now` into `out` (cleared first).
    pub async fn sample(&mut self, now: Instant, out: &mut Readings) {
        out.clear();
        let (buf, health) = (&mut self.buf, &mut self.health);
        let cpu = self.host.cpu(buf, health);
        let memory = self.host.memory(buf, health);
        match &mut self.cgroup {
            Some(cgroup) => cgroup.sample(now, cpu.map(|c| c.cores), memory, buf, health, out),
            None => {
                if let Some(cpu) = cpu {
                    out.push(m::CPU_LIMIT, f64::from(cpu.cores));
                    if let Some(ratio) = cpu.utilization {
                        out.push(m::CPU_UTILIZATION, ratio);
                    }
                }
                if let Some(mem) = memory {
                    out.push(m::MEMORY_USED, mem.total.saturating_sub(mem.available) as f64);
                    out.push(m::MEMORY_AVAILABLE, mem.available as f64);
                    out.push(m::MEMORY_LIMIT, mem.total as f64);
                }
                self.host.pressure(buf, health, out);
            }
        }
        self.host.network(now, buf, health, out);
        self.host.disks(now, buf, health, out);
        if let Some(log) = &mut self.log {
            log.sample(now, health, out);
        }
        if let Some(scraper) = &mut self.prometheus {
            scraper.sample(now, health, out).await;
        }
    }
}
