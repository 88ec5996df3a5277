//! Connection of every stage to Kafka: where the cluster is, what the topics are
//! called, and how records of the wire contract are produced and consumed.
//!
//! In: a [`KafkaConfig`] (brokers, topic prefix, TLS and SASL settings, pass-through
//! librdkafka properties). Out: a [`Cluster`] that owns the embedded mock cluster when
//! no brokers are given, client configurations for each role, and a [`Publisher`] that
//! encodes, produces and reports every delivery failure (nothing is dropped silently).
//! Opening a cluster with security settings checks them and the brokers' answer first,
//! so a wrong password is an error at start, not a client retrying for ever.

pub mod access;
mod publisher;
pub mod reader;
pub mod security;
pub mod table;
pub mod txn;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::codec::Record;

pub use publisher::{PublishError, Publisher};
pub use security::{KafkaSecurity, SaslMechanism, Secret, SecurityError, SecurityProtocol};

/// Where the cluster is and how to talk to it; shared by every Kafka-facing command.
/// `Debug` shows secrets, and pass-through properties that hold them, as `***`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers `HOST:PORT[,...]`; `None` starts librdkafka's in-process mock
    /// cluster (the zero-setup default, which does not hide aborted transactions).
    #[serde(default)]
    pub brokers: Option<String>,
    /// Topics are `<prefix>.telemetry`, `<prefix>.alerts`, ...
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// TLS and SASL; all unset is a plaintext connection.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// Any librdkafka client property, passed through unchanged (tuning, or security
    /// properties Augur does not name). A property that a security setting also sets
    /// is refused, so which of the two applies is never a question.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("security", &self.security)
            .field("librdkafka", &security::redacted(&self.librdkafka))
            .finish()
    }
}

/// The product's name: topics read `augur.telemetry` unless told otherwise.
fn default_topic_prefix() -> String {
    "augur".to_owned()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            topic_prefix: default_topic_prefix(),
            security: KafkaSecurity::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start the embedded mock cluster: {0}")]
    Embedded(#[source] KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot create topic {topic}: {code}")]
    CreateTopicRefused { topic: String, code: RDKafkaErrorCode },
    #[error("invalid topic prefix {0:?}: use letters, digits, '.', '_' or '-'")]
    BadPrefix(String),
    #[error("invalid Kafka security settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Security(Vec<SecurityError>),
    #[error("Kafka security settings without --brokers: the embedded mock cluster takes plaintext only")]
    SecurityWithoutBrokers,
    #[error(
        "Kafka at {brokers} refused the client: SASL authentication failed ({reason}); \
         check --sasl-username, --sasl-password and --sasl-mechanism"
    )]
    Authentication { brokers: String, reason: String },
    #[error(
        "Kafka at {brokers} refused the client: TLS handshake failed ({reason}); \
         check --ssl-ca-file and the client certificate"
    )]
    Tls { brokers: String, reason: String },
    #[error("cannot create a Kafka client for {brokers}: {source}")]
    Client {
        brokers: String,
        #[source]
        source: KafkaError,
    },
}

/// How long opening a cluster with security settings waits for the brokers' verdict.
/// A refusal arrives within a round trip or two; this bounds only the case where the
/// brokers do not answer at all, after which the command goes on (and retries) as it
/// would without the check.
const ACCESS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How a topic is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// A log of events, deleted by age.
    Log,
    /// A table: the newest record per key is kept (signatures, models, tuned values).
    Compacted,
}

/// A topic the stages expect to exist.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub retention: Retention,
}

/// The cluster a command talks to. Keep it alive as long as clients use it: when the
/// embedded mock cluster is in use, dropping this stops it.
pub struct Cluster {
    bootstrap: String,
    config: KafkaConfig,
    // Not `Send` (librdkafka handle): a `Cluster` stays on the task that opened it,
    // clients built from its configurations go anywhere.
    embedded: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl Cluster {
    /// Connects to `config.brokers`, or starts the embedded mock cluster when none are given.
    ///
    /// With security settings (first-class or `security.protocol` passed through), the
    /// settings are checked first and then the brokers are asked once whether they let
    /// the client in: refused credentials or a failed TLS handshake are an error here.
    /// That check blocks for up to a few seconds, once, before the command starts work.
    pub fn open(config: &KafkaConfig) -> Result<Self, ConnectError> {
        let prefix_ok = !config.topic_prefix.is_empty()
            && config.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !prefix_ok {
            return Err(ConnectError::BadPrefix(config.topic_prefix.clone()));
        }
        let errors = config.security.check(&config.librdkafka);
        if !errors.is_empty() {
            return Err(ConnectError::Security(errors));
        }
        let secured = config.security.is_set() || config.librdkafka.contains_key("security.protocol");
        let (bootstrap, embedded) = match &config.brokers {
            Some(brokers) => (brokers.clone(), None),
            None if config.security.is_set() => return Err(ConnectError::SecurityWithoutBrokers),
            None => {
                // Three brokers, as a small real cluster would have.
                let mock = MockCluster::new(3).map_err(ConnectError::Embedded)?;
                (mock.bootstrap_servers(), Some(mock))
            }
        };
        let cluster = Self { bootstrap, config: config.clone(), embedded };
        if secured && cluster.embedded.is_none() {
            cluster.check_access(ACCESS_CHECK_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// Asks the brokers whether they let this client in (see [`access::check_access`]).
    /// A broker that does not answer within `timeout` is not an error: the command's own
    /// clients keep trying, and say so in the log.
    pub fn check_access(&self, timeout: Duration) -> Result<(), ConnectError> {
        let brokers = self.bootstrap.clone();
        match access::check_access(&self.client_config(), timeout) {
            Ok(access::Access::Granted) => Ok(()),
            Ok(access::Access::Refused(access::Refusal::Authentication, reason)) => {
                Err(ConnectError::Authentication { brokers, reason })
            }
            Ok(access::Access::Refused(access::Refusal::Tls, reason)) => Err(ConnectError::Tls { brokers, reason }),
            Ok(access::Access::Unknown) => {
                tracing::warn!(brokers, ?timeout, "Kafka did not answer the access check; going on");
                Ok(())
            }
            Err(source) => Err(ConnectError::Client { brokers, source }),
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The full name of `T`'s topic under the configured prefix.
    pub fn topic<T: Record>(&self) -> String {
        self.topic_named(T::TOPIC)
    }

    /// `<prefix>.<suffix>`.
    pub fn topic_named(&self, suffix: &str) -> String {
        format!("{}.{}", self.config.topic_prefix, suffix)
    }

    /// Base client configuration: bootstrap servers, security settings, then the
    /// pass-through properties (which win, so an operator can override anything but
    /// the security settings given, which [`Cluster::open`] refuses to see overridden).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        self.finish(&mut c);
        c
    }

    /// The security settings and the pass-through properties, last on every client.
    fn finish(&self, c: &mut ClientConfig) {
        self.config.security.apply(c);
        for (k, v) in &self.config.librdkafka {
            c.set(k, v);
        }
    }

    /// A producer that never duplicates or reorders within a partition and compresses.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            // A few milliseconds of batching cost nothing at 1 Hz per instance and
            // multiply throughput for a fleet.
            .set("linger.ms", "5");
        self.finish(&mut c);
        c
    }

    /// A consumer that reads committed records only and never commits on its own.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        self.finish(&mut c);
        c
    }

    /// The clients of an exactly-once loop: a group member (cooperative-sticky, topics
    /// never auto-created) and a producer with `transactional.id` `<stage>.<group>.<replica>`,
    /// so a restarted replica fences its previous self. The user's pass-through
    /// properties win over these defaults.
    pub fn transactional_clients(&self, stage: &str, group: &str, replica_id: &str) -> (ClientConfig, ClientConfig) {
        let mut consumer = self.consumer_config(group);
        set_default(&mut consumer, "partition.assignment.strategy", "cooperative-sticky");
        // A killed replica's partitions move after this long; Kafka's floor is 6 s.
        set_default(&mut consumer, "session.timeout.ms", "10000");
        set_default(&mut consumer, "allow.auto.create.topics", "false");
        let mut producer = self.producer_config();
        producer.set("transactional.id", format!("{stage}.{group}.{replica_id}"));
        set_default(&mut producer, "transaction.timeout.ms", "60000");
        (consumer, producer)
    }

    /// Creates the topics that do not exist yet; existing ones are left as they are.
    pub async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), ConnectError> {
        if let Some(mock) = &self.embedded {
            for spec in specs {
                match mock.create_topic(&spec.name, spec.partitions, 1) {
                    Ok(()) => {}
                    Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAlreadyExists) => {}
                    Err(source) => return Err(ConnectError::CreateTopic { topic: spec.name.clone(), source }),
                }
            }
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|source| ConnectError::CreateTopic { topic: specs_names(specs), source })?;
        let new_topics: Vec<NewTopic> = specs
            .iter()
            .map(|s| {
                let t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(-1));
                match s.retention {
                    Retention::Log => t,
                    Retention::Compacted => t.set("cleanup.policy", "compact"),
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new_topics, &opts)
            .await
            .map_err(|source| ConnectError::CreateTopic { topic: specs_names(specs), source })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(ConnectError::CreateTopicRefused { topic, code }),
            }
        }
        Ok(())
    }
}

fn specs_names(specs: &[TopicSpec]) -> String {
    specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The Kafka flags every Kafka-facing command takes. `Debug` shows secrets, and
/// pass-through properties that hold them, as `***`.
#[derive(Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers HOST:PORT[,...]; absent: an in-process mock cluster
    /// (zero setup, for trying things out; it does not hide aborted transactions).
    #[arg(long, env = "AUGUR_BROKERS", value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,
    /// Prefix of every topic name: P.telemetry, P.alerts, ...
    #[arg(long, env = "AUGUR_TOPIC_PREFIX", default_value = "augur", value_name = "P")]
    pub topic_prefix: String,
    #[command(flatten)]
    pub security: KafkaSecurity,
    /// A librdkafka client property passed through unchanged (repeatable), e.g.
    /// `--librdkafka socket.keepalive.enable=true`; the last of one key wins. A property
    /// that one of the security flags above also sets is refused.
    #[arg(long = "librdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub librdkafka: Vec<(String, String)>,
}

impl KafkaArgs {
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            topic_prefix: self.topic_prefix.clone(),
            security: self.security.clone(),
            librdkafka: self.librdkafka.iter().cloned().collect(),
        }
    }
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config().fmt(f)
    }
}

/// The headers of a dead letter on the DLQ topic, the same for every stage so that one
/// reader serves them all: the reason and the source topic, partition and offset.
pub fn dead_letter_headers(d: &crate::codec::DeadLetter) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::Header;
    let (partition, offset) = (d.source_partition.to_string(), d.source_offset.to_string());
    rdkafka::message::OwnedHeaders::new()
        .insert(Header { key: "augur.reason", value: Some(d.reason.as_str()) })
        .insert(Header { key: "augur.source.topic", value: Some(d.source_topic.as_str()) })
        .insert(Header { key: "augur.source.partition", value: Some(partition.as_str()) })
        .insert(Header { key: "augur.source.offset", value: Some(offset.as_str()) })
}

/// Records past the consumer's position on its assigned partitions; where it has no
/// position yet (assigned, nothing fetched), past the group's committed offset, and
/// past the oldest retained record where nothing is committed either. The watermarks
/// are asked through `watermarks`, a client of its own: asked through the group
/// consumer, each request would queue behind its long-poll fetch. One round trip per
/// partition (and one for the committed offsets); blocking.
pub fn consumer_lag<C: rdkafka::consumer::ConsumerContext, K: rdkafka::consumer::Consumer<C>>(
    consumer: &K,
    watermarks: &rdkafka::consumer::BaseConsumer,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::Offset;
    let position = consumer.position()?;
    let mut unpositioned = rdkafka::TopicPartitionList::new();
    for e in position.elements() {
        if !matches!(e.offset(), Offset::Offset(_)) {
            unpositioned.add_partition(e.topic(), e.partition());
        }
    }
    let committed =
        if unpositioned.count() == 0 { unpositioned } else { consumer.committed_offsets(unpositioned, timeout)? };
    let mut lag = 0;
    for e in position.elements() {
        let (low, high) = watermarks.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => match committed.find_partition(e.topic(), e.partition()).map(|c| c.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            },
        };
        lag += (high - from).max(0);
    }
    Ok(lag)
}

/// Sets a client property unless the user's pass-through properties already did.
pub fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

/// Parses a topic's partition count for the commands that create topics.
pub fn parse_partitions(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 10000".to_owned()),
    }
}

/// Parses `KEY=VALUE` for repeatable flags.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
