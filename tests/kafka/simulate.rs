//! `augur simulate` against the real broker: every record arrives, decodes, is keyed by
//! its instance, and each instance's sequence has no gap; `augur tail` reads them back.

use std::collections::BTreeMap;

use augur::codec::{Codec, TelemetrySample};
use rdkafka::message::Message;

use crate::common;

#[test]
fn simulated_fleet_arrives_whole_keyed_and_in_sequence() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("sim");
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.jsonl");
    let out = common::run_ok(common::augur().args([
        "simulate",
        "--brokers",
        bootstrap,
        "--topic-prefix",
        &prefix,
        "--instances",
        "12",
        "--duration",
        "30m",
        "--interval",
        "10s",
        "--seed",
        "7",
        "--speed",
        "max",
        "--failure-fraction",
        "0.5",
        "--ground-truth",
        truth.to_str().unwrap(),
    ]));
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().last().unwrap()).unwrap();
    let produced = summary["records"].as_u64().expect("summary.records");
    assert!(produced > 0);

    let codec = Codec::<TelemetrySample>::new();
    let messages = common::read_all(bootstrap, &format!("{prefix}.telemetry"));
    assert_eq!(messages.len() as u64, produced, "records read back differ from records produced");

    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &messages {
        let sample = codec.decode(m.payload().expect("payload")).expect("every record decodes");
        let key = std::str::from_utf8(m.key().expect("key")).unwrap();
        assert_eq!(key, sample.instance_id, "record key is the instance id");
        assert_eq!(m.timestamp().to_millis(), Some(sample.timestamp_ms), "Kafka timestamp is the sample's event time");
        seqs.entry(sample.instance_id).or_default().push(sample.seq);
    }
    assert_eq!(seqs.len(), 12, "every instance reported");
    for (instance, seq) in &mut seqs {
        // One instance lives on one partition, so Kafka keeps its order.
        let expected: Vec<i64> = (0..seq.len() as i64).collect();
        assert_eq!(*seq, expected, "{instance}: sequence numbers have gaps or disorder");
    }

    // Ground truth: one JSON object per injected failure, naming a simulated instance.
    let truth = std::fs::read_to_string(&truth).unwrap();
    let failures: Vec<serde_json::Value> = truth.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!failures.is_empty(), "half the fleet should have had a failure injected");
    for f in &failures {
        let instance = f["instance"].as_str().unwrap();
        assert!(seqs.contains_key(instance), "ground truth names unknown instance {instance}");
        assert!(f["onset_ms"].as_i64().unwrap() > 0);
        assert!(f["kind"].is_string());
    }

    // The same records through `augur tail`.
    let tail = common::run_ok(common::augur().args([
        "tail",
        "telemetry",
        "--from-beginning",
        "--max",
        &produced.to_string(),
        "--brokers",
        bootstrap,
        "--topic-prefix",
        &prefix,
    ]));
    let lines = String::from_utf8(tail.stdout).unwrap();
    assert_eq!(lines.lines().count() as u64, produced);
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(seqs.contains_key(v["instance_id"].as_str().unwrap()));
    }
}
