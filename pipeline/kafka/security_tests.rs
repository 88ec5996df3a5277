use std::collections::BTreeMap;

use clap::Parser;

use super::*;
use crate::kafka::{Cluster, ConnectError, KafkaArgs, KafkaConfig};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
}

fn parse(args: &[&str]) -> KafkaArgs {
    Cli::try_parse_from(std::iter::once("augur").chain(args.iter().copied())).expect("valid flags").kafka
}

fn flags_of(errors: &[SecurityError]) -> Vec<&'static str> {
    errors.iter().map(|e| e.setting().flag).collect()
}

fn scram(password: &str) -> KafkaSecurity {
    KafkaSecurity {
        security_protocol: Some(SecurityProtocol::SaslPlaintext),
        sasl_mechanism: Some(SaslMechanism::ScramSha256),
        sasl_username: Some("augur".to_owned()),
        sasl_password: Some(Secret::new(password)),
        ..Default::default()
    }
}

#[test]
fn secrets_print_as_stars_everywhere() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s}"), "***");
    assert_eq!(format!("{s:?}"), "***");
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    assert_eq!(s.expose(), "hunter2");

    let args = parse(&[
        "--brokers",
        "k:9092",
        "--security-protocol",
        "sasl_ssl",
        "--sasl-mechanism",
        "scram-sha-512",
        "--sasl-username",
        "augur",
        "--sasl-password",
        "hunter2",
        "--ssl-key-password",
        "keypass9",
        "--librdkafka",
        "sasl.oauthbearer.client.secret=oauth7",
        "--librdkafka",
        "socket.keepalive.enable=true",
    ]);
    assert_eq!(args.security.sasl_mechanism, Some(SaslMechanism::ScramSha512));
    for shown in [format!("{args:?}"), format!("{:?}", args.config()), format!("{:#?}", args.config())] {
        for secret in ["hunter2", "keypass9", "oauth7"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("socket.keepalive.enable"), "{shown}");
        assert!(shown.contains("augur"), "the username is not a secret: {shown}");
    }
    let serialised = serde_json::to_string(&args.config()).unwrap();
    assert!(!serialised.contains("hunter2") && !serialised.contains("keypass9"), "{serialised}");
}

#[test]
fn a_complete_setting_passes_and_sets_the_librdkafka_properties() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("c.pem"), dir.path().join("k.pem"));
    for f in [&ca, &cert, &key] {
        std::fs::write(f, "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    let security = KafkaSecurity {
        security_protocol: Some(SecurityProtocol::SaslSsl),
        ssl_ca_file: Some(ca.clone()),
        ssl_cert_file: Some(cert.clone()),
        ssl_key_file: Some(key.clone()),
        ssl_key_password: Some(Secret::new("kp")),
        ..scram("pw")
    };
    assert!(security.check(&BTreeMap::new()).is_empty(), "{:?}", security.check(&BTreeMap::new()));
    let mut c = ClientConfig::new();
    security.apply(&mut c);
    assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
    assert_eq!(c.get("sasl.username"), Some("augur"));
    assert_eq!(c.get("sasl.password"), Some("pw"));
    assert_eq!(c.get("ssl.ca.location"), ca.to_str());
    assert_eq!(c.get("ssl.certificate.location"), cert.to_str());
    assert_eq!(c.get("ssl.key.location"), key.to_str());
    assert_eq!(c.get("ssl.key.password"), Some("kp"));
    // librdkafka itself accepts every property (it is built with TLS and SASL support).
    c.set("bootstrap.servers", "127.0.0.1:1");
    c.create_native_config().expect("librdkafka accepts the security properties");

    let mut none = ClientConfig::new();
    KafkaSecurity::default().apply(&mut none);
    assert_eq!(none.get("security.protocol"), None, "nothing set stays librdkafka's default");
}

#[test]
fn contradictions_are_all_reported_by_flag() {
    // SASL settings on a plaintext connection, TLS files without TLS.
    let security = KafkaSecurity {
        sasl_mechanism: Some(SaslMechanism::Plain),
        sasl_username: Some("u".into()),
        ssl_key_password: Some(Secret::new("kp")),
        ..Default::default()
    };
    let errors = security.check(&BTreeMap::new());
    assert_eq!(flags_of(&errors), ["sasl-mechanism", "sasl-username", "ssl-key-password", "ssl-key-password"]);
    let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(
        text.contains(
            "--sasl-mechanism (AUGUR_KAFKA_SASL_MECHANISM) needs --security-protocol sasl_plaintext or sasl_ssl"
        ),
        "{text}"
    );
    assert!(text.contains("--ssl-key-password (AUGUR_KAFKA_SSL_KEY_PASSWORD) needs --ssl-key-file"), "{text}");

    // A SASL protocol without a mechanism; a mechanism without its partners.
    let bare = KafkaSecurity { security_protocol: Some(SecurityProtocol::SaslSsl), ..Default::default() };
    assert_eq!(flags_of(&bare.check(&BTreeMap::new())), ["security-protocol"]);
    let half = KafkaSecurity { sasl_password: None, ..scram("") };
    let errors = half.check(&BTreeMap::new());
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "--sasl-mechanism (AUGUR_KAFKA_SASL_MECHANISM) needs --sasl-password (AUGUR_KAFKA_SASL_PASSWORD)"
    );

    // A certificate without its key.
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    std::fs::write(&cert, "x").unwrap();
    let tls = KafkaSecurity {
        security_protocol: Some(SecurityProtocol::Ssl),
        ssl_cert_file: Some(cert),
        ..Default::default()
    };
    assert_eq!(flags_of(&tls.check(&BTreeMap::new())), ["ssl-cert-file"]);
}

#[test]
fn missing_and_unreadable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let security = KafkaSecurity {
        security_protocol: Some(SecurityProtocol::Ssl),
        ssl_ca_file: Some(dir.path().join("nowhere.pem")),
        // A directory is not a certificate file.
        ssl_cert_file: Some(dir.path().to_owned()),
        ssl_key_file: Some(dir.path().join("key.pem")),
        ..Default::default()
    };
    let errors = security.check(&BTreeMap::new());
    assert_eq!(flags_of(&errors), ["ssl-ca-file", "ssl-cert-file", "ssl-key-file"]);
    let first = errors[0].to_string();
    assert!(first.starts_with("--ssl-ca-file (AUGUR_KAFKA_SSL_CA_FILE) ") && first.contains("nowhere.pem"), "{first}");
    assert!(first.contains("cannot read it"), "{first}");
    assert!(errors[1].to_string().contains("not a file"), "{}", errors[1]);
}

#[test]
fn a_passthrough_of_a_named_setting_is_refused_and_others_pass() {
    let passthrough: BTreeMap<String, String> =
        [("sasl.password", "other"), ("sasl.mechanisms", "PLAIN"), ("socket.keepalive.enable", "true")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let errors = scram("pw").check(&passthrough);
    assert_eq!(flags_of(&errors), ["sasl-mechanism", "sasl-password"]);
    assert!(
        errors[1].to_string().contains("--librdkafka sasl.password=... sets what --sasl-password"),
        "{}",
        errors[1]
    );
    assert!(!errors.iter().any(|e| e.to_string().contains("other")), "the passed-through value is not shown");

    // Security through pass-through alone keeps working, as it did before the flags.
    let only: BTreeMap<String, String> = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "u"),
        ("sasl.password", "p"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert!(KafkaSecurity::default().check(&only).is_empty());
    // And a first-class username with a passed-through protocol and mechanism.
    let mixed =
        KafkaSecurity { sasl_username: Some("u".into()), sasl_password: Some(Secret::new("p")), ..Default::default() };
    let passthrough: BTreeMap<String, String> = [("security.protocol", "sasl_ssl"), ("sasl.mechanism", "PLAIN")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(mixed.check(&passthrough).is_empty(), "{:?}", mixed.check(&passthrough));
    let bad: BTreeMap<String, String> = [("security.protocol".to_owned(), "tls".to_owned())].into_iter().collect();
    assert_eq!(flags_of(&KafkaSecurity::default().check(&bad)), ["security-protocol"]);
}

#[test]
fn opening_refuses_bad_settings_before_any_connection() {
    let config = KafkaConfig {
        brokers: Some("127.0.0.1:1".to_owned()),
        security: KafkaSecurity { sasl_password: None, ..scram("") },
        ..Default::default()
    };
    match Cluster::open(&config) {
        Err(ConnectError::Security(errors)) => assert_eq!(flags_of(&errors), ["sasl-mechanism"]),
        other => panic!("expected the security settings refused, got {:?}", other.err()),
    }
    // The embedded mock cluster speaks plaintext only: a secured setting without
    // brokers is a mistake, not a reason to fall back silently.
    let embedded = KafkaConfig { security: scram("pw"), ..Default::default() };
    assert!(matches!(Cluster::open(&embedded), Err(ConnectError::SecurityWithoutBrokers)));
}

#[test]
fn sensitive_passthrough_keys() {
    for k in [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.pem",
        "sasl.jaas.config",
    ] {
        assert!(is_sensitive(k), "{k}");
    }
    for k in ["sasl.username", "ssl.ca.location", "ssl.certificate.pem", "security.protocol", "linger.ms"] {
        assert!(!is_sensitive(k), "{k}");
    }
}
