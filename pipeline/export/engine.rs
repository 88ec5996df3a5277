//! The exporter's Kafka loop: collect a batch, write it, dead-letter what cannot be
//! written, then commit.
//!
//! In: records of the subscribed topics, as the group hands them out. Out: remote-write
//! requests, dead letters, and offset commits, in that order for every batch: a commit
//! never covers a record that is neither in the database nor confirmed on the dead-letter
//! topic. A request the database refuses (4xx) is split in halves until the refused
//! records stand alone, so one bad record never takes its batch to the dead-letter
//! topic. While the database is unreachable the loop retries the same batch and polls
//! nothing; if that outlasts `max.poll.interval.ms` (librdkafka's default 5 min) the
//! member leaves the group, its commit fails, and the records are re-sent after it
//! rejoins: at least once, and idempotent in the database.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::remote_write::{self, Outcome, RemoteWrite};
use super::series::{Exported, SeriesSet};
use super::Metrics;
use crate::codec::{Alert, Codec, CodecError, DeadLetter, TelemetrySample};
use crate::observe::Readiness;

/// First wait after a failed attempt; doubled on every further failure up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Dead-letter deliveries.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the lag gauge is refreshed at most: it costs a round trip per partition.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// A watermark request: short, as a slow answer only delays a gauge.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle loop wakes this often to refresh the lag gauge.
const IDLE_TICK: Duration = Duration::from_secs(5);

pub struct EngineConfig {
    pub consumer: ClientConfig,
    pub producer: ClientConfig,
    pub telemetry_topic: String,
    /// `None`: telemetry only.
    pub alerts_topic: Option<String>,
    pub dlq_topic: String,
    pub batch_max: usize,
    pub batch_wait: Duration,
    pub max_backoff: Duration,
}

/// What a run exported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records consumed and settled (written or dead-lettered) and committed.
    pub records: u64,
    pub samples: u64,
    /// Remote-write requests accepted.
    pub batches: u64,
    pub dead: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the Kafka consumer: {0}")]
    Consumer(#[source] KafkaError),
    #[error("cannot create the dead-letter producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe {
        topics: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "the remote-write endpoint refuses the exporter itself ({0}); check --remote-write-url and credentials. \
         Nothing of the batch was committed."
    )]
    Misconfigured(String),
    #[error("dead letter to {topic} not confirmed: {source}; the batch is not committed")]
    DeadLetter {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error(transparent)]
    Encode(#[from] CodecError),
    #[error("cannot compress a remote-write request: {0}")]
    Compress(#[from] snap::Error),
}

/// One consumed record, decoded or with the reason it does not decode.
struct Entry {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    timestamp_ms: Option<i64>,
    record: Result<Exported, String>,
}

/// Why a batch was left unsettled.
enum Stop {
    Shutdown,
    Fatal(EngineError),
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        Stop::Fatal(e)
    }
}

struct Decoders {
    telemetry_topic: String,
    telemetry: Codec<TelemetrySample>,
    alerts: Codec<Alert>,
}

impl Decoders {
    fn entry(&self, m: &impl Message) -> Entry {
        let record = match m.payload() {
            None => Err("record has no payload".to_owned()),
            Some(bytes) if m.topic() == self.telemetry_topic => {
                self.telemetry.decode(bytes).map(Exported::Telemetry).map_err(|e| format!("undecodable telemetry: {e}"))
            }
            Some(bytes) => {
                self.alerts.decode(bytes).map(Exported::Alert).map_err(|e| format!("undecodable alert: {e}"))
            }
        };
        Entry {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis(),
            record,
        }
    }
}

struct Loop {
    config: EngineConfig,
    consumer: StreamConsumer,
    producer: FutureProducer,
    remote: RemoteWrite,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: CancellationToken,
    dead_codec: Codec<DeadLetter>,
    /// Joins no group: asks for high watermarks only.
    watermarks: BaseConsumer,
    lag_at: Option<Instant>,
}

/// Runs the loop until `shutdown`; a batch under way when it comes is finished if the
/// database takes it at the first attempt, and left uncommitted otherwise.
pub async fn run(
    config: EngineConfig,
    remote: RemoteWrite,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<Totals, EngineError> {
    let consumer: StreamConsumer = config.consumer.create().map_err(EngineError::Consumer)?;
    let mut topics = vec![config.telemetry_topic.as_str()];
    topics.extend(config.alerts_topic.as_deref());
    consumer.subscribe(&topics).map_err(|source| EngineError::Subscribe { topics: topics.join(", "), source })?;
    let producer: FutureProducer = config.producer.create().map_err(EngineError::Producer)?;
    let watermarks: BaseConsumer = config.consumer.create().map_err(EngineError::Consumer)?;
    let decoders =
        Decoders { telemetry_topic: config.telemetry_topic.clone(), telemetry: Codec::new(), alerts: Codec::new() };
    let mut l = Loop {
        config,
        consumer,
        producer,
        remote,
        metrics,
        readiness,
        shutdown,
        dead_codec: Codec::new(),
        watermarks,
        lag_at: None,
    };
    l.readiness.set(true);
    let mut totals = Totals::default();
    loop {
        let began = Instant::now();
        let batch = l.collect(&decoders).await;
        tracing::debug!(records = batch.len(), collect_ms = began.elapsed().as_millis() as u64, "batch collected");
        if batch.is_empty() {
            if l.shutdown.is_cancelled() {
                break;
            }
            l.refresh_lag(0);
            continue;
        }
        l.metrics.records_in.inc_by(batch.len() as u64);
        match l.settle(&batch).await {
            Ok(settled) => {
                totals.records += batch.len() as u64;
                totals.samples += settled.samples;
                totals.batches += settled.requests;
                totals.dead += settled.dead;
            }
            Err(Stop::Shutdown) => {
                tracing::info!(records = batch.len(), "shutdown while retrying: the batch stays uncommitted");
                break;
            }
            Err(Stop::Fatal(e)) => return Err(e),
        }
        l.commit(&batch).await;
        tracing::debug!(records = batch.len(), "batch exported and committed");
        l.refresh_lag(0);
        if l.shutdown.is_cancelled() {
            break;
        }
    }
    l.readiness.set(false);
    Ok(totals)
}

struct Settled {
    samples: u64,
    requests: u64,
    dead: u64,
}

impl Loop {
    /// Up to `batch_max` records: waits for the first (waking every [`IDLE_TICK`] with
    /// none), then collects for `batch_wait`. Empty on shutdown or an idle tick.
    async fn collect(&self, decoders: &Decoders) -> Vec<Entry> {
        let mut batch = Vec::new();
        let mut deadline = None::<tokio::time::Instant>;
        while batch.len() < self.config.batch_max {
            let wake = deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE_TICK);
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => break,
                received = self.consumer.recv() => match received {
                    Ok(m) => {
                        batch.push(decoders.entry(&m));
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.config.batch_wait);
                    }
                    // Errors here are reports (a broker went away for a moment); librdkafka
                    // reconnects by itself.
                    Err(error) => {
                        tracing::warn!(%error, "consume error");
                        // A lasting error (a deleted topic) must not spin the loop.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        batch
    }

    /// Writes the batch's samples and dead-letters what cannot be written.
    async fn settle(&mut self, batch: &[Entry]) -> Result<Settled, Stop> {
        let mut refused: Vec<(usize, String)> = Vec::new();
        let (mut samples, mut requests) = (0u64, 0u64);
        // Halves are pushed second-half first, so records go out in their order and each
        // series' samples reach the database in time order.
        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..batch.len());
        while let Some(range) = pending.pop() {
            let mut set = SeriesSet::default();
            let mut count = 0u64;
            let mut exported = 0usize;
            for e in &batch[range.clone()] {
                if let Ok(r) = &e.record {
                    count += set.add(r) as u64;
                    exported += 1;
                }
            }
            if set.is_empty() {
                continue;
            }
            let body = remote_write::encode(&set.into_request()).map_err(EngineError::from)?;
            match self.send_until_settled(body, batch.len()).await? {
                None => {
                    samples += count;
                    requests += 1;
                    self.metrics.batches_sent.inc();
                    self.metrics.samples_out.inc_by(count);
                    self.metrics.records_out.inc_by(exported as u64);
                }
                Some(reason) if exported == 1 => {
                    let i = range.clone().find(|&i| batch[i].record.is_ok()).unwrap_or(range.start);
                    refused.push((i, reason));
                }
                Some(_) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        for (i, e) in batch.iter().enumerate() {
            if let Err(reason) = &e.record {
                refused.push((i, reason.clone()));
            }
        }
        let dead = refused.len() as u64;
        self.dead_letters(batch, &refused).await?;
        Ok(Settled { samples, requests, dead })
    }

    /// Sends one request until the database settles it: `None` accepted, `Some(reason)`
    /// refused. Retries for as long as it takes, unless shut down.
    async fn send_until_settled(&mut self, body: Vec<u8>, held: usize) -> Result<Option<String>, Stop> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let began = Instant::now();
            let outcome = self.remote.send(body.clone()).await;
            tracing::debug!(bytes = body.len(), send_ms = began.elapsed().as_millis() as u64, "remote write");
            match outcome {
                Outcome::Accepted => {
                    self.readiness.set(true);
                    return Ok(None);
                }
                Outcome::Refused(reason) => {
                    self.readiness.set(true);
                    return Ok(Some(reason));
                }
                Outcome::Misconfigured(what) => return Err(Stop::Fatal(EngineError::Misconfigured(what))),
                Outcome::Retry(why) => {
                    self.readiness.set(false);
                    self.metrics.retries.inc();
                    // Jitter: replicas that lost the database together do not return in step.
                    let wait = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
                    tracing::warn!(%why, retry_in_ms = wait.as_millis() as u64, "remote write failed; retrying");
                    self.refresh_lag(held);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Produces the dead letters and waits until Kafka confirms every one.
    async fn dead_letters(&self, batch: &[Entry], refused: &[(usize, String)]) -> Result<(), EngineError> {
        let mut framed = Vec::with_capacity(refused.len());
        for (i, reason) in refused {
            let e = &batch[*i];
            let letter = DeadLetter {
                reason: reason.clone(),
                stage: "export".to_owned(),
                source_topic: e.topic.clone(),
                source_partition: e.partition,
                source_offset: e.offset,
                key: e.key.clone(),
                payload: e.payload.clone(),
                event_time_ms: e.timestamp_ms.unwrap_or(-1),
            };
            framed.push((self.dead_codec.encode(&letter)?, letter));
        }
        let sends = framed.iter().map(|(bytes, d)| {
            let headers = crate::kafka::dead_letter_headers(d);
            let mut record = FutureRecord::to(&self.config.dlq_topic).payload(bytes.as_slice()).headers(headers);
            if let Some(key) = &d.key {
                record = record.key(key.as_slice());
            }
            tracing::warn!(
                reason = %d.reason,
                topic = %d.source_topic,
                partition = d.source_partition,
                offset = d.source_offset,
                "record to the dead-letter topic"
            );
            self.producer.send(record, Timeout::After(CALL_TIMEOUT))
        });
        for result in join_all(sends).await {
            result.map_err(|(source, _)| EngineError::DeadLetter { topic: self.config.dlq_topic.clone(), source })?;
        }
        self.metrics.dead_letters.inc_by(refused.len() as u64);
        Ok(())
    }

    /// Commits the offset after each partition's last record of the batch. A failure
    /// (the partition moved to another member meanwhile) only means the new owner
    /// re-sends those records, which the database stores once.
    async fn commit(&self, batch: &[Entry]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for e in batch {
            let o = next.entry((e.topic.as_str(), e.partition)).or_insert(0);
            *o = (*o).max(e.offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(error) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(%error, topic, partition, "cannot list an offset to commit");
            }
        }
        let committed = tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync));
        if let Err(error) = committed {
            tracing::warn!(%error, "offset commit failed; those records will be exported again");
        }
    }

    /// Sets the lag gauge: records of the assigned partitions not yet exported, that is
    /// past the consumer's position, plus the `held` records of a batch under way.
    fn refresh_lag(&mut self, held: usize) {
        if self.lag_at.is_some_and(|t| t.elapsed() < LAG_EVERY) {
            return;
        }
        self.lag_at = Some(Instant::now());
        let lag = || -> Result<i64, KafkaError> {
            Ok(held as i64 + crate::kafka::consumer_lag(&self.consumer, &self.watermarks, WATERMARK_TIMEOUT)?)
        };
        match tokio::task::block_in_place(lag) {
            Ok(lag) => {
                self.metrics.lag.set(lag);
            }
            Err(error) => tracing::debug!(%error, "cannot measure the consumer lag now"),
        }
    }
}
