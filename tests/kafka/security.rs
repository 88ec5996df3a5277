//! SASL/SCRAM and TLS against real brokers (their own, with a SASL_PLAINTEXT listener and
//! with a TLS listener that requires client certificates): the right credentials or
//! certificates produce and read back; a wrong password, a missing or untrusted client
//! certificate, or an untrusted broker is refused at once with an error that names
//! authentication or the TLS handshake; and no password reaches the output.

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use augur::codec::{Metric, TelemetrySample};
use augur::kafka::reader::{self, Start};
use augur::kafka::{
    Cluster, ConnectError, KafkaConfig, KafkaSecurity, Publisher, Retention, SaslMechanism, Secret, SecurityProtocol,
    TopicSpec,
};

use crate::common;

/// Far beyond what a refusal takes (one round trip), far below librdkafka's retrying
/// for ever: a hang fails the test instead of stalling the run.
const GUARD: Duration = Duration::from_secs(90);

fn config(mechanism: SaslMechanism, password: &str, prefix: &str) -> KafkaConfig {
    let broker = common::scram_broker();
    KafkaConfig {
        brokers: Some(broker.sasl.clone()),
        topic_prefix: prefix.to_owned(),
        security: KafkaSecurity {
            security_protocol: Some(SecurityProtocol::SaslPlaintext),
            sasl_mechanism: Some(mechanism),
            sasl_username: Some(broker.username.to_owned()),
            sasl_password: Some(Secret::new(password)),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn sample(instance: &str) -> TelemetrySample {
    TelemetrySample {
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        seq: 7,
        timestamp_ms: 1_795_000_000_000,
        metrics: vec![Metric::new("cpu_utilization_ratio", 0.25)],
        labels: Default::default(),
    }
}

/// Creates `<prefix>.telemetry` with one partition and publishes `record` to it.
async fn publish(cluster: &Cluster, record: &TelemetrySample) -> String {
    let topic = cluster.topic::<TelemetrySample>();
    cluster
        .ensure_topics(&[TopicSpec { name: topic.clone(), partitions: 1, retention: Retention::Log }])
        .await
        .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
    let mut publisher = Publisher::<TelemetrySample>::new(&cluster.producer_config(), topic.clone()).unwrap();
    publisher.publish(&record.instance_id, record, record.timestamp_ms).await.unwrap();
    assert_eq!(publisher.flush(Duration::from_secs(30)).await.unwrap(), 1, "not delivered");
    topic
}

/// Every record of `topic`, read over `cluster`'s connection settings.
async fn read_back(cluster: &Cluster, topic: String) -> Vec<TelemetrySample> {
    let reader_config = cluster.client_config();
    let read = tokio::task::spawn_blocking(move || {
        let mut payloads = Vec::new();
        reader::read_to_end(&reader_config, &topic, Start::Beginning, |m| {
            payloads.push(rdkafka::Message::payload(m).map(<[u8]>::to_vec))
        })
        .map(|_| payloads)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("reading back: {e}"));
    let codec = augur::codec::Codec::<TelemetrySample>::new();
    read.iter().map(|p| codec.decode(p.as_deref().expect("a payload")).expect("a telemetry record")).collect()
}

/// Runs `cmd` to completion, failing the test if it takes longer than `GUARD`.
fn run_bounded(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(GUARD) {
        Ok(out) => out.expect("waiting for augur"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{cmd:?} still running after {GUARD:?}: a refused client must fail, not hang");
        }
    }
}

/// Runs `f` on a thread of its own, failing the test if it takes longer than `GUARD`.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(GUARD)
        .unwrap_or_else(|_| panic!("still waiting after {GUARD:?}: a refused client must fail, not hang"))
}

#[tokio::test(flavor = "multi_thread")]
async fn right_credentials_produce_and_read_back_with_both_scram_mechanisms() {
    let broker = common::scram_broker();
    for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let prefix = common::unique("sasl");
        // Opening checks access (bounded by the check's own timeout).
        let cluster = Cluster::open(&config(mechanism, broker.password, &prefix))
            .unwrap_or_else(|e| panic!("{mechanism:?} with the right password: {e}"));
        let record = sample(&format!("web-{mechanism:?}"));
        let topic = publish(&cluster, &record).await;
        assert_eq!(read_back(&cluster, topic).await, [record], "{mechanism:?}: read back something else");
    }
}

#[test]
fn a_wrong_password_is_refused_at_once_naming_authentication() {
    let broker = common::scram_broker();
    let config = config(SaslMechanism::ScramSha256, "not-the-password", &common::unique("sasl"));
    let started = std::time::Instant::now();
    match bounded(move || Cluster::open(&config).map(|_| ())) {
        Err(ConnectError::Authentication { brokers, reason }) => {
            assert_eq!(brokers, broker.sasl);
            assert!(reason.to_lowercase().contains("authentication"), "{reason}");
            assert!(!reason.contains("not-the-password"), "{reason}");
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    // Not a timeout in disguise: the check gives up on a silent broker after 10 s.
    assert!(started.elapsed() < Duration::from_secs(10), "refused only after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_with_the_right_password_and_fails_fast_with_a_wrong_one_never_showing_either() {
    let broker = common::scram_broker();
    let prefix = common::unique("sasl-cli");
    let cluster = Cluster::open(&config(SaslMechanism::ScramSha512, broker.password, &prefix)).unwrap();
    publish(&cluster, &sample("web-cli")).await;
    let wrong = "wrong-pw-51d0e";
    let cli = |password: &str, extra: &[&str]| {
        let mut c = common::augur();
        c.args(["tail", "telemetry", "--from-beginning"])
            .args(["--brokers", &broker.sasl, "--topic-prefix", &prefix])
            .args(["--security-protocol", "sasl_plaintext", "--sasl-mechanism", "SCRAM-SHA-512"])
            .args(["--sasl-username", broker.username])
            .args(extra)
            // The password from the environment, as a deployment would give it; and
            // every log there is, to give a leak every chance to show.
            .env("AUGUR_KAFKA_SASL_PASSWORD", password)
            .env("RUST_LOG", "debug,librdkafka=debug,rdkafka=debug");
        c
    };

    // Right: tail reads the record back over SASL.
    let right = common::run_ok(&mut cli(broker.password, &["--max", "1"]));
    let stdout = String::from_utf8_lossy(&right.stdout);
    assert!(stdout.contains("\"web-cli\""), "the record was not read back: {stdout}");
    let stderr = String::from_utf8_lossy(&right.stderr);
    assert!(!stderr.contains(broker.password), "the password is in the output:\n{stderr}");
    assert!(!stderr.to_lowercase().contains("authentication failed"), "{stderr}");

    let out = run_bounded(&mut cli(wrong, &["--max", "1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong password was accepted:\n{stderr}");
    assert!(stderr.contains("SASL authentication failed"), "the error does not name authentication:\n{stderr}");
    assert!(stderr.contains(&broker.sasl), "the error does not name the brokers:\n{stderr}");
    assert!(!stderr.contains(wrong), "the password is in the output:\n{stderr}");

    // The same through the flag instead of the environment.
    let mut flagged = cli("", &["--max", "1", "--sasl-password", wrong]);
    flagged.env_remove("AUGUR_KAFKA_SASL_PASSWORD");
    let out = run_bounded(&mut flagged);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("SASL authentication failed"), "{stderr}");
    assert!(!stderr.contains(wrong), "the password is in the output:\n{stderr}");
}

fn tls_config(ca: &str, client: Option<&str>, prefix: &str) -> KafkaConfig {
    let broker = common::tls_broker();
    let certs = &broker.certs;
    KafkaConfig {
        brokers: Some(broker.ssl.clone()),
        topic_prefix: prefix.to_owned(),
        security: KafkaSecurity {
            security_protocol: Some(SecurityProtocol::Ssl),
            ssl_ca_file: Some(certs.join(ca)),
            ssl_cert_file: client.map(|name| certs.join(format!("{name}.crt"))),
            ssl_key_file: client.map(|name| certs.join(format!("{name}.key"))),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_client_certificate_produces_and_reads_back_over_tls() {
    let prefix = common::unique("tls");
    let cluster = Cluster::open(&tls_config("ca.pem", Some("client"), &prefix))
        .unwrap_or_else(|e| panic!("TLS with a trusted client certificate: {e}"));
    let record = sample("web-tls");
    let topic = publish(&cluster, &record).await;
    assert_eq!(read_back(&cluster, topic).await, [record], "read back something else over TLS");
}

#[test]
fn tls_refusals_fail_at_once_naming_the_handshake() {
    let broker = common::tls_broker();
    for (ca, client, what) in [
        ("ca.pem", None, "no client certificate"),
        ("ca.pem", Some("stranger"), "a client certificate of another authority"),
        ("other-ca.pem", Some("client"), "a broker certificate this client does not trust"),
    ] {
        let config = tls_config(ca, client, &common::unique("tls"));
        let started = std::time::Instant::now();
        match bounded(move || Cluster::open(&config).map(|_| ())) {
            Err(ConnectError::Tls { brokers, reason }) => {
                assert_eq!(brokers, broker.ssl);
                assert!(reason.contains("SSL"), "{what}: {reason}");
            }
            other => panic!("{what}: expected a TLS refusal, got {other:?}"),
        }
        // Not a timeout in disguise: the check gives up on a silent broker after 10 s.
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: refused only after {:?}", started.elapsed());
    }
}
