//! Reads a topic from given offsets up to the high watermarks seen at the start: the
//! bounded replay that the demo's read-back, signature extraction and window rebuilds
//! share.
//!
//! In: a consumer configuration and a topic. Out: every committed record below each
//! partition's high watermark (as of the call), partition by partition, handed to a
//! callback. Joins no consumer group and commits nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

/// How long one metadata, watermark or poll call may take before the read fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// One poll: short, so a partition that ends in transaction markers is left soon.
const POLL_SLICE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error(
        "{topic}/{partition}: no record at offset {offset} below the high watermark {high} within {CALL_TIMEOUT:?}"
    )]
    Stalled { topic: String, partition: i32, offset: i64, high: i64 },
}

/// Where each partition's read starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The oldest retained record.
    Beginning,
    /// The first record with a timestamp at or after this event time (epoch ms).
    Time(i64),
    /// This offset (or the oldest retained, if that is later).
    Offset(i64),
    /// This many offsets before the high watermark (a few more than records: the last
    /// offsets may be transaction markers).
    Tail(i64),
}

/// The newest record timestamp in `topic` (`None` for an empty topic): the event time
/// its producers have reached. Blocking.
pub fn latest_timestamp(config: &ClientConfig, topic: &str) -> Result<Option<i64>, ReadError> {
    let mut latest = None;
    read_to_end(config, topic, Start::Tail(16), |m| {
        if let Some(t) = m.timestamp().to_millis() {
            latest = Some(latest.map_or(t, |l: i64| l.max(t)));
        }
    })?;
    Ok(latest)
}

/// Reads `topic` from `start` to the high watermarks as they are now, calling `each`
/// for every record; returns the number of records read. Blocking: call it from a
/// blocking thread (`spawn_blocking`) in async code.
pub fn read_to_end(
    config: &ClientConfig,
    topic: &str,
    start: Start,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, ReadError> {
    let err = |source| ReadError::Kafka { topic: topic.to_owned(), source };
    let consumer = self::consumer(config).map_err(err)?;
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT).map_err(err)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .ok_or_else(|| ReadError::NoTopic(topic.to_owned()))?;

    let mut read = 0;
    for partition in partitions {
        read += read_partition(&consumer, topic, partition, start, None, &mut each)?;
    }
    Ok(read)
}

/// Reads one partition of `topic` from `start` up to `until` (exclusive; `None`: the
/// high watermark as it is now) with a consumer that belongs to no group, calling `each`
/// for every committed record; returns the number read. Blocking.
pub fn read_partition<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    start: Start,
    until: Option<i64>,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, ReadError> {
    let err = |source| ReadError::Kafka { topic: topic.to_owned(), source };
    let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT).map_err(err)?;
    let high = until.map_or(high, |u| u.min(high));
    let from = match start {
        Start::Beginning => low,
        Start::Offset(o) => o.max(low),
        Start::Tail(n) => (high - n).max(low),
        Start::Time(t) => {
            let mut query = TopicPartitionList::new();
            query.add_partition_offset(topic, partition, Offset::Offset(t)).map_err(err)?;
            let found = consumer.offsets_for_times(query, CALL_TIMEOUT).map_err(err)?;
            match found.find_partition(topic, partition).map(|p| p.offset()) {
                Some(Offset::Offset(o)) => o,
                // No record at or after `t`: nothing to read in this partition.
                _ => high,
            }
        }
    };
    if from >= high {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(err)?;
    consumer.assign(&tpl).map_err(err)?;
    let mut read = 0;
    let mut next = from;
    let mut waited = Duration::ZERO;
    while next < high {
        match consumer.poll(POLL_SLICE) {
            Some(Ok(m)) => {
                waited = Duration::ZERO;
                next = m.offset() + 1;
                if m.offset() < high {
                    each(&m);
                    read += 1;
                }
            }
            Some(Err(source)) => return Err(err(source)),
            // Under read_committed the last offsets below the watermark may be
            // transaction markers or aborted records, never delivered; the
            // consumer's position says whether it has passed them.
            None => {
                let position = consumer.position().map_err(err)?;
                if let Some(Offset::Offset(p)) = position.find_partition(topic, partition).map(|p| p.offset()) {
                    next = next.max(p);
                }
                waited += POLL_SLICE;
                if next < high && waited >= CALL_TIMEOUT {
                    return Err(ReadError::Stalled { topic: topic.to_owned(), partition, offset: next, high });
                }
            }
        }
    }
    Ok(read)
}

/// Reads a topic's committed records in installments: each [`Follower::read_new`]
/// hands over what was committed since the previous call, every partition at once.
/// For a caller that knows when the writers are done (the demo steps its stages in
/// turn), so it waits for records below the watermarks only.
pub struct Follower {
    consumer: BaseConsumer,
    topic: String,
    /// Next offset to read, per partition.
    next: BTreeMap<i32, i64>,
}

impl Follower {
    /// Starts at the oldest retained record of every partition `topic` has now.
    pub fn new(config: &ClientConfig, topic: &str) -> Result<Self, ReadError> {
        let err = |source| ReadError::Kafka { topic: topic.to_owned(), source };
        let mut config = config.clone();
        // The end of a partition is often a transaction marker, never delivered: ask
        // again soon rather than after the default half second.
        config.set("fetch.wait.max.ms", "10");
        let consumer = self::consumer(&config).map_err(err)?;
        let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT).map_err(err)?;
        let mut next = BTreeMap::new();
        for p in
            metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()).flat_map(|t| t.partitions())
        {
            let (low, _) = consumer.fetch_watermarks(topic, p.id(), CALL_TIMEOUT).map_err(err)?;
            next.insert(p.id(), low);
        }
        if next.is_empty() {
            return Err(ReadError::NoTopic(topic.to_owned()));
        }
        Ok(Self { consumer, topic: topic.to_owned(), next })
    }

    /// Calls `each` for every committed record below the high watermarks as they are
    /// now, partition by partition in offset order (partitions interleaved); returns
    /// how many. Blocking.
    pub fn read_new(&mut self, mut each: impl FnMut(&BorrowedMessage<'_>)) -> Result<u64, ReadError> {
        let topic = self.topic.clone();
        let err = |source| ReadError::Kafka { topic: topic.clone(), source };
        let mut high = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in &self.next {
            let (_, h) = self.consumer.fetch_watermarks(&topic, p, CALL_TIMEOUT).map_err(err)?;
            if next < h {
                high.insert(p, h);
                tpl.add_partition_offset(&topic, p, Offset::Offset(next)).map_err(err)?;
            }
        }
        if high.is_empty() {
            return Ok(0);
        }
        self.consumer.assign(&tpl).map_err(err)?;
        let mut read = 0;
        let mut waited = Duration::ZERO;
        while high.iter().any(|(p, h)| self.next[p] < *h) {
            match self.consumer.poll(FOLLOW_SLICE) {
                Some(Ok(m)) => {
                    waited = Duration::ZERO;
                    let p = m.partition();
                    if let (Some(next), Some(&h)) = (self.next.get_mut(&p), high.get(&p)) {
                        *next = m.offset() + 1;
                        if m.offset() < h {
                            each(&m);
                            read += 1;
                        }
                    }
                }
                Some(Err(source)) => return Err(err(source)),
                None => {
                    // Markers and aborted records are skipped: the position says so.
                    for e in self.consumer.position().map_err(err)?.elements() {
                        if let (Offset::Offset(o), Some(next)) = (e.offset(), self.next.get_mut(&e.partition())) {
                            *next = (*next).max(o);
                        }
                    }
                    waited += FOLLOW_SLICE;
                    if let Some((&partition, &h)) = high.iter().find(|(p, h)| self.next[*p] < **h) {
                        if waited >= CALL_TIMEOUT {
                            let offset = self.next[&partition];
                            return Err(ReadError::Stalled { topic, partition, offset, high: h });
                        }
                    }
                }
            }
        }
        Ok(read)
    }
}

/// One poll of a [`Follower`]: it waits for records known to be there.
const FOLLOW_SLICE: Duration = Duration::from_millis(5);

/// A consumer for [`read_partition`]: reads committed records, belongs to no group.
pub fn consumer(config: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    let mut config = config.clone();
    config
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Required by librdkafka for assign(); never used to commit.
        .set("group.id", "augur-reader");
    config.create()
}
