//! CPU, memory and pressure of a cgroup v2 (a container, a pod, a systemd unit),
//! measured against its own limits rather than the machine's.
//!
//! In: the cgroup's directory (`cpu.max`, `cpu.stat`, `cpuset.cpus.effective`,
//! `memory.current`, `memory.max`, `memory.stat`, `*.pressure`), and the machine's CPU
//! count and memory for limits of `max`. Out: the canonical CPU, memory and PSI
//! metrics. Guarantees as for the host: an unreadable file leaves its metrics out and
//! is reported once; a limit file that does not exist means no limit (its controller
//! is not enabled), not a failure. Limits are re-read every tick, so an in-place
//! resize shows at once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::host::{pressure, MemInfo, PsiFiles};
use super::sampler::{read_optional, read_parsed, seconds_between, Health, Readings, Source};
use crate::codec::metric_names as m;

/// Whose CPU and memory the agent reports (`--cgroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupChoice {
    /// The cgroup mounted at this root if it has a CPU or memory limit (a container),
    /// the whole machine otherwise.
    Auto(PathBuf),
    /// The whole machine.
    Host,
    /// This cgroup v2 directory.
    Dir(PathBuf),
}

/// Where cgroup v2 is mounted; inside a container with its own cgroup namespace this
/// is the container's cgroup.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Parses `--cgroup auto|host|DIR`; a directory must be a cgroup v2 directory.
pub fn parse_choice(s: &str) -> Result<CgroupChoice, String> {
    match s {
        "auto" => Ok(CgroupChoice::Auto(PathBuf::from(DEFAULT_CGROUP_ROOT))),
        "host" => Ok(CgroupChoice::Host),
        dir => {
            let dir = PathBuf::from(dir);
            if dir.join("cpu.stat").is_file() || dir.join("memory.current").is_file() {
                Ok(CgroupChoice::Dir(dir))
            } else {
                Err(format!("{} is not a cgroup v2 directory (no cpu.stat or memory.current)", dir.display()))
            }
        }
    }
}

/// The cgroup to report, or `None` for the whole machine.
pub(super) fn resolve(choice: &CgroupChoice) -> Option<Cgroup> {
    match choice {
        CgroupChoice::Host => None,
        CgroupChoice::Dir(dir) => Some(Cgroup::new(dir)),
        // Only the mount root is considered: the agent's own cgroup below it (a
        // systemd service, say) would report the agent's limits, not the instance's.
        CgroupChoice::Auto(root) => has_limit(root).then(|| Cgroup::new(root)),
    }
}

fn has_limit(dir: &Path) -> bool {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let cpu = read("cpu.max").and_then(|t| parse_cpu_max(&t)).flatten().is_some();
    let memory = read("memory.max").and_then(|t| parse_max(&t)).flatten().is_some();
    cpu || memory
}

pub(super) struct Cgroup {
    dir: PathBuf,
    cpu_max: PathBuf,
    cpu_stat: PathBuf,
    cpuset: PathBuf,
    memory_current: PathBuf,
    memory_max: PathBuf,
    memory_stat: PathBuf,
    psi: PsiFiles,
    /// The previous `usage_usec` and when it was read.
    usage_prev: Option<(Instant, u64)>,
}

impl Cgroup {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            cpu_max: dir.join("cpu.max"),
            cpu_stat: dir.join("cpu.stat"),
            cpuset: dir.join("cpuset.cpus.effective"),
            memory_current: dir.join("memory.current"),
            memory_max: dir.join("memory.max"),
            memory_stat: dir.join("memory.stat"),
            psi: PsiFiles {
                cpu: dir.join("cpu.pressure"),
                memory: dir.join("memory.pressure"),
                io: dir.join("io.pressure"),
            },
            usage_prev: None,
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn sample(
        &mut self,
        now: Instant,
        host_cores: Option<u32>,
        host_memory: Option<MemInfo>,
        buf: &mut String,
        health: &mut Health,
        out: &mut Readings,
    ) {
        self.cpu(now, host_cores, buf, health, out);
        self.memory(host_memory, buf, health, out);
        pressure(&self.psi, buf, health, out);
    }

    fn cpu(
        &mut self,
        now: Instant,
        host_cores: Option<u32>,
        buf: &mut String,
        health: &mut Health,
        out: &mut Readings,
    ) {
        let quota = read_optional(&self.cpu_max, buf, health, Source::CpuMax, parse_cpu_max).map(Option::flatten);
        // A cpuset narrower than the machine limits the cgroup as much as a quota does.
        let cpuset = std::fs::read_to_string(&self.cpuset).ok().and_then(|t| count_cpus(&t));
        let limit = quota.map(|quota| {
            [quota, cpuset.map(f64::from), host_cores.map(f64::from)].into_iter().flatten().reduce(f64::min)
        });
        let usage = read_parsed(&self.cpu_stat, buf, health, Source::CpuStat, parse_usage_usec);
        let (Some(Some(limit)), Some(usage)) = (limit, usage) else { return };
        out.push(m::CPU_LIMIT, limit);
        if let Some((then, before)) = self.usage_prev {
            if let Some(seconds) = seconds_between(then, now) {
                let used_cores = usage.saturating_sub(before) as f64 / 1e6 / seconds;
                // Quota is enforced per period, so a sample may overshoot the limit by
                // a hair; the contract's ratio is 0..1.
                out.push(m::CPU_UTILIZATION, (used_cores / limit).min(1.0));
            }
        }
        self.usage_prev = Some((now, usage));
    }

    fn memory(&mut self, host: Option<MemInfo>, buf: &mut String, health: &mut Health, out: &mut Readings) {
        let Some(current) = read_parsed(&self.memory_current, buf, health, Source::MemoryCurrent, parse_u64) else {
            return;
        };
        // The working set, as the kubelet counts it: page cache not recently used is
        // reclaimed before the OOM killer acts, so it is not "used".
        let inactive_file = read_optional(&self.memory_stat, buf, health, Source::MemoryStat, parse_inactive_file)
            .flatten()
            .unwrap_or(0);
        let used = current.saturating_sub(inactive_file);
        out.push(m::MEMORY_USED, used as f64);
        let max = read_optional(&self.memory_max, buf, health, Source::MemoryMax, parse_max).map(Option::flatten);
        let limit = match (max, host) {
            (None, _) => return,
            (Some(Some(max)), Some(host)) => max.min(host.total),
            (Some(Some(max)), None) => max,
            (Some(None), Some(host)) => host.total,
            (Some(None), None) => return,
        };
        // The machine may run out before the cgroup reaches its limit.
        let available = limit.saturating_sub(used).min(host.map_or(u64::MAX, |h| h.available));
        out.push(m::MEMORY_AVAILABLE, available as f64);
        out.push(m::MEMORY_LIMIT, limit as f64);
    }
}

/// `cpu.max` (`$QUOTA $PERIOD`) as cores; `Some(None)` for `max` (no quota).
pub(super) fn parse_cpu_max(text: &str) -> Option<Option<f64>> {
    let mut fields = text.split_ascii_whitespace();
    let quota = fields.next()?;
    let period: f64 = fields.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" {
        return Some(None);
    }
    let quota: f64 = quota.parse().ok()?;
    (period > 0.0).then_some(Some(quota / period))
}

/// A limit file holding a number of bytes, or `max`.
pub(super) fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

pub(super) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `usage_usec` of `cpu.stat`.
pub(super) fn parse_usage_usec(text: &str) -> Option<u64> {
    stat_field(text, "usage_usec")
}

/// `inactive_file` of `memory.stat`.
pub(super) fn parse_inactive_file(text: &str) -> Option<u64> {
    stat_field(text, "inactive_file")
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The number of CPUs in a list such as `0-3,8,10-11`.
pub(super) fn count_cpus(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for range in list.trim().split(',').filter(|r| !r.is_empty()) {
        n += match range.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => range.parse::<u32>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn limit_files_parse() {
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(Some(0.5)));
        assert_eq!(parse_cpu_max("250000 100000"), Some(Some(2.5)));
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cpu_max("50000 0"), None);
        assert_eq!(parse_max("max\n"), Some(None));
        assert_eq!(parse_max("536870912\n"), Some(Some(536_870_912)));
        assert_eq!(parse_max("lots"), None);
        assert_eq!(count_cpus("0-3,8,10-11\n"), Some(7));
        assert_eq!(count_cpus("5"), Some(1));
        assert_eq!(count_cpus("\n"), None);
        assert_eq!(count_cpus("3-1"), None);
    }

    #[test]
    fn stat_fields_match_whole_keys() {
        let stat = "usage_usec_extra 1\nusage_usec 1500000\nuser_usec 1000000\n";
        assert_eq!(parse_usage_usec(stat), Some(1_500_000));
        let mem = "active_file 10\ninactive_file 4096\ninactive_anon 7\n";
        assert_eq!(parse_inactive_file(mem), Some(4096));
        assert_eq!(parse_inactive_file("anon 1\n"), None);
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Self { dir: tempfile::tempdir().unwrap() }
        }
        fn write(&self, file: &str, text: &str) -> &Self {
            std::fs::write(self.dir.path().join(file), text).unwrap();
            self
        }
    }

    const HOST_MEMORY: MemInfo = MemInfo { total: 16 << 30, available: 8 << 30 };

    #[test]
    fn cpu_and_memory_are_measured_against_the_limits() {
        let f = Fixture::new();
        f.write("cpu.max", "50000 100000\n")
            .write("cpu.stat", "usage_usec 10000000\nuser_usec 9000000\n")
            .write("memory.current", "300000000\n")
            .write("memory.max", "536870912\n")
            .write("memory.stat", "anon 200000000\ninactive_file 100000000\n")
            .write(
                "cpu.pressure",
                "some avg10=12.50 avg60=1.00 avg300=0.00 total=1\nfull avg10=2.00 avg60=0 avg300=0 total=1\n",
            )
            .write(
                "memory.pressure",
                "some avg10=1.00 avg60=0 avg300=0 total=1\nfull avg10=0.50 avg60=0 avg300=0 total=1\n",
            )
            .write(
                "io.pressure",
                "some avg10=0.00 avg60=0 avg300=0 total=1\nfull avg10=0.00 avg60=0 avg300=0 total=1\n",
            );
        assert!(has_limit(f.dir.path()));
        let mut cg = resolve(&CgroupChoice::Auto(f.dir.path().to_owned())).expect("a limit: the cgroup is reported");
        let (mut buf, mut health, mut out) = (String::new(), Health::default(), Readings::default());
        let t0 = Instant::now();

        cg.sample(t0, Some(8), Some(HOST_MEMORY), &mut buf, &mut health, &mut out);
        assert_eq!(out.get(m::CPU_LIMIT), Some(0.5));
        assert_eq!(out.get(m::CPU_UTILIZATION), None, "no rate from one reading");
        assert_eq!(out.get(m::MEMORY_USED), Some(200_000_000.0), "current minus inactive file cache");
        assert_eq!(out.get(m::MEMORY_LIMIT), Some(536_870_912.0));
        assert_eq!(out.get(m::MEMORY_AVAILABLE), Some(336_870_912.0));
        assert_eq!(out.get(m::PSI_CPU_SOME), Some(0.125));
        assert_eq!(out.get(m::PSI_MEMORY_FULL), Some(0.005));

        // 0.25 s of CPU in 1 s under a half-core quota: half the limit.
        f.write("cpu.stat", "usage_usec 10250000\n");
        out.clear();
        cg.sample(t0 + Duration::from_secs(1), Some(8), Some(HOST_MEMORY), &mut buf, &mut health, &mut out);
        assert_eq!(out.get(m::CPU_UTILIZATION), Some(0.5));
        assert_eq!(health.warnings(), 0);
    }

    #[test]
    fn unlimited_cgroup_uses_the_machine_and_auto_falls_back_to_host() {
        let f = Fixture::new();
        f.write("cpu.max", "max 100000\n").write("cpu.stat", "usage_usec 0\n").write("memory.max", "max\n");
        assert!(resolve(&CgroupChoice::Auto(f.dir.path().to_owned())).is_none(), "no limit: report the host");
        assert!(resolve(&CgroupChoice::Host).is_none());

        f.write("memory.current", "1000\n").write("cpuset.cpus.effective", "0-1\n");
        let mut cg = resolve(&CgroupChoice::Dir(f.dir.path().to_owned())).unwrap();
        let (mut buf, mut health, mut out) = (String::new(), Health::default(), Readings::default());
        let t0 = Instant::now();
        cg.sample(t0, Some(8), Some(HOST_MEMORY), &mut buf, &mut health, &mut out);
        assert_eq!(out.get(m::CPU_LIMIT), Some(2.0), "the cpuset allows two of eight CPUs");
        assert_eq!(out.get(m::MEMORY_LIMIT), Some(HOST_MEMORY.total as f64));
        assert_eq!(out.get(m::MEMORY_USED), Some(1000.0), "no memory.stat: nothing to subtract");
        assert_eq!(out.get(m::MEMORY_AVAILABLE), Some(HOST_MEMORY.available as f64), "the machine runs out first");
        // No PSI files in this cgroup: warned once each, not on every tick.
        assert_eq!(out.get(m::PSI_CPU_SOME), None);
        let first = health.warnings();
        assert_eq!(first, 3, "one warning per missing PSI file");

        f.write("cpu.stat", "usage_usec 4000000\n");
        out.clear();
        cg.sample(t0 + Duration::from_secs(2), Some(8), Some(HOST_MEMORY), &mut buf, &mut health, &mut out);
        assert_eq!(out.get(m::CPU_UTILIZATION), Some(1.0), "4 s of CPU in 2 s on 2 CPUs");
        assert_eq!(health.warnings(), first, "no new warnings for the same missing files");
    }

    #[test]
    fn explicit_directory_must_be_a_cgroup() {
        let f = Fixture::new();
        assert!(parse_choice(f.dir.path().to_str().unwrap()).unwrap_err().contains("not a cgroup v2 directory"));
        f.write("cpu.stat", "usage_usec 1\n");
        assert_eq!(parse_choice(f.dir.path().to_str().unwrap()), Ok(CgroupChoice::Dir(f.dir.path().to_owned())));
        assert_eq!(parse_choice("host"), Ok(CgroupChoice::Host));
        assert_eq!(parse_choice("auto"), Ok(CgroupChoice::Auto(PathBuf::from(DEFAULT_CGROUP_ROOT))));
    }
}
