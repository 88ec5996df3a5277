use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

use super::*;
use crate::codec::metric_names as m;
use crate::codec::Codec;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// The flags parsed, or the paragraph of clap's message that says what is wrong.
fn parse(argv: &[&str]) -> Result<Args, String> {
    Cli::try_parse_from(std::iter::once("agent").chain(argv.iter().copied())).map(|c| c.args).map_err(|e| {
        let rendered = e.render().to_string();
        rendered.lines().take_while(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n").trim().to_owned()
    })
}

#[test]
fn flags_have_documented_defaults() {
    let a = parse(&["--instance-id", "web-1", "--label", "zone=a", "--label", "tier=gold"]).unwrap();
    assert_eq!(a.instance_id.as_deref(), Some("web-1"));
    assert_eq!((a.app_type.as_str(), a.function.as_str()), ("host", "node"));
    assert_eq!(a.interval, Duration::from_secs(1));
    assert_eq!(a.count, None);
    assert_eq!(a.proc_root, Path::new("/proc"));
    assert_eq!(a.cgroup, CgroupChoice::Auto(DEFAULT_CGROUP_ROOT.into()));
    assert_eq!(a.labels, vec![("zone".into(), "a".into()), ("tier".into(), "gold".into())]);
    let config = a.sampler_config();
    assert!(config.prometheus.is_none() && config.log.is_none());
    assert_eq!(config.scrape_timeout, Duration::from_millis(750));

    let a = parse(&["--prometheus-url", "http://127.0.0.1:9090/metrics", "--log-file", "/var/log/app.log"]).unwrap();
    let config = a.sampler_config();
    let p = config.prometheus.unwrap();
    assert_eq!((p.requests.as_str(), p.latency.as_str()), ("http_requests_total", "http_request_duration_seconds"));
    assert!(matches!(p.errors, ErrorSeries::ServerErrors));
    let log = config.log.unwrap();
    assert!(log.pattern.is_match(b"java.lang.NullPointerException") && log.pattern.is_match(b"PANIC"));
    assert!(!log.pattern.is_match(b"all good"));
}

#[test]
fn bad_values_are_refused_in_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--interval", "50ms"], "--interval"),
        (&["--interval", "soon"], "--interval"),
        (&["--log-file", "x", "--log-pattern", "(unclosed"], "--log-pattern"),
        (&["--prometheus-url", "https://app:9090/metrics"], "--prometheus-url"),
        (&["--prometheus-url", "not a url"], "--prometheus-url"),
        (&["--prometheus-url", "http://a/m", "--errors-metric", "e{code=500}"], "--errors-metric"),
        (&["--prometheus-url", "http://a/m", "--requests-metric", "bad-name"], "--requests-metric"),
        (&["--cgroup", "/nonexistent/cgroup"], "--cgroup"),
        (&["--label", "novalue"], "--label"),
        (&["--instance-id", " "], "--instance-id"),
        (&["--partitions", "0"], "--partitions"),
    ];
    for (argv, flag) in cases {
        let error = parse(argv).expect_err(&format!("{argv:?} accepted"));
        assert!(!error.contains('\n'), "{argv:?}: more than one line: {error}");
        assert!(error.contains(flag), "{argv:?}: {error:?} does not name {flag}");
    }
    let regex_error = parse(&["--log-file", "x", "--log-pattern", "(unclosed"]).unwrap_err();
    assert!(regex_error.contains("unclosed group"), "the reason is on the line: {regex_error}");
    let https = parse(&["--prometheus-url", "https://app:9090/metrics"]).unwrap_err();
    assert!(https.contains("plain http"), "{https}");
}

#[test]
fn options_of_a_source_need_the_source() {
    for (argv, needed) in [
        (&["--requests-metric", "reqs_total"][..], "--prometheus-url"),
        (&["--errors-metric", "errors_total"], "--prometheus-url"),
        (&["--latency-metric", "rpc_seconds"], "--prometheus-url"),
        (&["--log-pattern", "x"], "--log-file"),
    ] {
        let error = parse(argv).expect_err(&format!("{argv:?} accepted"));
        assert!(error.contains(needed), "{argv:?}: {error:?} does not name {needed}");
    }
}

#[test]
fn metrics_reuse_their_names_from_tick_to_tick() {
    let mut readings = Readings::default();
    readings.push(m::CPU_UTILIZATION, 0.5);
    readings.push(m::MEMORY_USED, 1.0);
    let mut metrics = Vec::new();
    fill_metrics(&mut metrics, &readings);
    assert_eq!(metrics, vec![Metric::new(m::CPU_UTILIZATION, 0.5), Metric::new(m::MEMORY_USED, 1.0)]);
    let name_at = metrics[0].name.as_ptr();
    readings.clear();
    readings.push(m::CPU_UTILIZATION, 0.25);
    fill_metrics(&mut metrics, &readings);
    assert_eq!(metrics, vec![Metric::new(m::CPU_UTILIZATION, 0.25)]);
    assert_eq!(metrics[0].name.as_ptr(), name_at, "the name's allocation is reused");
    readings.push(m::LATENCY_P99, f64::NAN);
    assert_eq!(readings.len(), 1, "non-finite values never reach a sample");
}

fn write(root: &Path, file: &str, text: &str) {
    let path = root.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn machine(root: &Path, cpu: [u64; 4], net_rx: u64, sectors_read: u64) {
    let [user, system, idle, iowait] = cpu;
    write(root, "stat", &format!("cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 0\ncpu1 0\ncpu2 0\ncpu3 0\n"));
    write(root, "meminfo", "MemTotal: 8000 kB\nMemFree: 1000 kB\nMemAvailable: 3000 kB\n");
    for psi in ["cpu", "memory", "io"] {
        write(
            root,
            &format!("pressure/{psi}"),
            "some avg10=5.00 avg60=0 avg300=0 total=1\nfull avg10=1.00 avg60=0 avg300=0 total=1\n",
        );
    }
    write(root, "net/dev", &format!("h1\nh2\n  eth0: {net_rx} 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"));
    write(root, "diskstats", &format!("8 0 vda 0 0 {sectors_read} 0 0 0 0 0 0 0 0\n"));
}

#[tokio::test]
async fn sampler_reads_a_whole_machine_from_a_proc_root() {
    let proc = tempfile::tempdir().unwrap();
    let log = proc.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    machine(proc.path(), [100, 100, 700, 100], 0, 0);
    let mut sampler = Sampler::new(SamplerConfig {
        proc_root: proc.path().to_owned(),
        cgroup: CgroupChoice::Host,
        prometheus: None,
        log: Some(LogConfig { path: log.clone(), pattern: regex::bytes::Regex::new(DEFAULT_LOG_PATTERN).unwrap() }),
        scrape_timeout: Duration::from_secs(1),
    })
    .unwrap();
    assert_eq!(sampler.cgroup_dir(), None);
    let mut out = Readings::default();
    let t0 = Instant::now();
    sampler.sample(t0, &mut out).await;
    let first: Vec<&str> = out.iter().map(|(name, _)| name).collect();
    assert_eq!(
        first,
        [
            m::CPU_LIMIT,
            m::MEMORY_USED,
            m::MEMORY_AVAILABLE,
            m::MEMORY_LIMIT,
            m::PSI_CPU_SOME,
            m::PSI_MEMORY_SOME,
            m::PSI_MEMORY_FULL,
            m::PSI_IO_SOME,
            m::PSI_IO_FULL
        ],
        "levels only: every rate needs a second reading"
    );
    assert_eq!(out.get(m::CPU_LIMIT), Some(4.0));
    assert_eq!(out.get(m::MEMORY_USED), Some(5000.0 * 1024.0));
    assert_eq!(out.get(m::MEMORY_AVAILABLE), Some(3000.0 * 1024.0));
    assert_eq!(out.get(m::PSI_IO_FULL), Some(0.01));

    machine(proc.path(), [150, 150, 750, 150], 1_000_000, 4);
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"ERROR x\nok\nerror y\n").unwrap();
    sampler.sample(t0 + Duration::from_millis(500), &mut out).await;
    assert_eq!(out.get(m::CPU_UTILIZATION), Some(0.5), "100 busy of 200 ticks");
    assert_eq!(out.get(m::NETWORK_RECEIVE), Some(2_000_000.0));
    assert_eq!(out.get(m::DISK_READ), Some(4096.0));
    assert_eq!(out.get(m::LOG_ERRORS), Some(4.0), "two lines in half a second");
    assert!(out.iter().all(|(name, _)| m::ALL.contains(&name)), "canonical names only");
    assert_eq!(sampler.warnings(), 0);
}

/// librdkafka's in-process cluster holding the telemetry topic (creating it through
/// the admin API of the mock takes its whole operation timeout).
fn mock_cluster() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

const TOPIC: &str = "agenttest.telemetry";

fn agent_args(brokers: &str, count: Option<u64>) -> Args {
    let mut a =
        parse(&["--instance-id", "inst-1", "--interval", "100ms", "--cgroup", "host", "--label", "zone=a"]).unwrap();
    a.count = count;
    a.kafka.brokers = Some(brokers.to_owned());
    a.kafka.topic_prefix = "agenttest".to_owned();
    a
}

fn consumer(brokers: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "agent-test")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Assigned, not subscribed: no group to join, so records arrive at once.
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition_offset(TOPIC, 0, rdkafka::Offset::Beginning).unwrap();
    c.assign(&partitions).unwrap();
    c
}

async fn next_sample(consumer: &StreamConsumer) -> TelemetrySample {
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("a record").unwrap();
    assert_eq!(message.key(), Some(&b"inst-1"[..]), "keyed by instance id");
    let sample = Codec::<TelemetrySample>::new().decode(message.payload().unwrap()).unwrap();
    assert_eq!(message.timestamp().to_millis(), Some(sample.timestamp_ms), "Kafka time is the sampling time");
    sample
}

#[tokio::test(flavor = "multi_thread")]
async fn run_publishes_count_samples_in_sequence_then_flushes() {
    let (_cluster, brokers) = mock_cluster();
    let summary = run(agent_args(&brokers, Some(3)), CancellationToken::new()).await.unwrap();
    assert_eq!(summary, Summary { samples: 3, delivered: 3 });

    let consumer = consumer(&brokers);
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.push(next_sample(&consumer).await);
    }
    assert_eq!(samples.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(samples.windows(2).all(|w| w[1].timestamp_ms - w[0].timestamp_ms >= 50), "one sample per interval");
    for s in &samples {
        assert_eq!((s.instance_id.as_str(), s.app_type.as_str(), s.function.as_str()), ("inst-1", "host", "node"));
        assert_eq!(s.labels.get("zone").map(String::as_str), Some("a"));
        assert!(s.metric(m::MEMORY_USED).is_some_and(|v| v > 0.0));
    }
    assert_eq!(samples[0].metric(m::CPU_UTILIZATION), None, "the first sample has no rates");
    assert!(samples[2].metric(m::CPU_UTILIZATION).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_sampling_and_flushes_what_was_produced() {
    let (_cluster, brokers) = mock_cluster();
    let shutdown = CancellationToken::new();
    let consumer = consumer(&brokers);
    let watch = async {
        // Stop once two samples have arrived: the agent is mid-run, not at a count.
        let seqs = [next_sample(&consumer).await.seq, next_sample(&consumer).await.seq];
        shutdown.cancel();
        seqs
    };
    let (summary, seen) = tokio::join!(run(agent_args(&brokers, None), shutdown.clone()), watch);
    let summary = summary.unwrap();
    assert_eq!(seen, [0, 1]);
    assert!(summary.samples >= 2, "{summary:?}");
    assert_eq!(summary.delivered, summary.samples, "everything produced was flushed");
    for seq in 2..summary.samples as i64 {
        assert_eq!(next_sample(&consumer).await.seq, seq, "no gaps");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_delivery_ends_the_run_with_an_error_not_a_gap() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, brokers) = mock_cluster();
    // The first produce request is refused for good: that sample can never arrive.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
    let result = run(agent_args(&brokers, Some(3)), CancellationToken::new()).await;
    assert!(matches!(result, Err(AgentError::Publish(PublishError::Delivery { .. }))), "{result:?}");
}
