//! `augur signatures` against the real broker: import, list and delete through the
//! binary, a table that follows the topic live, the starter library, and a signature
//! extracted from one simulated incident that recognises a later one on another
//! instance and stays quiet on healthy instances.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use augur::codec::{Codec, FailureSignature, Normalisation, TelemetrySample};
use augur::kafka::reader::{self, Start};
use augur::kafka::{Cluster, KafkaConfig};
use augur::signatures::extract::confidence_against;
use augur::signatures::{key, SignatureTable};
use augur::window::features;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::common;

fn signature(name: &str, threshold: f64) -> FailureSignature {
    FailureSignature {
        name: name.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        failure_kind: "memory_leak".into(),
        metrics: vec![features::MEMORY_UTILIZATION.into(), "psi_memory_some_ratio".into()],
        normalisation: vec![Normalisation::Level, Normalisation::Level],
        series: vec![(0..32).map(|t| f64::from(600 + 10 * t) / 1000.0).collect(), vec![0.05; 32]],
        interval_ms: 10_000,
        threshold,
        lead_ms: 300_000,
        source: "tests/kafka/signatures.rs".into(),
    }
}

fn signatures_cli(prefix: &str, args: &[&str]) -> std::process::Command {
    let mut c = common::augur();
    c.arg("signatures").args(args).args(["--brokers", common::bootstrap(), "--topic-prefix", prefix]);
    c
}

fn stdout_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// Polls the table until `done` holds, failing after 60 s.
async fn wait_for(table: &SignatureTable, what: &str, done: impl Fn(&SignatureTable) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(table) {
        assert!(Instant::now() < deadline, "the table never saw {what} (version {})", table.version());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn import_list_delete_through_the_cli_and_a_table_follows_live() {
    let prefix = common::unique("sig");
    let config = KafkaConfig {
        brokers: Some(common::bootstrap().to_owned()),
        topic_prefix: prefix.clone(),
        ..Default::default()
    };
    let cluster = Cluster::open(&config).unwrap();
    let table = SignatureTable::follow(&cluster, CancellationToken::new()).await.unwrap();
    assert!(table.snapshot().is_empty());
    let v0 = table.version();

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (signature("leak-a", 0.8), signature("leak-b", 0.7));
    std::fs::write(dir.path().join("a.json"), serde_json::to_string(&a).unwrap()).unwrap();
    std::fs::write(dir.path().join("b.json"), serde_json::to_string(&b).unwrap()).unwrap();
    let out = common::run_ok(&mut signatures_cli(&prefix, &["import", dir.path().to_str().unwrap()]));
    assert_eq!(stdout_lines(&out)[0]["imported"], 2);
    wait_for(&table, "the import", |t| t.snapshot().len() == 2).await;
    assert!(table.version() >= v0 + 2);
    assert_eq!(table.snapshot()["web/checkout/leak-a"], a, "the table holds the signature as imported");

    let out = common::run_ok(&mut signatures_cli(&prefix, &["list"]));
    let listed = stdout_lines(&out);
    let keys: Vec<&str> = listed.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["web/checkout/leak-a", "web/checkout/leak-b"]);
    assert_eq!(listed[1]["threshold"], 0.7);
    assert_eq!(listed[0]["points"], 32);
    assert_eq!(listed[0]["interval_ms"], 10_000);
    assert_eq!(listed[0]["failure_kind"], "memory_leak");
    assert_eq!(listed[0]["metrics"][0], features::MEMORY_UTILIZATION);
    assert_eq!(listed[0]["source"], "tests/kafka/signatures.rs");

    // All or nothing: one bad file refuses the whole import, naming file and field.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("1.json"), serde_json::to_string(&signature("leak-c", 0.8)).unwrap()).unwrap();
    std::fs::write(bad.path().join("2.json"), serde_json::to_string(&signature("leak-d", 1.5)).unwrap()).unwrap();
    let out = signatures_cli(&prefix, &["import", bad.path().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2.json:1:1") && stderr.contains("threshold"), "{stderr}");
    assert_eq!(stdout_lines(&common::run_ok(&mut signatures_cli(&prefix, &["list"]))).len(), 2);

    let before = table.version();
    let out = common::run_ok(&mut signatures_cli(&prefix, &["delete", "web/checkout/leak-a"]));
    assert_eq!(stdout_lines(&out)[0]["deleted"], "web/checkout/leak-a");
    wait_for(&table, "the delete", |t| !t.snapshot().contains_key("web/checkout/leak-a")).await;
    assert!(table.version() > before);
    assert_eq!(table.snapshot().keys().collect::<Vec<_>>(), vec!["web/checkout/leak-b"]);
    assert!(!table.snapshot().contains_key("web/checkout/leak-c"), "the refused import wrote nothing");
    let listed = stdout_lines(&common::run_ok(&mut signatures_cli(&prefix, &["list"])));
    assert_eq!(listed.len(), 1);

    let out = signatures_cli(&prefix, &["delete", "web/checkout/nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no signature \"web/checkout/nope\""));
}

#[test]
fn import_without_a_path_imports_the_starter_library() {
    let prefix = common::unique("sig-starter");
    let out = common::run_ok(&mut signatures_cli(&prefix, &["import"]));
    let imported = stdout_lines(&out)[0]["imported"].as_u64().unwrap();
    let on_disk = std::fs::read_dir(common::repo_root().join("models/signatures"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count() as u64;
    assert_eq!(imported, on_disk);
    let listed = stdout_lines(&common::run_ok(&mut signatures_cli(&prefix, &["list"])));
    assert_eq!(listed.len() as u64, on_disk);
    for app in ["web", "database", "cache", "worker"] {
        for kind in ["memory_leak", "cpu_saturation", "latency_creep", "error_burst", "io_stall"] {
            let k = format!("{app}/*/{kind}");
            assert!(listed.iter().any(|l| l["key"] == k.as_str()), "{k} missing from the starter library");
        }
    }
}

/// Every sample of each instance on the topic, in time order.
fn samples_by_instance(prefix: &str) -> BTreeMap<String, Vec<TelemetrySample>> {
    let codec = Codec::<TelemetrySample>::new();
    let mut by: BTreeMap<String, Vec<TelemetrySample>> = BTreeMap::new();
    for m in common::read_all(common::bootstrap(), &format!("{prefix}.telemetry")) {
        let s = codec.decode(m.payload().unwrap()).unwrap();
        by.entry(s.instance_id.clone()).or_default().push(s);
    }
    by.values_mut().for_each(|v| v.sort_by_key(|s| s.timestamp_ms));
    by
}

/// The window the detector would see: the signature's metrics on 64 steps of 10 s
/// ending at `end_ms`, gaps filled for at most 3 steps (time-major).
fn window(samples: &[TelemetrySample], metrics: &[String], end_ms: i64) -> Vec<f64> {
    let rows: Vec<(i64, Vec<f64>)> =
        samples.iter().map(|s| (s.timestamp_ms, metrics.iter().map(|m| features::value(s, m)).collect())).collect();
    let rows: Vec<(i64, &[f64])> = rows.iter().map(|(t, v)| (*t, v.as_slice())).collect();
    features::grid(&rows, metrics.len(), end_ms, 10_000, 64, 3).0
}

#[test]
fn an_extracted_signature_recognises_a_later_incident_and_not_healthy_instances() {
    let prefix = common::unique("sig-extract");
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.jsonl");
    // Midnight UTC yesterday: the same time of day (so the same telemetry) on every
    // run, and recent enough that the broker's retention keeps it.
    let day = 86_400_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let start = (now / day - 1) * day;
    common::run_ok(common::augur().args([
        "simulate",
        "--brokers",
        common::bootstrap(),
        "--topic-prefix",
        &prefix,
        "--instances",
        "40",
        "--duration",
        "4h",
        "--seed",
        "11",
        "--start",
        &start.to_string(),
        "--failure-fraction",
        "0.5",
        "--kinds",
        "memory_leak",
        "--ground-truth",
        truth_path.to_str().unwrap(),
    ]));
    let truth: Vec<serde_json::Value> =
        std::fs::read_to_string(&truth_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let injected: Vec<&str> = truth.iter().map(|g| g["instance"].as_str().unwrap()).collect();
    // Leaks that happened, by app type, in time order.
    let mut leaks: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for g in &truth {
        if let Some(f) = g["failure_ms"].as_i64() {
            leaks.entry(g["app_type"].as_str().unwrap()).or_default().push((f, g["instance"].as_str().unwrap()));
        }
    }
    leaks.values_mut().for_each(|v| v.sort());
    // The source: the earliest leak with a full 30 min baseline before its window, of
    // the app type with the most leaks; the targets: that type's later leaks.
    let (app, incidents) = leaks.iter().max_by_key(|(_, v)| v.len()).unwrap();
    let lead = 300_000;
    let room = 1_800_000 + 640_000 + lead;
    let at = incidents.iter().position(|(f, _)| f - start >= room).expect("a leak with a full baseline");
    let (until, source) = incidents[at];
    let later: Vec<(i64, &str)> = incidents[at + 1..].iter().filter(|(_, i)| *i != source).copied().collect();
    assert!(!later.is_empty(), "seed 11 gives {app} more than one leak: {incidents:?}");

    let file = dir.path().join("leak.json");
    let out = common::run_ok(&mut signatures_cli(
        &prefix,
        &[
            "extract",
            "--instance",
            source,
            "--until",
            &until.to_string(),
            "--lead",
            "5m",
            "--kind",
            "memory_leak",
            "--name",
            "leak",
            "--function",
            "*",
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    let summary = &stdout_lines(&out)[0];
    let sig: FailureSignature = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(key(&sig), format!("{app}/*/leak"));
    assert_eq!(summary["key"], key(&sig).as_str());
    assert_eq!((sig.series[0].len(), sig.interval_ms, sig.lead_ms), (64, 10_000, lead));
    assert!(sig.metrics.iter().any(|m| m == features::MEMORY_UTILIZATION), "{:?}", sig.metrics);
    let calibration = &summary["calibration"];
    assert!(calibration["windows"].as_u64().unwrap() > 100, "{summary}");
    assert!(calibration["separates"].as_bool().unwrap(), "{summary}");
    assert!(sig.threshold >= 0.5 && sig.threshold <= 0.95);

    // The series is the source's own window: it scores 1 there.
    let telemetry = samples_by_instance(&prefix);
    let own = confidence_against(&sig, &window(&telemetry[source], &sig.metrics, until - lead)).unwrap();
    assert!(own > 0.999, "{own}");

    // A later leak on another instance, cut the same way, is recognised before it fails.
    let scores: Vec<(&str, f64)> = later
        .iter()
        .map(|(f, i)| (*i, confidence_against(&sig, &window(&telemetry[*i], &sig.metrics, f - lead)).unwrap_or(0.0)))
        .collect();
    let recognised = scores.iter().filter(|(_, c)| *c >= sig.threshold).count();
    assert!(
        recognised * 2 >= scores.len(),
        "only {recognised} of {} later leaks reach the threshold {}: {scores:?}",
        scores.len(),
        sig.threshold
    );

    // Instances without a failure never reach it, at any minute of the run.
    let mut healthy_windows = 0;
    for (id, samples) in telemetry.iter().filter(|(id, s)| s[0].app_type == *app && !injected.contains(&id.as_str())) {
        let mut end = start + 640_000;
        while end <= samples.last().unwrap().timestamp_ms {
            if let Some(c) = confidence_against(&sig, &window(samples, &sig.metrics, end)) {
                healthy_windows += 1;
                assert!(c < sig.threshold, "healthy {id} scores {c} at {end}, threshold {}", sig.threshold);
            }
            end += 60_000;
        }
    }
    assert!(healthy_windows > 500, "{healthy_windows}");

    // Import it and read it back from the table as written.
    common::run_ok(&mut signatures_cli(&prefix, &["import", file.to_str().unwrap()]));
    let listed = stdout_lines(&common::run_ok(&mut signatures_cli(&prefix, &["list"])));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["threshold"], serde_json::json!(sig.threshold));
    // The import is a transaction: read committed records past its commit marker.
    let codec = Codec::<FailureSignature>::new();
    let mut records = Vec::new();
    let config = Cluster::open(&KafkaConfig { brokers: Some(common::bootstrap().to_owned()), ..Default::default() })
        .unwrap()
        .client_config();
    reader::read_to_end(&config, &format!("{prefix}.signatures"), Start::Beginning, |m| {
        records.push((m.key().map(<[u8]>::to_vec), codec.decode(m.payload().unwrap()).unwrap()));
    })
    .unwrap();
    assert_eq!(records, vec![(Some(key(&sig).into_bytes()), sig)]);
}
