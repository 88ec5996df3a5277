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

/// `/metrics` of a running agent follows its samples; `/readyz` turns ready once the
/// broker confirmed one, and every sample it counted is in the topic after SIGTERM.
#[test]
fn a_running_agent_serves_metrics_that_follow_its_samples() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("agent-metrics");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let child = common::augur()
        .args(["agent", "--brokers", bootstrap, "--topic-prefix", &prefix, "--instance-id", "observed-host"])
        .args(["--interval", "100ms", "--cgroup", "host", "--metrics-addr", &addr])
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start augur agent");
    let agent = crate::detect::Running(Some(child));

    let began = std::time::Instant::now();
    let mut seen = Vec::new();
    let last = loop {
        assert!(began.elapsed() < std::time::Duration::from_secs(120), "samples counted: {seen:?}");
        let m = common::scrape(&addr);
        if let (Some(&samples), Some(&delivered)) =
            (m.get("augur_agent_samples_total"), m.get("augur_agent_delivered_total"))
        {
            assert!(delivered <= samples, "more confirmed than produced: {m:?}");
            if seen.last() != Some(&samples) {
                seen.push(samples);
            }
            if delivered >= 5.0 {
                break m;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(seen.len() >= 3 && seen.windows(2).all(|w| w[0] < w[1]), "samples did not count up: {seen:?}");
    assert!(last["augur_agent_sample_metrics"] >= 5.0, "a host sample has CPU, memory, PSI...: {last:?}");
    assert!(last["augur_agent_sample_seconds_count"] >= last["augur_agent_samples_total"] - 1.0, "{last:?}");
    assert_eq!(common::http_get(&addr, "/readyz").map(|(s, _)| s), Some(200), "ready after confirmed samples");
    assert_eq!(common::http_get(&addr, "/healthz").map(|(s, _)| s), Some(200));
    agent.terminate();

    let published = common::read_all(bootstrap, &format!("{prefix}.telemetry")).len() as f64;
    assert!(published >= last["augur_agent_delivered_total"], "{published} records, {last:?}");
}
