//! `augur tail`: reads any topic of the contract and prints each record as one JSON
//! object per line on stdout, for people and scripts ("subscribe to alert topics").
//!
//! In: a topic by its role (`alerts`, `telemetry`, ...) under the topic prefix. Out:
//! JSON lines on stdout; records that do not decode are reported on stderr with their
//! partition, offset and reason, and skipped (never fatal). It reads committed records
//! only, joins no consumer group and commits nothing, so tailing never disturbs the
//! pipeline.

use std::io::Write;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::codec::{
    Actuation, Adjustment, Alert, Codec, CodecError, DeadLetter, FailureSignature, FeedbackOutcome, ModelAnnouncement,
    Record, TelemetrySample, TunedValue, WindowEvidence,
};
use crate::kafka::{Cluster, ConnectError, KafkaArgs};

/// The topics `augur tail` knows, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopicRole {
    Telemetry,
    Alerts,
    Adjustments,
    Actuations,
    Signatures,
    Models,
    Feedback,
    /// Per-window evidence of the detector (score, closest signature), alerting or not.
    Scores,
    /// The values the feedback loop tuned.
    Tuned,
    Dlq,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which topic to read.
    #[arg(value_enum)]
    pub topic: TopicRole,
    /// Start from the oldest retained record instead of only new ones.
    #[arg(long)]
    pub from_beginning: bool,
    /// Exit after printing this many records.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Exit once no record has arrived for this long (e.g. `5s`); runs until SIGTERM otherwise.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub idle_exit: Option<Duration>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
}

/// What a tail run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TailSummary {
    pub printed: u64,
    pub undecodable: u64,
}

/// One decoder for whichever record type the topic carries.
enum Decoder {
    Telemetry(Codec<TelemetrySample>),
    Alerts(Codec<Alert>),
    Adjustments(Codec<Adjustment>),
    Actuations(Codec<Actuation>),
    Signatures(Codec<FailureSignature>),
    Models(Codec<ModelAnnouncement>),
    Feedback(Codec<FeedbackOutcome>),
    Scores(Codec<WindowEvidence>),
    Tuned(Codec<TunedValue>),
    Dlq(Codec<DeadLetter>),
}

impl Decoder {
    fn for_role(role: TopicRole) -> (Self, &'static str) {
        match role {
            TopicRole::Telemetry => (Self::Telemetry(Codec::new()), TelemetrySample::TOPIC),
            TopicRole::Alerts => (Self::Alerts(Codec::new()), Alert::TOPIC),
            TopicRole::Adjustments => (Self::Adjustments(Codec::new()), Adjustment::TOPIC),
            TopicRole::Actuations => (Self::Actuations(Codec::new()), Actuation::TOPIC),
            TopicRole::Signatures => (Self::Signatures(Codec::new()), FailureSignature::TOPIC),
            TopicRole::Models => (Self::Models(Codec::new()), ModelAnnouncement::TOPIC),
            TopicRole::Feedback => (Self::Feedback(Codec::new()), FeedbackOutcome::TOPIC),
            TopicRole::Scores => (Self::Scores(Codec::new()), WindowEvidence::TOPIC),
            TopicRole::Tuned => (Self::Tuned(Codec::new()), TunedValue::TOPIC),
            TopicRole::Dlq => (Self::Dlq(Codec::new()), DeadLetter::TOPIC),
        }
    }

    fn to_json(&self, bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
        fn json<T: Record>(c: &Codec<T>, bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
            // Serialising a decoded record to JSON cannot fail: every field is a plain value.
            Ok(serde_json::to_value(c.decode(bytes)?).unwrap_or(serde_json::Value::Null))
        }
        match self {
            Self::Telemetry(c) => json(c, bytes),
            // Alerts and adjustments also name the instance as `instance`, the field people
            // and scripts subscribing to them look for; `instance_id` stays as in the schema.
            Self::Alerts(c) => json(c, bytes).map(with_instance),
            Self::Adjustments(c) => json(c, bytes).map(with_instance),
            // Results read as the audit speaks of them: applied, duplicate, refused, ...
            Self::Actuations(c) => json(c, bytes).map(|mut v| {
                if let Some(r) = v.get("result").and_then(|r| r.as_str()).map(str::to_lowercase) {
                    v["result"] = r.into();
                }
                v
            }),
            Self::Signatures(c) => json(c, bytes),
            Self::Models(c) => json(c, bytes),
            Self::Feedback(c) => json(c, bytes),
            Self::Scores(c) => json(c, bytes).map(with_instance),
            Self::Tuned(c) => json(c, bytes),
            Self::Dlq(c) => json(c, bytes),
        }
    }
}

fn with_instance(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(id) = v.get("instance_id").cloned() {
        v["instance"] = id;
    }
    v
}

/// Prints records of `args.topic` to `out` until `--max`, `--idle-exit` or shutdown.
pub async fn run(args: Args, shutdown: CancellationToken, out: &mut impl Write) -> Result<TailSummary, TailError> {
    let cluster = Cluster::open(&args.kafka.config())?;
    let (decoder, suffix) = Decoder::for_role(args.topic);
    let topic = cluster.topic_named(suffix);

    let mut config = cluster.client_config();
    config.set("isolation.level", "read_committed").set("enable.auto.commit", "false").set(
        "group.id",
        // Required by librdkafka even for assign(); never used to commit.
        "augur-tail",
    );
    let consumer: StreamConsumer = config.create()?;
    let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
    consumer.assign(&partitions_of(consumer.client(), &topic, start)?)?;

    let mut summary = TailSummary::default();
    if args.max == Some(0) {
        return Ok(summary);
    }
    loop {
        let next = async {
            match args.idle_exit {
                Some(idle) => tokio::time::timeout(idle, consumer.recv()).await.ok(),
                None => Some(consumer.recv().await),
            }
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = next => match m {
                None => break, // idle for --idle-exit
                Some(m) => m?,
            },
        };
        let Some(payload) = message.payload() else {
            // A tombstone deletes a key of a compacted table; show it as such.
            let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
            writeln!(out, "{}", serde_json::json!({ "tombstone": key }))?;
            summary.printed += 1;
            continue;
        };
        match decoder.to_json(payload) {
            Ok(value) => {
                writeln!(out, "{value}")?;
                summary.printed += 1;
            }
            Err(error) => {
                summary.undecodable += 1;
                tracing::warn!(%error, topic = %topic, partition = message.partition(), offset = message.offset(), "record skipped");
            }
        }
        if args.max.is_some_and(|max| summary.printed >= max) {
            break;
        }
    }
    out.flush()?;
    Ok(summary)
}

fn partitions_of<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    start: Offset,
) -> Result<TopicPartitionList, TailError> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| TailError::NoTopic(topic.to_owned()))?;
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition_offset(topic, p, start)?;
    }
    Ok(list)
}
