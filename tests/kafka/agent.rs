//! `augur agent` on this machine, against the real broker: plausible readings.

use augur::codec::{metric_names as m, Codec, TelemetrySample};
use rdkafka::message::Message;

use crate::common;

fn mem_total_bytes() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024.0
}

#[test]
fn agent_publishes_plausible_cpu_and_memory_of_this_machine() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("agent");
    let out = common::augur()
        .args([
            "agent",
            "--brokers",
            bootstrap,
            "--topic-prefix",
            &prefix,
            "--instance-id",
            "test-host",
            "--app-type",
            "host",
            "--interval",
            "200ms",
            "--count",
            "4",
            // Host view: a cgroup limit would make the comparison with MemTotal meaningless.
            "--cgroup",
            "host",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "agent failed: {}", String::from_utf8_lossy(&out.stderr));

    let codec = Codec::<TelemetrySample>::new();
    let samples: Vec<TelemetrySample> = common::read_all(bootstrap, &format!("{prefix}.telemetry"))
        .iter()
        .map(|msg| {
            assert_eq!(msg.key(), Some(&b"test-host"[..]));
            codec.decode(msg.payload().unwrap()).unwrap()
        })
        .collect();
    assert_eq!(samples.len(), 4, "--count 4 publishes 4 samples");
    assert_eq!(samples.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3]);

    let total = mem_total_bytes();
    for s in &samples {
        assert_eq!(s.instance_id, "test-host");
        let used = s.metric(m::MEMORY_USED).expect("memory used in every sample");
        let available = s.metric(m::MEMORY_AVAILABLE).expect("memory available in every sample");
        assert!(used > 0.0 && used < total, "memory used {used} of {total}");
        assert!(available > 0.0 && available < total, "memory available {available} of {total}");
    }
    // CPU is a rate: the first sample has none, every later one does.
    assert_eq!(samples[0].metric(m::CPU_UTILIZATION), None, "no rate without a previous reading");
    let cpu: Vec<f64> = samples[1..].iter().map(|s| s.metric(m::CPU_UTILIZATION).expect("cpu")).collect();
    assert!(cpu.iter().all(|c| (0.0..=1.0).contains(c)), "cpu ratios {cpu:?}");
    // This test process and the broker keep the machine busy: some CPU is always in use.
    assert!(cpu.iter().any(|c| *c > 0.0), "cpu all zero: {cpu:?}");
}
