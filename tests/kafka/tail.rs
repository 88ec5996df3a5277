//! `augur tail` prints decodable records and names the reason for each one it skips.

use std::time::Duration;

use augur::codec::{Codec, Metric, TelemetrySample};
use augur::kafka::{Cluster, KafkaConfig, Retention, TopicSpec};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common;

async fn produce(bootstrap: &str, topic: &str, payload: &[u8]) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    producer
        .send(FutureRecord::to(topic).key("web-0001").payload(payload).partition(0), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produce to the test broker");
}

#[tokio::test]
async fn tail_skips_garbage_and_unknown_fingerprints_with_the_reason_and_prints_the_rest() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("tail");
    let config =
        KafkaConfig { brokers: Some(bootstrap.to_owned()), topic_prefix: prefix.clone(), ..Default::default() };
    let cluster = Cluster::open(&config).unwrap();
    let topic = cluster.topic::<TelemetrySample>();
    // One partition, so the order below is the order tail reads.
    cluster
        .ensure_topics(&[TopicSpec { name: topic.clone(), partitions: 1, retention: Retention::Log }])
        .await
        .unwrap();

    let good = TelemetrySample {
        instance_id: "web-0001".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        seq: 0,
        timestamp_ms: 1_795_000_000_000,
        metrics: vec![Metric::new("cpu_utilization_ratio", 0.5)],
        labels: Default::default(),
    };
    let mut unknown = Codec::<TelemetrySample>::new().encode(&good).unwrap();
    unknown[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    produce(bootstrap, &topic, b"\x00\x01garbage that is not avro").await;
    produce(bootstrap, &topic, &unknown).await;
    produce(bootstrap, &topic, &Codec::<TelemetrySample>::new().encode(&good).unwrap()).await;

    let out = common::run_ok(common::augur().args([
        "tail",
        "telemetry",
        "--from-beginning",
        "--max",
        "1",
        "--brokers",
        bootstrap,
        "--topic-prefix",
        &prefix,
    ]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}");
    assert_eq!(lines[0]["instance_id"], "web-0001");
    assert_eq!(lines[0]["metrics"][0]["value"], 0.5);
    assert!(stderr.contains("not Avro single-object encoding"), "garbage not named: {stderr}");
    assert!(stderr.contains("unknown schema fingerprint 0123456789abcdef"), "fingerprint not named: {stderr}");
    assert!(stderr.contains("offset=0") && stderr.contains("offset=1"), "offsets not named: {stderr}");
}
