use std::collections::BTreeMap;

use super::*;

fn sample() -> TelemetrySample {
    TelemetrySample {
        instance_id: "web-0007".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        seq: 42,
        timestamp_ms: 1_795_000_000_000,
        metrics: vec![Metric::new("cpu_utilization_ratio", 0.37), Metric::new("memory_used_bytes", 1.5e9)],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
    }
}

#[test]
fn crc64_avro_fingerprint_matches_the_specification() {
    // The Avro specification's test vector: fingerprint64("\"null\"") = 7195948357588979594.
    let null = Schema::parse_str("\"null\"").unwrap();
    assert_eq!(fingerprint(&null) as i64, 7195948357588979594);
}

#[test]
fn every_shipped_schema_round_trips_a_record() {
    let t = sample();
    let c = Codec::<TelemetrySample>::new();
    assert_eq!(c.decode(&c.encode(&t).unwrap()).unwrap(), t);

    let alert = Alert {
        id: "a-1".into(),
        instance_id: "web-0007".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        kind: AlertKind::Signature,
        window_start_ms: 1,
        window_end_ms: 2,
        signature: Some("web/*/memory_leak".into()),
        confidence: 0.9,
        runner_up: None,
        runner_up_confidence: 0.1,
        explanation: vec![MetricContribution { metric: "memory_used_bytes".into(), distance: 0.2, share: 0.8 }],
        anomaly_score: Some(77.0),
        model_version: None,
        source_partition: 3,
        source_offset: 99,
    };
    let c = Codec::<Alert>::new();
    assert_eq!(c.decode(&c.encode(&alert).unwrap()).unwrap(), alert);

    let adj = Adjustment {
        id: "j-1".into(),
        alert_id: "a-1".into(),
        instance_id: "web-0007".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        action: Action::ScaleOut,
        cpu_factor: 1.25,
        memory_factor: 1.15,
        replicas_delta: 1,
        shed_fraction: 0.0,
        tier: 2,
        reason: "tier 2".into(),
        dry_run: false,
        event_time_ms: 2,
    };
    let c = Codec::<Adjustment>::new();
    assert_eq!(c.decode(&c.encode(&adj).unwrap()).unwrap(), adj);

    let act = Actuation {
        adjustment_id: "j-1".into(),
        instance_id: "web-0007".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        action: "RESIZE".into(),
        backend: "sim".into(),
        result: ActuationResult::Duplicate,
        detail: "fence present".into(),
        cpu_millis: Some(1250),
        memory_bytes: None,
        replicas: None,
        attempts: 2,
        event_time_ms: 2,
        applied_at_ms: 3,
    };
    let c = Codec::<Actuation>::new();
    assert_eq!(c.decode(&c.encode(&act).unwrap()).unwrap(), act);

    let sig = FailureSignature {
        name: "memory_leak".into(),
        app_type: "web".into(),
        function: "*".into(),
        failure_kind: "memory_leak_oom".into(),
        metrics: vec!["memory_used_bytes".into(), "psi_memory_some_ratio".into()],
        normalisation: vec![Normalisation::Level, Normalisation::Shape],
        series: vec![vec![1.0, 2.0], vec![0.1, 0.2]],
        interval_ms: 10_000,
        threshold: 0.8,
        lead_ms: 60_000,
        source: "web-0001 before 2026-11-22T10:00:00Z".into(),
    };
    let c = Codec::<FailureSignature>::new();
    assert_eq!(c.decode(&c.encode(&sig).unwrap()).unwrap(), sig);

    let fb = FeedbackOutcome {
        adjustment_id: "j-1".into(),
        instance_id: "web-0007".into(),
        app_type: "web".into(),
        signature: None,
        action: "RESIZE".into(),
        score_before: Some(80.0),
        score_after: None,
        confidence_before: 0.9,
        confidence_after: 0.2,
        failed: false,
        verdict: Verdict::Helped,
        horizon_ms: 600_000,
        event_time_ms: 5,
    };
    let c = Codec::<FeedbackOutcome>::new();
    assert_eq!(c.decode(&c.encode(&fb).unwrap()).unwrap(), fb);

    let evidence = WindowEvidence {
        instance_id: "web-0007".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        window_end_ms: 1_800_000,
        anomaly_score: Some(42.0),
        tier: 1,
        model_version: Some("1".into()),
        signature: Some("web/*/memory_leak".into()),
        confidence: 0.61,
        threshold: 0.7,
    };
    let c = Codec::<WindowEvidence>::new();
    assert_eq!(c.decode(&c.encode(&evidence).unwrap()).unwrap(), evidence);

    let tuned = TunedValue {
        key: "threshold/web/*/memory_leak".into(),
        app_type: "web".into(),
        default_value: 0.7,
        floor: 0.4,
        ceiling: 0.95,
        steps: vec![TunedStep { from_ms: 60_000, value: 0.65, reason: "missed web-0003".into() }],
    };
    let c = Codec::<TunedValue>::new();
    assert_eq!(c.decode(&c.encode(&tuned).unwrap()).unwrap(), tuned);

    let model = ModelAnnouncement {
        app_type: "web".into(),
        version: "20261122T1000".into(),
        uri: "models/web/20261122T1000/".into(),
        sha256: "00".into(),
        features: vec!["cpu_utilization_ratio".into()],
        trained_from_ms: 1,
        trained_to_ms: 2,
        validation: BTreeMap::from([("loss".into(), 0.01)]),
        created_ms: 3,
        effective_from_ms: 4,
    };
    let c = Codec::<ModelAnnouncement>::new();
    assert_eq!(c.decode(&c.encode(&model).unwrap()).unwrap(), model);

    let dl = DeadLetter {
        reason: "NaN in cpu_utilization_ratio".into(),
        stage: "detect".into(),
        source_topic: "augur.telemetry".into(),
        source_partition: 1,
        source_offset: 7,
        key: Some(b"web-0007".to_vec()),
        payload: Some(vec![0xC3, 0x01, 0xFF]),
        event_time_ms: 9,
    };
    let c = Codec::<DeadLetter>::new();
    assert_eq!(c.decode(&c.encode(&dl).unwrap()).unwrap(), dl);
}

#[test]
fn frames_start_with_magic_and_the_writer_fingerprint() {
    let c = Codec::<TelemetrySample>::new();
    let bytes = c.encode(&sample()).unwrap();
    assert_eq!(bytes[..2], MAGIC);
    assert_eq!(peek_fingerprint(&bytes).unwrap(), c.fingerprint());
}

#[test]
fn garbage_is_refused_with_the_reason() {
    let c = Codec::<TelemetrySample>::new();
    let short = c.decode(b"abc").unwrap_err();
    assert!(matches!(short, CodecError::TooShort { len: 3 }), "{short}");
    assert!(short.to_string().contains("shorter than the 10-byte"));

    let magic = c.decode(b"{\"json\": \"not avro\"}").unwrap_err();
    assert!(matches!(magic, CodecError::BadMagic { .. }), "{magic}");
    assert!(magic.to_string().contains("expected [c3, 01]"));
}

#[test]
fn unknown_fingerprint_is_refused_and_named() {
    let c = Codec::<TelemetrySample>::new();
    let alert_bytes = Codec::<Alert>::new().header.to_vec();
    let err = c.decode(&[alert_bytes, vec![0; 8]].concat()).unwrap_err();
    let fp = Codec::<Alert>::new().fingerprint();
    assert!(matches!(err, CodecError::UnknownFingerprint { fingerprint, .. } if fingerprint == fp));
    assert!(err.to_string().contains(&format!("{fp:016x}")), "{err}");
    assert!(err.to_string().contains("TelemetrySample"), "{err}");
}

#[test]
fn truncated_and_padded_bodies_are_refused() {
    let c = Codec::<TelemetrySample>::new();
    let bytes = c.encode(&sample()).unwrap();
    for cut in HEADER_LEN..bytes.len() {
        assert!(c.decode(&bytes[..cut]).is_err(), "decoded a record cut at {cut} of {}", bytes.len());
    }
    let padded = [bytes.clone(), vec![0]].concat();
    assert!(matches!(c.decode(&padded).unwrap_err(), CodecError::Trailing { trailing: 1, .. }));
}

/// Version 2 of the telemetry schema as a later release might ship it: one added field
/// with a default.
fn telemetry_v2() -> String {
    let mut v: serde_json::Value = serde_json::from_str(TelemetrySample::SCHEMA).unwrap();
    v["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "agent_version", "type": "string", "default": "unknown"}));
    v.to_string()
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct SampleV2 {
    instance_id: String,
    app_type: String,
    function: String,
    seq: i64,
    timestamp_ms: i64,
    metrics: Vec<Metric>,
    labels: BTreeMap<String, String>,
    agent_version: String,
}

impl Record for SampleV2 {
    const SCHEMA: &'static str = "unused: built with with_schema";
    const TOPIC: &'static str = "telemetry";
}

#[test]
fn old_reader_reads_new_writer_and_new_reader_reads_old_writer() {
    let v2 = telemetry_v2();
    let new_writer = Codec::<SampleV2>::with_schema(&v2).unwrap();
    let old_writer = Codec::<TelemetrySample>::new();
    assert_ne!(new_writer.fingerprint(), old_writer.fingerprint());

    let s = sample();
    let new = new_sample_v2();

    // Old reader, new writer: the added field is dropped.
    let old_reader = Codec::<TelemetrySample>::new().with_writer_schema(&v2).unwrap();
    assert_eq!(old_reader.decode(&new_writer.encode(&new).unwrap()).unwrap(), s);

    // New reader, old writer: the added field takes its default.
    let new_reader = Codec::<SampleV2>::with_schema(&v2).unwrap().with_writer_schema(TelemetrySample::SCHEMA).unwrap();
    let read = new_reader.decode(&old_writer.encode(&s).unwrap()).unwrap();
    assert_eq!(read, SampleV2 { agent_version: "unknown".into(), ..new });

    // Without being told of the other version, a reader refuses by fingerprint.
    assert!(matches!(
        Codec::<TelemetrySample>::new().decode(&new_writer.encode(&new_sample_v2()).unwrap()),
        Err(CodecError::UnknownFingerprint { .. })
    ));
}

fn new_sample_v2() -> SampleV2 {
    let s = sample();
    SampleV2 {
        instance_id: s.instance_id,
        app_type: s.app_type,
        function: s.function,
        seq: s.seq,
        timestamp_ms: s.timestamp_ms,
        metrics: s.metrics,
        labels: s.labels,
        agent_version: "2.0".into(),
    }
}

#[test]
fn every_shipped_schema_parses() {
    for schema in [
        TelemetrySample::SCHEMA,
        Alert::SCHEMA,
        Adjustment::SCHEMA,
        Actuation::SCHEMA,
        FailureSignature::SCHEMA,
        FeedbackOutcome::SCHEMA,
        WindowEvidence::SCHEMA,
        TunedValue::SCHEMA,
        ModelAnnouncement::SCHEMA,
        DeadLetter::SCHEMA,
    ] {
        Schema::parse_str(schema).unwrap_or_else(|e| panic!("{e}: {schema}"));
    }
}

#[test]
fn canonical_forms_agree_with_other_avro_implementations() {
    // apache-avro keeps `{"type":"long"}` in the canonical form of a primitive that
    // carried extra attributes (e.g. a logicalType), where the specification and
    // every other implementation reduce it to `"long"`; the fingerprint would then
    // differ. The shipped schemas avoid such attributes; this keeps it so.
    for schema in [
        TelemetrySample::SCHEMA,
        Alert::SCHEMA,
        Adjustment::SCHEMA,
        Actuation::SCHEMA,
        FailureSignature::SCHEMA,
        FeedbackOutcome::SCHEMA,
        WindowEvidence::SCHEMA,
        TunedValue::SCHEMA,
        ModelAnnouncement::SCHEMA,
        DeadLetter::SCHEMA,
    ] {
        let canonical = Schema::parse_str(schema).unwrap().canonical_form();
        for primitive in ["null", "boolean", "int", "long", "float", "double", "bytes", "string"] {
            let wrapped = format!("{{\"type\":\"{primitive}\"}}");
            assert!(!canonical.contains(&wrapped), "{wrapped} in the canonical form of {schema}");
        }
    }
}
