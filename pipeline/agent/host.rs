//! Readings of the whole machine from procfs: CPU time, memory, pressure stall
//! information (PSI), network and disk counters.
//!
//! In: text files under a proc root (`/proc`, the host's /proc mounted elsewhere, or
//! fixtures). Out: canonical metrics; counters become rates from the delta with the
//! previous successful reading, so the first reading yields none. Guarantees: a file
//! that cannot be read or parsed leaves its metrics out and is reported once; odd
//! input never panics.
//!
//! Why not the procfs crate: it can read from any root (`FromRead::from_file`), but
//! its parsers allocate a `String` per line and a map per file on every tick, parse
//! all of /proc/stat (whose `intr` line runs to tens of KiB on large hosts) where the
//! first lines suffice, insist on lines we do not need, and give PSI averages as
//! `f32`. These files are a few fields of stable kernel ABI each; parsing them from
//! one reused buffer keeps a tick free of allocations.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::sampler::{per_second, read_parsed, seconds_between, Health, Readings, Source};
use crate::codec::metric_names as m;

/// CPU time of the whole machine, in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// What /proc/stat says about CPU this tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct HostCpu {
    /// CPUs online.
    pub cores: u32,
    /// Share of all CPUs busy since the previous reading; `None` on the first.
    pub utilization: Option<f64>,
}

/// Memory of the whole machine, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemInfo {
    pub total: u64,
    pub available: u64,
}

/// The `avg10` shares of a PSI file, as ratios 0..1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Psi {
    pub some: Option<f64>,
    pub full: Option<f64>,
}

/// The three PSI files of the machine or of a cgroup.
#[derive(Debug, Clone)]
pub(super) struct PsiFiles {
    pub cpu: PathBuf,
    pub memory: PathBuf,
    pub io: PathBuf,
}

pub(super) struct Host {
    stat: PathBuf,
    meminfo: PathBuf,
    psi: PsiFiles,
    net_dev: PathBuf,
    diskstats: PathBuf,
    cpu_prev: Option<CpuTimes>,
    net: Deltas<3>,
    disks: Deltas<3>,
}

impl Host {
    pub(super) fn new(proc_root: &Path) -> Self {
        let pressure = proc_root.join("pressure");
        Self {
            stat: proc_root.join("stat"),
            meminfo: proc_root.join("meminfo"),
            psi: PsiFiles { cpu: pressure.join("cpu"), memory: pressure.join("memory"), io: pressure.join("io") },
            net_dev: proc_root.join("net/dev"),
            diskstats: proc_root.join("diskstats"),
            cpu_prev: None,
            net: Deltas::default(),
            disks: Deltas::default(),
        }
    }

    pub(super) fn cpu(&mut self, buf: &mut String, health: &mut Health) -> Option<HostCpu> {
        let (times, cores) = read_parsed(&self.stat, buf, health, Source::Stat, parse_stat)?;
        let utilization = self.cpu_prev.and_then(|prev| cpu_ratio(prev, times));
        self.cpu_prev = Some(times);
        Some(HostCpu { cores, utilization })
    }

    pub(super) fn memory(&mut self, buf: &mut String, health: &mut Health) -> Option<MemInfo> {
        read_parsed(&self.meminfo, buf, health, Source::Meminfo, parse_meminfo)
    }

    pub(super) fn pressure(&mut self, buf: &mut String, health: &mut Health, out: &mut Readings) {
        pressure(&self.psi, buf, health, out);
    }

    /// Bytes and errors per second over the interfaces that carry the instance's traffic.
    pub(super) fn network(&mut self, now: Instant, buf: &mut String, health: &mut Health, out: &mut Readings) {
        let net = &mut self.net;
        let Some(sums) = read_parsed(&self.net_dev, buf, health, Source::NetDev, |text| {
            net.begin(now);
            let mut sums = [0u64; 3];
            // Two header lines; a line that does not parse is skipped, not fatal.
            let lines = text.lines().skip(2).filter_map(parse_net_dev_line);
            for (name, counters) in lines.filter(|(name, _)| counts_as_traffic(name)) {
                if let Some(increase) = net.update(name, counters) {
                    for (s, i) in sums.iter_mut().zip(increase) {
                        *s += i;
                    }
                }
            }
            Some(sums)
        }) else {
            return;
        };
        let Some(seconds) = net.finish() else { return };
        let [received, transmitted, errors] = sums;
        out.push(m::NETWORK_RECEIVE, per_second(received, seconds));
        out.push(m::NETWORK_TRANSMIT, per_second(transmitted, seconds));
        out.push(m::NETWORK_ERRORS, per_second(errors, seconds));
    }

    /// Bytes read and written per second over whole physical disks, and the busy share
    /// of the busiest one: the disk that saturates first, and a lower bound of the time
    /// some disk was busy.
    pub(super) fn disks(&mut self, now: Instant, buf: &mut String, health: &mut Health, out: &mut Readings) {
        let disks = &mut self.disks;
        let Some((read, written, busiest)) = read_parsed(&self.diskstats, buf, health, Source::DiskStats, |text| {
            disks.begin(now);
            let (mut read, mut written, mut busiest) = (0u64, 0u64, 0u64);
            for (name, counters) in text.lines().filter_map(parse_diskstats_line) {
                if !is_whole_physical_disk(name, text) {
                    continue;
                }
                if let Some([sectors_read, sectors_written, busy_ms]) = disks.update(name, counters) {
                    read += sectors_read;
                    written += sectors_written;
                    busiest = busiest.max(busy_ms);
                }
            }
            Some((read, written, busiest))
        }) else {
            return;
        };
        let Some(seconds) = disks.finish() else { return };
        // Sectors in /proc/diskstats are 512 bytes whatever the device's sector size.
        out.push(m::DISK_READ, per_second(read * 512, seconds));
        out.push(m::DISK_WRITE, per_second(written * 512, seconds));
        out.push(m::DISK_BUSY, (busiest as f64 / 1000.0 / seconds).min(1.0));
    }
}

/// Reads the three PSI files of the machine or a cgroup.
pub(super) fn pressure(files: &PsiFiles, buf: &mut String, health: &mut Health, out: &mut Readings) {
    if let Some(psi) = read_parsed(&files.cpu, buf, health, Source::PsiCpu, parse_psi) {
        // No `full` for CPU in the contract: machine-wide the kernel reports it as zero.
        if let Some(v) = psi.some {
            out.push(m::PSI_CPU_SOME, v);
        }
    }
    if let Some(psi) = read_parsed(&files.memory, buf, health, Source::PsiMemory, parse_psi) {
        if let Some(v) = psi.some {
            out.push(m::PSI_MEMORY_SOME, v);
        }
        if let Some(v) = psi.full {
            out.push(m::PSI_MEMORY_FULL, v);
        }
    }
    if let Some(psi) = read_parsed(&files.io, buf, health, Source::PsiIo, parse_psi) {
        if let Some(v) = psi.some {
            out.push(m::PSI_IO_SOME, v);
        }
        if let Some(v) = psi.full {
            out.push(m::PSI_IO_FULL, v);
        }
    }
}

/// Share of CPU time spent busy between two readings of /proc/stat.
pub(super) fn cpu_ratio(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    // iowait may go backwards on some kernels; saturate instead of wrapping.
    let total = now.total.saturating_sub(prev.total);
    let busy = now.busy.saturating_sub(prev.busy);
    (total > 0).then(|| (busy as f64 / total as f64).min(1.0))
}

/// The aggregate `cpu` line of /proc/stat and the number of CPUs online.
pub(super) fn parse_stat(text: &str) -> Option<(CpuTimes, u32)> {
    let mut times = None;
    let mut cores = 0u32;
    for line in text.lines() {
        if let Some(fields) = line.strip_prefix("cpu ") {
            times = parse_cpu_fields(fields);
        } else if line.starts_with("cpu") {
            cores += 1;
        } else {
            break; // the cpu lines come first; the rest (intr, ...) is not needed
        }
    }
    Some((times?, cores.max(1)))
}

fn parse_cpu_fields(fields: &str) -> Option<CpuTimes> {
    // user nice system idle iowait irq softirq steal; guest and guest_nice that
    // follow are already counted in user and nice.
    let mut f = [0u64; 8];
    let mut n = 0;
    for (slot, field) in f.iter_mut().zip(fields.split_ascii_whitespace()) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    if n < 4 {
        return None;
    }
    let total: u64 = f.iter().sum();
    // Steal counts as busy: those cycles were not available to this machine.
    let idle = f[3] + f[4];
    Some(CpuTimes { busy: total - idle, total })
}

/// MemTotal and MemAvailable of /proc/meminfo, in bytes.
pub(super) fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let (mut total, mut available) = (None, None);
    // Kernels before 3.14 have no MemAvailable; free + buffers + cache approximates it.
    let mut fallback = Some(0u64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let Some(kib) = rest.split_ascii_whitespace().next().and_then(|v| v.parse::<u64>().ok()) else { continue };
        let bytes = kib.saturating_mul(1024);
        match key {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" | "Buffers" | "Cached" => fallback = fallback.map(|f| f + bytes),
            _ => {}
        }
    }
    let total = total?;
    Some(MemInfo { total, available: available.or(fallback)?.min(total) })
}

/// The `avg10` of the `some` and `full` lines of a PSI file, as ratios.
pub(super) fn parse_psi(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            _ => continue,
        };
        let avg10 = fields.find_map(|f| f.strip_prefix("avg10="))?;
        *slot = Some(percent_as_ratio(avg10)?);
    }
    psi.some.is_some().then_some(psi)
}

/// A percentage such as `12.34` as a ratio. Decimal digits are divided as integers
/// (1234 / 10000), so the ratio is the double nearest its decimal value and prints as
/// `0.1234`, not `0.12340000000000001` as `12.34 / 100` would.
fn percent_as_ratio(percent: &str) -> Option<f64> {
    let (whole, fraction) = percent.split_once('.').unwrap_or((percent, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 6 {
        return percent.parse::<f64>().ok().map(|p| p / 100.0);
    }
    let scale = 10u64.pow(fraction.len() as u32);
    let hundredths: u64 = whole.parse::<u64>().ok()?.checked_mul(scale)? + fraction.parse::<u64>().unwrap_or(0);
    Some(hundredths as f64 / (scale * 100) as f64)
}

/// Name and [received bytes, transmitted bytes, errors] of one /proc/net/dev line.
pub(super) fn parse_net_dev_line(line: &str) -> Option<(&str, [u64; 3])> {
    let (name, fields) = line.split_once(':')?;
    let mut f = [0u64; 11];
    let mut n = 0;
    for (slot, field) in f.iter_mut().zip(fields.split_ascii_whitespace()) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    (n == f.len()).then(|| (name.trim(), [f[0], f[8], f[2] + f[10]]))
}

/// Whether an interface's traffic is the machine's own: loopback never leaves it, and
/// bridges, veth pairs and overlay tunnels repeat traffic a physical (or, inside a
/// container, the pod's own) interface already counts.
pub(super) fn counts_as_traffic(name: &str) -> bool {
    const REPEATERS: &[&str] =
        &["veth", "docker", "br-", "virbr", "cni", "flannel", "cali", "cilium", "vxlan", "tunl", "kube-", "lxc"];
    name != "lo" && !REPEATERS.iter().any(|p| name.starts_with(p))
}

/// Name and [sectors read, sectors written, ms busy] of one /proc/diskstats line.
pub(super) fn parse_diskstats_line(line: &str) -> Option<(&str, [u64; 3])> {
    let mut fields = line.split_ascii_whitespace().skip(2);
    let name = fields.next()?;
    let mut f = [0u64; 10];
    for slot in f.iter_mut() {
        *slot = fields.next()?.parse().ok()?;
    }
    Some((name, [f[2], f[6], f[9]]))
}

/// Whether a /proc/diskstats device is a whole physical disk: partitions, device
/// mapper, software RAID, loop and RAM devices repeat I/O a disk already counts (or
/// never reach one). /sys/block would say so directly, but the agent reads a proc
/// root only, so partitions are recognised by name against the other devices listed:
/// `sda1` of `sda`, `nvme0n1p2` of `nvme0n1` (never `nvme0n10`).
pub(super) fn is_whole_physical_disk(name: &str, diskstats: &str) -> bool {
    const VIRTUAL: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];
    if VIRTUAL.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    let names = diskstats.lines().filter_map(|l| l.split_ascii_whitespace().nth(2));
    !names.into_iter().any(|disk| is_partition_of(name, disk))
}

fn is_partition_of(name: &str, disk: &str) -> bool {
    let Some(suffix) = name.strip_prefix(disk) else { return false };
    // Disks whose names end in a digit separate the partition number with `p`.
    let number = if disk.ends_with(|c: char| c.is_ascii_digit()) { suffix.strip_prefix('p') } else { Some(suffix) };
    number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The previous counters of each device, so a rate is the sum of per-device increases:
/// a device that appears contributes from its second reading, one that disappears
/// (or restarts its counters) never makes a sum go backwards.
pub(super) struct Deltas<const N: usize> {
    devices: Vec<Device<N>>,
    previous: Option<Instant>,
    current: Option<Instant>,
}

struct Device<const N: usize> {
    name: String,
    counters: [u64; N],
    seen: bool,
}

impl<const N: usize> Default for Deltas<N> {
    fn default() -> Self {
        Self { devices: Vec::new(), previous: None, current: None }
    }
}

impl<const N: usize> Deltas<N> {
    /// Starts a reading taken at `now`.
    pub(super) fn begin(&mut self, now: Instant) {
        self.current = Some(now);
        for d in &mut self.devices {
            d.seen = false;
        }
    }

    /// Records one device's counters; returns their increase since the previous reading.
    pub(super) fn update(&mut self, name: &str, counters: [u64; N]) -> Option<[u64; N]> {
        let Some(device) = self.devices.iter_mut().find(|d| d.name == name) else {
            self.devices.push(Device { name: name.to_owned(), counters, seen: true });
            return None;
        };
        let previous = std::mem::replace(&mut device.counters, counters);
        device.seen = true;
        let mut increase = [0u64; N];
        for ((i, now), before) in increase.iter_mut().zip(counters).zip(previous) {
            *i = now.checked_sub(before)?; // counters restarted: no increase known
        }
        Some(increase)
    }

    /// Completes the reading: forgets devices that are gone and returns the seconds
    /// since the previous complete reading (`None` for the first).
    pub(super) fn finish(&mut self) -> Option<f64> {
        self.devices.retain(|d| d.seen);
        let now = self.current.take()?;
        let seconds = self.previous.and_then(|p| seconds_between(p, now));
        self.previous = Some(now);
        seconds
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
