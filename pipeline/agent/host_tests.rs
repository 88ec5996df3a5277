use std::time::Duration;

use super::*;

const STAT: &str = "\
cpu  100 0 100 700 100 0 0 0 50 0
cpu0 50 0 50 350 50 0 0 0 25 0
cpu1 50 0 50 350 50 0 0 0 25 0
intr 12345 1 2 3
ctxt 999
";

#[test]
fn stat_gives_busy_share_and_cores() {
    let (t0, cores) = parse_stat(STAT).unwrap();
    assert_eq!(cores, 2);
    // Guest time (50) is already inside user time and must not count twice.
    assert_eq!(t0, CpuTimes { busy: 200, total: 1000 });
    let t1 = parse_stat("cpu  130 0 120 750 110 0 0 0 0 0\ncpu0 1\n").unwrap().0;
    // 50 busy ticks of 110.
    assert_eq!(cpu_ratio(t0, t1), Some(50.0 / 110.0));
    assert_eq!(cpu_ratio(t1, t1), None, "no time passed: no ratio");
    // iowait going backwards must not wrap around.
    let back = CpuTimes { busy: t1.busy + 10, total: t1.total - 5 };
    assert_eq!(cpu_ratio(t1, back), None);
    assert_eq!(parse_stat("intr 1\n"), None);
    assert_eq!(parse_stat("cpu  1 2\n"), None, "too few fields");
}

#[test]
fn meminfo_gives_total_and_available_in_bytes() {
    let text = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\nBuffers: 1 kB\n";
    assert_eq!(parse_meminfo(text), Some(MemInfo { total: 16_000_000 * 1024, available: 6_000_000 * 1024 }));
    // An old kernel without MemAvailable: free + buffers + cached.
    let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n";
    assert_eq!(parse_meminfo(old), Some(MemInfo { total: 1000 * 1024, available: 420 * 1024 }));
    assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
}

#[test]
fn psi_gives_avg10_as_ratio() {
    let cpu = "some avg10=1.50 avg60=0.50 avg300=0.10 total=12345\n";
    assert_eq!(parse_psi(cpu), Some(Psi { some: Some(0.015), full: None }));
    let io = "some avg10=25.00 avg60=1 avg300=0 total=1\nfull avg10=10.00 avg60=0 avg300=0 total=1\n";
    assert_eq!(parse_psi(io), Some(Psi { some: Some(0.25), full: Some(0.1) }));
    assert_eq!(parse_psi("some avg60=1\n"), None);
    let odd = parse_psi("some avg10=0.39 avg60=0 avg300=0 total=1\nfull avg10=100.00 avg60=0 avg300=0 total=1\n");
    assert_eq!(odd.unwrap().some.unwrap().to_string(), "0.0039", "decimal digits survive");
    assert_eq!(odd.unwrap().full, Some(1.0));
    assert_eq!(parse_psi(""), None);
}

#[test]
fn net_dev_lines_and_interfaces() {
    let line = "  eth0: 1000 10 2 0 0 0 0 0 500 5 3 0 0 0 0 0";
    assert_eq!(parse_net_dev_line(line), Some(("eth0", [1000, 500, 5])));
    assert_eq!(parse_net_dev_line("eth0:1 2 3"), None);
    assert!(counts_as_traffic("eth0") && counts_as_traffic("ens5") && counts_as_traffic("wlan0"));
    assert!(!counts_as_traffic("lo") && !counts_as_traffic("veth1a2b") && !counts_as_traffic("docker0"));
    assert!(!counts_as_traffic("cni0") && !counts_as_traffic("br-5f3a") && !counts_as_traffic("flannel.1"));
}

const DISKSTATS: &str = "\
   7       0 loop0 100 0 800 0 0 0 0 0 0 50 0
   8       0 sda 10 0 2000 5 20 0 4000 7 0 300 12
   8       1 sda1 5 0 1000 2 10 0 2000 3 0 150 5
 259       0 nvme0n1 1 0 100 1 1 0 100 1 0 10 1 0 0 0 0
 259       1 nvme0n1p1 1 0 100 1 1 0 100 1 0 10 1
 259       2 nvme0n10 1 0 100 1 1 0 100 1 0 10 1
 253       0 dm-0 9 0 1900 5 19 0 3900 7 0 290 11
";

#[test]
fn diskstats_keep_whole_physical_disks() {
    let physical: Vec<&str> = DISKSTATS
        .lines()
        .filter_map(parse_diskstats_line)
        .map(|(name, _)| name)
        .filter(|name| is_whole_physical_disk(name, DISKSTATS))
        .collect();
    assert_eq!(physical, ["sda", "nvme0n1", "nvme0n10"]);
    assert_eq!(parse_diskstats_line(DISKSTATS.lines().nth(1).unwrap()), Some(("sda", [2000, 4000, 300])));
    assert_eq!(parse_diskstats_line("8 0 sda 1 2"), None);
}

#[test]
fn deltas_sum_per_device_increases() {
    let mut d = Deltas::<1>::default();
    let t0 = Instant::now();
    d.begin(t0);
    assert_eq!(d.update("a", [10]), None, "first reading of a device");
    assert_eq!(d.finish(), None, "first reading: no interval");
    d.begin(t0 + Duration::from_secs(2));
    assert_eq!(d.update("a", [15]), Some([5]));
    assert_eq!(d.update("b", [1000]), None, "a new device contributes from its second reading");
    assert_eq!(d.finish(), Some(2.0));
    d.begin(t0 + Duration::from_secs(3));
    assert_eq!(d.update("a", [3]), None, "counters restarted");
    assert_eq!(d.finish(), Some(1.0));
    // `b` vanished above; when it returns it starts over.
    d.begin(t0 + Duration::from_secs(4));
    assert_eq!(d.update("b", [2000]), None);
}

/// A proc root in a tempdir.
struct Proc {
    dir: tempfile::TempDir,
}

impl Proc {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn net_dev(&self, eth0: [u64; 3], lo: u64) {
        let header = "Inter-|   Receive   |  Transmit\n face |bytes packets errs|bytes\n";
        let [rx, tx, errs] = eth0;
        self.write(
            "net/dev",
            &format!("{header}    lo: {lo} 1 0 0 0 0 0 0 {lo} 1 0 0 0 0 0 0\n  eth0: {rx} 1 {errs} 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n"),
        );
    }

    fn diskstats(&self, sectors_read: u64, sectors_written: u64, busy_ms: u64) {
        self.write(
            "diskstats",
            &format!(
                "8 0 sda 1 0 {sectors_read} 0 1 0 {sectors_written} 0 0 {busy_ms} 0\n8 1 sda1 1 0 {sectors_read} 0 1 0 {sectors_written} 0 0 {busy_ms} 0\n"
            ),
        );
    }
}

#[test]
fn network_and_disk_rates_come_from_the_second_reading() {
    let p = Proc::new();
    let mut host = Host::new(p.dir.path());
    let (mut buf, mut health, mut out) = (String::new(), Health::default(), Readings::default());
    let t0 = Instant::now();
    p.net_dev([1000, 2000, 1], 5000);
    p.diskstats(100, 200, 1000);
    host.network(t0, &mut buf, &mut health, &mut out);
    host.disks(t0, &mut buf, &mut health, &mut out);
    assert!(out.is_empty(), "no rates from one reading: {out:?}");

    p.net_dev([4000, 2500, 3], 9_000_000);
    p.diskstats(300, 600, 1500);
    let t1 = t0 + Duration::from_secs(2);
    host.network(t1, &mut buf, &mut health, &mut out);
    host.disks(t1, &mut buf, &mut health, &mut out);
    assert_eq!(out.get(m::NETWORK_RECEIVE), Some(1500.0), "loopback excluded");
    assert_eq!(out.get(m::NETWORK_TRANSMIT), Some(250.0));
    assert_eq!(out.get(m::NETWORK_ERRORS), Some(1.0));
    assert_eq!(out.get(m::DISK_READ), Some(200.0 * 512.0 / 2.0), "the partition is not counted again");
    assert_eq!(out.get(m::DISK_WRITE), Some(400.0 * 512.0 / 2.0));
    assert_eq!(out.get(m::DISK_BUSY), Some(0.25));
    assert_eq!(health.warnings(), 0);
}

#[test]
fn missing_files_leave_metrics_out_with_one_warning_each() {
    let p = Proc::new();
    p.write("meminfo", "MemTotal: 1000 kB\nMemAvailable: 250 kB\n");
    let mut host = Host::new(p.dir.path());
    let (mut buf, mut health, mut out) = (String::new(), Health::default(), Readings::default());
    for tick in 0..3 {
        assert_eq!(host.cpu(&mut buf, &mut health), None);
        assert_eq!(host.memory(&mut buf, &mut health), Some(MemInfo { total: 1000 * 1024, available: 250 * 1024 }));
        host.pressure(&mut buf, &mut health, &mut out);
        host.network(Instant::now(), &mut buf, &mut health, &mut out);
        host.disks(Instant::now(), &mut buf, &mut health, &mut out);
        assert!(out.is_empty(), "tick {tick}: {out:?}");
        // stat, three PSI files, net/dev, diskstats: each warned once, on the first tick.
        assert_eq!(health.warnings(), 6, "tick {tick}");
    }
    // A file that comes back is read again; one that breaks again is warned again.
    p.write("stat", STAT);
    assert!(host.cpu(&mut buf, &mut health).is_some());
    p.write("stat", "garbage\n");
    assert_eq!(host.cpu(&mut buf, &mut health), None);
    assert_eq!(health.warnings(), 7);
}

#[test]
fn host_pressure_reads_proc_pressure() {
    let p = Proc::new();
    p.write("pressure/cpu", "some avg10=2.00 avg60=0 avg300=0 total=1\nfull avg10=0.00 avg60=0 avg300=0 total=0\n");
    p.write("pressure/memory", "some avg10=4.00 avg60=0 avg300=0 total=1\nfull avg10=1.00 avg60=0 avg300=0 total=1\n");
    p.write("pressure/io", "some avg10=8.00 avg60=0 avg300=0 total=1\nfull avg10=6.00 avg60=0 avg300=0 total=1\n");
    let mut host = Host::new(p.dir.path());
    let (mut buf, mut health, mut out) = (String::new(), Health::default(), Readings::default());
    host.pressure(&mut buf, &mut health, &mut out);
    assert_eq!(out.get(m::PSI_CPU_SOME), Some(0.02));
    assert_eq!(out.get(m::PSI_MEMORY_SOME), Some(0.04));
    assert_eq!(out.get(m::PSI_MEMORY_FULL), Some(0.01));
    assert_eq!(out.get(m::PSI_IO_SOME), Some(0.08));
    assert_eq!(out.get(m::PSI_IO_FULL), Some(0.06));
}
