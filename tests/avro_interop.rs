//! A second, independent Avro implementation (Python fastavro, from PyPI) decodes what
//! Augur writes, given only `schemas/*.avsc`: the wire contract is Avro, not Augur's.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use augur::codec::*;

fn framed<T: Record>(record: &T, out: &mut Vec<u8>) -> (String, serde_json::Value) {
    let bytes = Codec::<T>::new().encode(record).unwrap();
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    let name = serde_json::from_str::<serde_json::Value>(T::SCHEMA).unwrap()["name"].as_str().unwrap().to_owned();
    (name, serde_json::to_value(record).unwrap())
}

#[test]
fn fastavro_decodes_every_record_type_from_the_schema_files_alone() {
    let mut file = Vec::new();
    let mut expected = vec![
        framed(
            &TelemetrySample {
                instance_id: "web-checkout-0001".into(),
                app_type: "web".into(),
                function: "checkout".into(),
                seq: 7,
                timestamp_ms: 1_795_000_000_123,
                metrics: vec![
                    Metric::new(metric_names::CPU_UTILIZATION, 0.25),
                    Metric::new(metric_names::MEMORY_USED, 3.5e8),
                ],
                labels: BTreeMap::from([("zone".into(), "b".into())]),
            },
            &mut file,
        ),
        framed(
            &Alert {
                id: "alert-1".into(),
                instance_id: "web-checkout-0001".into(),
                app_type: "web".into(),
                function: "checkout".into(),
                kind: AlertKind::Anomaly,
                window_start_ms: 1_795_000_000_000,
                window_end_ms: 1_795_000_640_000,
                signature: Some("web/*/memory_leak".into()),
                confidence: 0.83,
                runner_up: None,
                runner_up_confidence: 0.0,
                explanation: vec![MetricContribution { metric: "memory_used_bytes".into(), distance: 1.5, share: 0.7 }],
                anomaly_score: Some(88.5),
                model_version: Some("v3".into()),
                source_partition: 2,
                source_offset: 1234,
            },
            &mut file,
        ),
        framed(
            &Adjustment {
                id: "adj-1".into(),
                alert_id: "alert-1".into(),
                instance_id: "web-checkout-0001".into(),
                app_type: "web".into(),
                function: "checkout".into(),
                action: Action::Resize,
                cpu_factor: 1.25,
                memory_factor: 1.15,
                replicas_delta: 0,
                shed_fraction: 0.0,
                tier: 2,
                reason: "score 88.5 in 71-90".into(),
                dry_run: true,
                event_time_ms: 1_795_000_640_000,
            },
            &mut file,
        ),
        framed(
            &Actuation {
                adjustment_id: "adj-1".into(),
                instance_id: "web-checkout-0001".into(),
                app_type: "web".into(),
                function: "checkout".into(),
                action: "RESIZE".into(),
                backend: "log".into(),
                result: ActuationResult::Refused,
                detail: "cooldown".into(),
                cpu_millis: None,
                memory_bytes: Some(1_073_741_824),
                replicas: None,
                attempts: 1,
                event_time_ms: 1_795_000_640_000,
                applied_at_ms: 1_795_000_650_001,
            },
            &mut file,
        ),
        framed(
            &FailureSignature {
                name: "memory_leak".into(),
                app_type: "web".into(),
                function: "*".into(),
                failure_kind: "memory_leak".into(),
                metrics: vec!["memory_used_bytes".into()],
                normalisation: vec![Normalisation::Level],
                series: vec![vec![0.1, 0.2, 0.4]],
                interval_ms: 10_000,
                threshold: 0.8,
                lead_ms: 120_000,
                source: "extracted".into(),
            },
            &mut file,
        ),
        framed(
            &FeedbackOutcome {
                adjustment_id: "adj-1".into(),
                instance_id: "web-checkout-0001".into(),
                app_type: "web".into(),
                signature: None,
                action: "RESIZE".into(),
                score_before: Some(88.5),
                score_after: Some(20.0),
                confidence_before: 0.8,
                confidence_after: 0.1,
                failed: false,
                verdict: Verdict::Helped,
                horizon_ms: 600_000,
                event_time_ms: 1_795_001_240_000,
            },
            &mut file,
        ),
        framed(
            &ModelAnnouncement {
                app_type: "web".into(),
                version: "v3".into(),
                uri: "models/web/v3/".into(),
                sha256: "ab".repeat(32),
                features: vec!["cpu_utilization_ratio".into()],
                trained_from_ms: 1_794_000_000_000,
                trained_to_ms: 1_795_000_000_000,
                validation: BTreeMap::from([("p99_normal_score".into(), 12.0)]),
                created_ms: 1_795_000_000_500,
                effective_from_ms: 1_795_000_060_000,
            },
            &mut file,
        ),
        framed(
            &DeadLetter {
                reason: "unknown schema fingerprint".into(),
                stage: "detect".into(),
                source_topic: "augur.telemetry".into(),
                source_partition: 0,
                source_offset: 5,
                key: Some(b"k".to_vec()),
                payload: Some(vec![0, 255, 7]),
                event_time_ms: 1_795_000_000_000,
            },
            &mut file,
        ),
    ];

    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records.bin");
    std::fs::write(&records, &file).unwrap();
    let python = common::python_with(&["fastavro"]);
    let out = common::run_ok(
        Command::new(python)
            .arg(common::repo_root().join("tests/interop/decode.py"))
            .arg(common::repo_root().join("schemas"))
            .arg(&records),
    );
    let decoded: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(decoded.len(), expected.len(), "fastavro decoded a different number of records");
    for (got, (name, record)) in decoded.into_iter().zip(expected.drain(..)) {
        assert_eq!(got["schema"], serde_json::Value::String(format!("augur.{name}")), "schema chosen by fingerprint");
        assert_eq!(got["record"], record, "fastavro's reading of {name} differs from what Augur wrote");
    }
}
