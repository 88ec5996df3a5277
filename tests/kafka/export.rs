//! `augur export` against the real broker and a real Prometheus: every sample arrives
//! with the value the simulator produced, none is lost or doubled across a SIGKILL or a
//! database outage, and what cannot be stored goes to the dead-letter topic.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use augur::codec::{metric_names as mn, Alert, AlertKind, Codec, DeadLetter, Metric, TelemetrySample};
use augur::kafka::{Cluster, KafkaConfig, Retention, TopicSpec};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::common::{self, prometheus::Prometheus};
use crate::detect::committed;

const PARTITIONS: i32 = 3;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A running `augur export`, killed if the test ends (or panics) before stopping it.
struct Exporter {
    child: Option<Child>,
    metrics: String,
}

impl Exporter {
    fn start(bootstrap: &str, prefix: &str, group: &str, remote_write: &str, extra: &[&str]) -> Self {
        // A port free now; the exporter fails at once (and the test with it) if taken meanwhile.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics = format!("127.0.0.1:{port}");
        let child = common::augur()
            .args(["export", "--brokers", bootstrap, "--topic-prefix", prefix, "--group", group])
            .args(["--remote-write-url", remote_write, "--metrics-addr", &metrics])
            .args(["--partitions", &PARTITIONS.to_string(), "--batch-wait", "50ms"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start augur export");
        Self { child: Some(child), metrics }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("exporter running")
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child().try_wait().unwrap() {
            panic!("the exporter exited with {status}");
        }
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(mut self) {
        let mut c = self.child.take().expect("exporter running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM, and a clean exit.
    fn terminate(mut self) {
        let mut c = self.child.take().expect("exporter running");
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        let status = c.wait().unwrap();
        assert!(status.success(), "exporter exited with {status} after SIGTERM");
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        common::http_get(&self.metrics, path)
    }

    /// The exporter's own metrics (name → value); empty while it does not answer yet.
    fn metrics(&self) -> BTreeMap<String, f64> {
        common::scrape(&self.metrics)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `condition` until it holds, failing the test after `limit` or if the exporter
/// exits meanwhile.
fn wait_for(what: &str, limit: Duration, e: &mut Exporter, mut condition: impl FnMut(&mut Exporter) -> bool) {
    let began = Instant::now();
    while !condition(e) {
        e.assert_running();
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50)); // polling a condition, with a deadline
    }
}

fn committed_now(bootstrap: &str, group: &str, topic: &str) -> i64 {
    // A new group's coordinator may not be ready yet: that is "nothing committed".
    committed(bootstrap, group, topic, PARTITIONS).unwrap_or(0)
}

/// Simulates `instances` for `duration` ending now; returns the number of records.
fn simulate(bootstrap: &str, prefix: &str, instances: usize, duration: &str, seed: u64) -> u64 {
    let (instances, seed, partitions) = (instances.to_string(), seed.to_string(), PARTITIONS.to_string());
    let summary = common::simulate(
        bootstrap,
        prefix,
        &["--instances", &instances, "--duration", duration, "--seed", &seed, "--partitions", &partitions],
    );
    summary["records"].as_u64().expect("summary.records")
}

/// Every telemetry sample on the topic, as Prometheus should hold it:
/// (instance, metric) → (app_type, function, time → value).
type Expected = BTreeMap<(String, String), (String, String, BTreeMap<i64, f64>)>;

fn telemetry(bootstrap: &str, prefix: &str) -> Expected {
    let codec = Codec::<TelemetrySample>::new();
    let mut expected = Expected::new();
    for m in common::read_all(bootstrap, &format!("{prefix}.telemetry")) {
        let Ok(s) = codec.decode(m.payload().unwrap_or_default()) else { continue };
        for metric in &s.metrics {
            let (_, _, points) = expected
                .entry((s.instance_id.clone(), metric.name.clone()))
                .or_insert_with(|| (s.app_type.clone(), s.function.clone(), BTreeMap::new()));
            points.insert(s.timestamp_ms, metric.value);
        }
    }
    expected
}

/// (first, last) event time of all samples.
fn span(expected: &Expected) -> (i64, i64) {
    let times = expected.values().flat_map(|(_, _, p)| p.keys().copied());
    times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)))
}

/// Evaluation time and range covering [first, last] for a raw range selector.
fn window(first: i64, last: i64) -> (f64, String) {
    (last as f64 / 1000.0 + 1.0, format!("{}s", (last - first) / 1000 + 120))
}

/// Raw samples of `selector` over [first, last]: label set → time → value.
fn raw(
    prom: &Prometheus,
    selector: &str,
    first: i64,
    last: i64,
) -> BTreeMap<BTreeMap<String, String>, BTreeMap<i64, f64>> {
    let (at, range) = window(first, last);
    let mut out = BTreeMap::new();
    for series in prom.query(&format!("{selector}[{range}]"), at) {
        let labels: BTreeMap<String, String> = serde_json::from_value(series["metric"].clone()).unwrap();
        let points = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                (t, p[1].as_str().unwrap().parse::<f64>().unwrap())
            })
            .collect();
        out.insert(labels, points);
    }
    out
}

/// Samples of `augur_telemetry` counted by Prometheus over [first, last].
fn count_samples(prom: &Prometheus, first: i64, last: i64) -> u64 {
    let (at, range) = window(first, last);
    let result = prom.query(&format!("sum(count_over_time(augur_telemetry[{range}]))"), at);
    result.first().map_or(0, |r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap() as u64)
}

fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap()
}

fn alert(instance: &str, kind: AlertKind, signature: Option<&str>, score: Option<f64>, end_ms: i64) -> Alert {
    Alert {
        id: format!("{instance}/{}/{end_ms}", kind.name()),
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "frontend".into(),
        kind,
        window_start_ms: end_ms - 600_000,
        window_end_ms: end_ms,
        signature: signature.map(str::to_owned),
        confidence: 0.875,
        runner_up: None,
        runner_up_confidence: 0.0,
        explanation: vec![],
        anomaly_score: score,
        model_version: None,
        source_partition: 0,
        source_offset: 0,
    }
}

#[test]
fn round_trip_every_sample_with_its_value_alerts_as_series_and_dead_letters() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("export");
    let group = common::unique("g");
    let prom = Prometheus::start();
    let records = simulate(bootstrap, &prefix, 5, "20m", 3);

    // Created here, so the alerts and the poison records can go in before the exporter starts.
    let cluster = Cluster::open(&KafkaConfig {
        brokers: Some(bootstrap.to_owned()),
        topic_prefix: prefix.clone(),
        ..KafkaConfig::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(cluster.ensure_topics(&[
        TopicSpec { name: format!("{prefix}.alerts"), partitions: PARTITIONS, retention: Retention::Log },
        TopicSpec { name: format!("{prefix}.dlq"), partitions: 1, retention: Retention::Log },
    ]))
    .unwrap();

    let telemetry_topic = format!("{prefix}.telemetry");
    let p = producer(bootstrap);
    // Two records that are not telemetry at all.
    for payload in [&b"not avro"[..], &[0xc3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9][..]] {
        p.send(BaseRecord::to(&telemetry_topic).key("poison").payload(payload).partition(0)).unwrap();
    }
    // A valid sample from two months ago: Prometheus refuses it (too old for its head,
    // beyond the 30-day out-of-order window), so it must go to the DLQ alone while the
    // records batched with it are stored.
    let ancient = TelemetrySample {
        instance_id: "ancient-1".into(),
        app_type: "web".into(),
        function: "frontend".into(),
        seq: 0,
        timestamp_ms: now_ms() - 60 * 86_400_000,
        metrics: vec![Metric::new(mn::CPU_UTILIZATION, 0.5)],
        labels: Default::default(),
    };
    let ancient_bytes = Codec::<TelemetrySample>::new().encode(&ancient).unwrap();
    p.send(BaseRecord::to(&telemetry_topic).key("ancient-1").payload(&ancient_bytes).partition(1)).unwrap();
    let end = now_ms() / 1000 * 1000 - 60_000;
    let mut simulated: Vec<String> = telemetry(bootstrap, &prefix).keys().map(|(i, _)| i.clone()).collect();
    simulated.retain(|i| i != "ancient-1");
    let (first_instance, second_instance) = (simulated[0].clone(), simulated.last().unwrap().clone());
    assert_ne!(first_instance, second_instance);
    let alerts = [
        alert(&first_instance, AlertKind::Signature, Some("database/memory_leak"), Some(83.5), end),
        alert(&second_instance, AlertKind::Offline, None, None, end - 60_000),
    ];
    let alert_codec = Codec::<Alert>::new();
    for a in &alerts {
        let bytes = alert_codec.encode(a).unwrap();
        p.send(BaseRecord::to(&format!("{prefix}.alerts")).key(&a.instance_id).payload(&bytes)).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();

    let mut e = Exporter::start(bootstrap, &prefix, &group, &prom.remote_write_url(), &["--batch-max", "500"]);
    let telemetry_total = records as i64 + 3;
    wait_for("every telemetry and alert record committed", Duration::from_secs(120), &mut e, |_| {
        committed_now(bootstrap, &group, &telemetry_topic) == telemetry_total
            && committed_now(bootstrap, &group, &format!("{prefix}.alerts")) == alerts.len() as i64
    });

    let expected = telemetry(bootstrap, &prefix);

    // Then, in one go: a sample that contradicts a stored one (same instance, metric and
    // time, another value: Prometheus answers 400) and a new instance's valid sample.
    let codec = Codec::<TelemetrySample>::new();
    let last_of_first = common::read_all(bootstrap, &telemetry_topic)
        .iter()
        .filter_map(|m| codec.decode(m.payload()?).ok())
        .filter(|s| s.instance_id != "ancient-1")
        .max_by_key(|s| (s.instance_id.clone(), s.timestamp_ms))
        .expect("simulated samples");
    let mut conflict = last_of_first.clone();
    conflict.metrics[0].value += 1.0;
    let conflict_bytes = codec.encode(&conflict).unwrap();
    let late = TelemetrySample {
        instance_id: "late-1".into(),
        app_type: "cache".into(),
        function: "session".into(),
        seq: 0,
        timestamp_ms: now_ms() / 1000 * 1000 - 30_000,
        metrics: vec![Metric::new(mn::CPU_UTILIZATION, 0.25), Metric::new(mn::ERROR_RATE, 0.0)],
        labels: Default::default(),
    };
    let key = conflict.instance_id.clone();
    p.send(BaseRecord::to(&telemetry_topic).key(&key).payload(&conflict_bytes)).unwrap();
    p.send(BaseRecord::to(&telemetry_topic).key("late-1").payload(&codec.encode(&late).unwrap())).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    wait_for("the conflicting and the late record committed", Duration::from_secs(60), &mut e, |_| {
        committed_now(bootstrap, &group, &telemetry_topic) == telemetry_total + 2
    });

    // Every series and sample, with the simulator's values bit for bit; the contradicted
    // sample keeps its first value.
    let mut expected_stored = expected.clone();
    expected_stored.retain(|(instance, _), _| instance != "ancient-1");
    for m in &late.metrics {
        let points = BTreeMap::from([(late.timestamp_ms, m.value)]);
        expected_stored.insert(("late-1".into(), m.name.clone()), ("cache".into(), "session".into(), points));
    }
    let (first, last) = span(&expected_stored);
    let stored = raw(&prom, "augur_telemetry", first, last);
    let mut got = Expected::new();
    for (labels, points) in stored {
        assert_eq!(labels.len(), 5, "labels: {labels:?}");
        let key = (labels["instance"].clone(), labels["metric"].clone());
        got.insert(key, (labels["app_type"].clone(), labels["function"].clone(), points));
    }
    assert_eq!(got.len(), expected_stored.len(), "series in Prometheus vs (instance, metric) pairs produced");
    assert_eq!(got, expected_stored, "samples in Prometheus differ from the telemetry topic");
    let samples: usize = expected_stored.values().map(|(_, _, p)| p.len()).sum();
    eprintln!("{records} records, {} series, {samples} samples round-tripped", got.len());

    // Alerts as series: confidence at window end, and the anomaly score where there is one.
    let alert_series = raw(&prom, "augur_alert", end - 600_000, end);
    assert_eq!(alert_series.len(), 2, "{alert_series:?}");
    for a in &alerts {
        let (labels, points) = alert_series.iter().find(|(l, _)| l["instance"] == a.instance_id).unwrap();
        assert_eq!(labels["kind"], a.kind.name());
        assert_eq!(labels.get("signature"), a.signature.as_ref());
        assert_eq!(points, &BTreeMap::from([(a.window_end_ms, a.confidence)]));
    }
    let scores = raw(&prom, "augur_anomaly_score", end - 600_000, end);
    assert_eq!(scores.len(), 1);
    assert_eq!(scores.values().next().unwrap(), &BTreeMap::from([(end, 83.5)]));

    // Every query of the Grafana dashboard finds data for an instance with an alert.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo_root().join("k8s/dashboards/augur.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<&str> =
        dashboard["panels"].as_array().unwrap().iter().map(|p| p["targets"][0]["expr"].as_str().unwrap()).collect();
    exprs.extend(dashboard["annotations"]["list"].as_array().unwrap().iter().filter_map(|a| a["expr"].as_str()));
    assert_eq!(exprs.len(), 4, "{exprs:?}");
    for expr in exprs {
        let q = expr.replace("$instance", &first_instance).replace("$metric", mn::CPU_UTILIZATION);
        assert!(!prom.query(&q, end as f64 / 1000.0).is_empty(), "dashboard query {q} finds nothing");
    }

    // The two undecodable records and the refused one, with reasons and their source.
    let letters: Vec<(DeadLetter, BTreeMap<String, String>)> = common::read_all(bootstrap, &format!("{prefix}.dlq"))
        .iter()
        .map(|m| {
            let headers = m.headers().expect("dead letters carry headers");
            let headers = headers
                .iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect();
            (Codec::<DeadLetter>::new().decode(m.payload().unwrap()).unwrap(), headers)
        })
        .collect();
    assert_eq!(letters.len(), 4, "{letters:?}");
    for (d, headers) in &letters {
        assert_eq!(d.stage, "export");
        assert_eq!(d.source_topic, telemetry_topic);
        assert_eq!(headers["augur.reason"], d.reason);
        assert_eq!(headers["augur.source.topic"], telemetry_topic);
        assert_eq!(headers["augur.source.partition"], d.source_partition.to_string());
        assert_eq!(headers["augur.source.offset"], d.source_offset.to_string());
    }
    let undecodable = letters.iter().filter(|(d, _)| d.reason.contains("undecodable telemetry")).count();
    assert_eq!(undecodable, 2, "{letters:?}");
    let (refused, _) = letters.iter().find(|(d, _)| d.key.as_deref() == Some(&b"ancient-1"[..])).expect("refused");
    assert!(refused.reason.contains("too old sample"), "{}", refused.reason);
    assert_eq!(refused.payload.as_deref(), Some(ancient_bytes.as_slice()));
    let (refused, _) =
        letters.iter().find(|(d, _)| d.payload.as_deref() == Some(&conflict_bytes[..])).expect("conflict");
    assert!(refused.reason.contains("HTTP 400") && refused.reason.contains("duplicate sample"), "{}", refused.reason);

    let m = e.metrics();
    assert_eq!(m.get("augur_export_dead_letters_total"), Some(&4.0), "{m:?}");
    assert_eq!(m.get("augur_export_records_in_total"), Some(&((telemetry_total + 2 + 2) as f64)), "{m:?}");
    // Telemetry samples, plus two alert confidences and one anomaly score.
    assert_eq!(m.get("augur_export_samples_out_total"), Some(&((samples + 3) as f64)), "{m:?}");
    e.terminate();
}

#[test]
fn sigkill_mid_run_and_restart_store_every_sample_exactly_once() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("export");
    let group = common::unique("g");
    let prom = Prometheus::start();
    let records = simulate(bootstrap, &prefix, 30, "2h", 5) as i64;
    let topic = format!("{prefix}.telemetry");
    let extra = ["--batch-max", "200"];

    let mut e = Exporter::start(bootstrap, &prefix, &group, &prom.remote_write_url(), &extra);
    let mut at_kill = 0;
    wait_for("a first batch committed", Duration::from_secs(60), &mut e, |_| {
        at_kill = committed_now(bootstrap, &group, &topic);
        at_kill > 0
    });
    e.kill();
    eprintln!("killed at {at_kill} of {records} committed records");
    assert!(at_kill < records, "the exporter finished ({at_kill} of {records}) before it could be killed mid-run");
    let stored_at_kill = count_samples(&prom, now_ms() - 3 * 3_600_000, now_ms());

    let mut e = Exporter::start(bootstrap, &prefix, &group, &prom.remote_write_url(), &extra);
    wait_for("every record committed after the restart", Duration::from_secs(300), &mut e, |_| {
        committed_now(bootstrap, &group, &topic) == records
    });
    e.terminate();

    let expected = telemetry(bootstrap, &prefix);
    let (first, last) = span(&expected);
    let samples: u64 = expected.values().map(|(_, _, p)| p.len() as u64).sum();
    eprintln!(
        "killed at {at_kill} of {records} committed records ({stored_at_kill} samples stored); {samples} samples"
    );
    assert_eq!(count_samples(&prom, first, last), samples, "samples in Prometheus vs samples produced");
    let (at, range) = window(first, last);
    let series = prom.query(&format!("count(count_over_time(augur_telemetry[{range}]))"), at);
    assert_eq!(series[0]["value"][1].as_str().unwrap().parse::<usize>().unwrap(), expected.len());

    // Whether the kill fell between a write and its commit is down to timing; a second
    // group re-sends every record for certain, and the database still holds each once.
    let again = common::unique("g");
    let mut e = Exporter::start(bootstrap, &prefix, &again, &prom.remote_write_url(), &extra);
    wait_for("every record re-sent by a second group", Duration::from_secs(300), &mut e, |_| {
        committed_now(bootstrap, &again, &topic) == records
    });
    e.terminate();
    assert_eq!(count_samples(&prom, first, last), samples, "re-sent samples were stored twice");
}

#[test]
fn database_outage_is_waited_out_without_loss_and_shows_as_lag() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("export");
    let group = common::unique("g");
    let prom = Prometheus::start();
    let topic = format!("{prefix}.telemetry");
    let mut e = Exporter::start(bootstrap, &prefix, &group, &prom.remote_write_url(), &["--max-backoff", "300ms"]);
    wait_for("the exporter ready", Duration::from_secs(60), &mut e, |e| {
        e.get("/readyz").is_some_and(|(s, _)| s == 200)
    });

    prom.stop();
    let records = simulate(bootstrap, &prefix, 5, "20m", 9) as i64;
    let mut seen = BTreeMap::new();
    wait_for("retries and lag visible in the exporter's metrics", Duration::from_secs(60), &mut e, |e| {
        seen = e.metrics();
        seen.get("augur_export_retries_total").is_some_and(|&r| r >= 3.0)
            && seen.get("augur_export_consumer_lag_records").is_some_and(|&l| l > 0.0)
    });
    eprintln!("during the outage: {seen:?}");
    assert_eq!(e.get("/readyz").map(|(s, _)| s), Some(503), "not ready while the database is down");
    assert_eq!(committed_now(bootstrap, &group, &topic), 0, "nothing may be committed while the database is down");
    assert!(seen["augur_export_consumer_lag_records"] <= records as f64);

    prom.restart();
    wait_for("every record committed after the outage", Duration::from_secs(120), &mut e, |_| {
        committed_now(bootstrap, &group, &topic) == records
    });
    wait_for("lag back to zero", Duration::from_secs(30), &mut e, |e| {
        e.metrics().get("augur_export_consumer_lag_records") == Some(&0.0)
    });
    assert_eq!(e.get("/readyz").map(|(s, _)| s), Some(200));
    e.terminate();

    let expected = telemetry(bootstrap, &prefix);
    let (first, last) = span(&expected);
    let samples: u64 = expected.values().map(|(_, _, p)| p.len() as u64).sum();
    assert_eq!(count_samples(&prom, first, last), samples, "samples in Prometheus vs samples produced");
    assert_eq!(raw(&prom, "augur_telemetry", first, last).len(), expected.len());
}

#[test]
fn a_wrong_endpoint_stops_the_exporter_with_nothing_committed() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("export");
    let group = common::unique("g");
    let prom = Prometheus::start();
    simulate(bootstrap, &prefix, 2, "5m", 1);
    // Prometheus answers 404 here: a typo in the URL, not bad data for the DLQ.
    let wrong = format!("{}/api/v1/wrong", prom.url());
    let mut e = Exporter::start(bootstrap, &prefix, &group, &wrong, &[]);
    let status = e.child().wait().unwrap();
    assert!(!status.success(), "the exporter should stop on a 404");
    assert_eq!(committed_now(bootstrap, &group, &format!("{prefix}.telemetry")), 0);
    let dlq = common::read_all(bootstrap, &format!("{prefix}.dlq"));
    assert!(dlq.is_empty(), "a wrong URL sent {} records to the DLQ", dlq.len());
}

#[test]
fn bad_flags_are_refused_up_front() {
    let out = common::augur()
        .args(["export", "--brokers", "127.0.0.1:1", "--remote-write-url", "https://mimir/api/v1/push"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https is not supported"), "{out:?}");

    // The metrics address is taken: the command fails before it touches Kafka.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = common::augur()
        .args(["export", "--brokers", "127.0.0.1:1", "--remote-write-url", "http://127.0.0.1:1/api/v1/write"])
        .args(["--metrics-addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
}
