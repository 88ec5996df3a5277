//! The signature table: the compacted `<prefix>.signatures` topic held in memory, the
//! way a stream processor holds a global table.
//!
//! In: the records of the topic, key `app_type/function/name`, value an Avro
//! [`FailureSignature`], a tombstone (null value) deleting its key. Out: a snapshot
//! of every signature by key, and a version counter that increases with every change,
//! so that a detector rebuilds its DTW libraries only when something changed.
//! Guarantees: [`SignatureTable::follow`] returns once the topic has been read up to the
//! high watermarks it had when the table opened (read_committed, by assignment: no
//! consumer group, nothing committed); after that a background thread follows the
//! topic until shutdown or until the table is dropped. A record that does not decode, does not pass
//! [`validate`] or whose key does not match its value is logged with its partition and
//! offset and skipped; it never stops the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::validate::{key, validate};
use crate::codec::{Codec, FailureSignature};
use crate::kafka::reader::{self, ReadError, Start};
use crate::kafka::{Cluster, ConnectError, Retention, TopicSpec};

/// Partitions of the signature topic when a command creates it: a table of at most a
/// few thousand small records needs no parallelism, and one partition keeps one order.
pub const PARTITIONS: i32 = 1;
/// One poll of the follower: also how long dropping the table may wait for it.
const POLL_SLICE: Duration = Duration::from_millis(200);
/// How long a topic just created may take to show in the metadata.
const TOPIC_VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("loading the signature table: {0}")]
    Read(#[from] ReadError),
    #[error("following {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("loading the signature table: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot start the signature table's thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The table as of one version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Number of changes applied since the table opened (the initial load included).
    pub version: u64,
    pub signatures: Arc<BTreeMap<String, FailureSignature>>,
}

/// The signature topic, loaded and followed; see the module documentation.
pub struct SignatureTable {
    topic: String,
    state: Arc<watch::Sender<Snapshot>>,
    stop: Arc<AtomicBool>,
    follower: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SignatureTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureTable").field("topic", &self.topic).field("version", &self.version()).finish()
    }
}

impl SignatureTable {
    /// Creates the topic if it is missing (compacted), loads it to the end, and follows
    /// it until `shutdown` is cancelled or the table is dropped.
    pub async fn follow(cluster: &Cluster, shutdown: CancellationToken) -> Result<Self, TableError> {
        let topic = cluster.topic::<FailureSignature>();
        ensure_topic(cluster).await?;
        let config = reader_config(cluster);
        let (signatures, positions, changes) = {
            let (config, topic) = (config.clone(), topic.clone());
            tokio::task::spawn_blocking(move || load_visible(&config, &topic)).await??
        };
        let consumer: BaseConsumer =
            config.create().map_err(|source| TableError::Kafka { topic: topic.clone(), source })?;
        let assignment = assignment(&consumer, &topic, &positions)
            .map_err(|source| TableError::Kafka { topic: topic.clone(), source })?;
        consumer.assign(&assignment).map_err(|source| TableError::Kafka { topic: topic.clone(), source })?;
        tracing::info!(%topic, signatures = signatures.len(), "signature table loaded");

        let state =
            Arc::new(watch::Sender::new(Snapshot { version: changes, signatures: Arc::new(signatures.clone()) }));
        let stop = Arc::new(AtomicBool::new(false));
        let follower = {
            let (state, stop, topic) = (state.clone(), stop.clone(), topic.clone());
            std::thread::Builder::new()
                .name("augur-signatures".into())
                .spawn(move || follow(consumer, &topic, signatures, &state, &stop, &shutdown))
                .map_err(TableError::Thread)?
        };
        Ok(Self { topic, state, stop, follower: Some(follower) })
    }

    /// Every signature by key, as of now. Cheap: the map is shared, never copied.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, FailureSignature>> {
        self.state.borrow().signatures.clone()
    }

    /// The signatures and their version, read together (reading [`Self::version`] and
    /// [`Self::snapshot`] one after the other may see a change in between).
    pub fn current(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// Increases with every change to the table.
    pub fn version(&self) -> u64 {
        self.state.borrow().version
    }

    /// A receiver that is notified of every new version (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for SignatureTable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(follower) = self.follower.take() {
            // Returns within one poll slice.
            let _ = follower.join();
        }
    }
}

/// Reads the whole table once, as it is now; a topic that does not exist yet is an
/// empty table. For commands that need the table at one moment (`list`, `delete`).
pub async fn read_table(cluster: &Cluster) -> Result<BTreeMap<String, FailureSignature>, TableError> {
    let topic = cluster.topic::<FailureSignature>();
    let config = reader_config(cluster);
    let loaded = tokio::task::spawn_blocking(move || load(&config, &topic)).await?;
    match loaded {
        Ok((signatures, _, _)) => Ok(signatures),
        Err(ReadError::NoTopic(_)) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `<prefix>.signatures`, compacted, if it does not exist.
pub async fn ensure_topic(cluster: &Cluster) -> Result<(), ConnectError> {
    let name = cluster.topic::<FailureSignature>();
    let spec = TopicSpec { name, partitions: PARTITIONS, retention: Retention::Compacted };
    match cluster.ensure_topics(&[spec]).await {
        // The embedded mock cluster reports an existing topic as an error; a real
        // cluster's is already taken as success by `ensure_topics`.
        Err(ConnectError::CreateTopic {
            source: KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists),
            ..
        }) => Ok(()),
        other => other,
    }
}

fn reader_config(cluster: &Cluster) -> ClientConfig {
    let mut config = cluster.client_config();
    config
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        // Required by librdkafka for assign(); never used to commit.
        .set("group.id", "augur-signatures");
    config
}

/// What a load found: the table, the next offset of each partition that held a
/// record, and the number of changes applied.
type Loaded = (BTreeMap<String, FailureSignature>, HashMap<i32, i64>, u64);

fn load(config: &ClientConfig, topic: &str) -> Result<Loaded, ReadError> {
    let codec = Codec::<FailureSignature>::new();
    let mut table = BTreeMap::new();
    let mut positions = HashMap::new();
    let mut changes = 0;
    reader::read_to_end(config, topic, Start::Beginning, |m| {
        positions.insert(m.partition(), m.offset() + 1);
        changes += u64::from(apply(&mut table, &codec, topic, m));
    })?;
    Ok((table, positions, changes))
}

/// [`load`], waiting for a topic created a moment ago to appear in the metadata.
fn load_visible(config: &ClientConfig, topic: &str) -> Result<Loaded, ReadError> {
    let deadline = Instant::now() + TOPIC_VISIBLE_TIMEOUT;
    loop {
        match load(config, topic) {
            Err(ReadError::NoTopic(_)) if Instant::now() < deadline => std::thread::sleep(POLL_SLICE),
            // A topic created a moment ago may not have its leader yet.
            Err(ReadError::Kafka { source, .. }) if transient(&source) && Instant::now() < deadline => {
                std::thread::sleep(POLL_SLICE)
            }
            other => return other,
        }
    }
}

/// Errors of a topic whose partitions are still being set up.
fn transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::NotLeaderForPartition | C::LeaderNotAvailable | C::UnknownTopicOrPartition | C::UnknownPartition)
    )
}

/// Every partition of the topic, from where the load stopped (or the beginning, for a
/// partition where the load saw no record).
fn assignment(
    consumer: &BaseConsumer,
    topic: &str,
    positions: &HashMap<i32, i64>,
) -> Result<TopicPartitionList, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut list = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let offset = positions.get(&p.id()).map_or(Offset::Beginning, |&o| Offset::Offset(o));
            list.add_partition_offset(topic, p.id(), offset)?;
        }
    }
    Ok(list)
}

/// Polls the topic until `stop`; applies what arrived in one batch and publishes the
/// new snapshot once per batch, so a burst of imports does not copy the table per record.
fn follow(
    consumer: BaseConsumer,
    topic: &str,
    mut table: BTreeMap<String, FailureSignature>,
    state: &watch::Sender<Snapshot>,
    stop: &AtomicBool,
    shutdown: &CancellationToken,
) {
    let codec = Codec::<FailureSignature>::new();
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) && !shutdown.is_cancelled() {
        let mut changes = 0;
        let mut wait = POLL_SLICE;
        while let Some(result) = consumer.poll(wait) {
            wait = Duration::ZERO;
            match result {
                Ok(m) => {
                    last_error = None;
                    changes += u64::from(apply(&mut table, &codec, topic, &m));
                }
                Err(error) => {
                    // librdkafka retries on its own; say so once per distinct error.
                    let text = error.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(%error, %topic, "signature table: consumer error (retrying)");
                        last_error = Some(text);
                    }
                    break;
                }
            }
        }
        if changes > 0 {
            let signatures = Arc::new(table.clone());
            state.send_modify(|snapshot| {
                snapshot.signatures = signatures;
                snapshot.version += changes;
            });
            tracing::info!(%topic, signatures = table.len(), changes, "signature table changed");
        }
    }
}

/// Applies one record to `table`; true if the table changed. Records that cannot be
/// used are logged and leave the table as it was.
fn apply(
    table: &mut BTreeMap<String, FailureSignature>,
    codec: &Codec<FailureSignature>,
    topic: &str,
    m: &BorrowedMessage<'_>,
) -> bool {
    let (partition, offset) = (m.partition(), m.offset());
    let skip = |reason: &dyn std::fmt::Display| {
        tracing::warn!(%topic, partition, offset, %reason, "signature record skipped");
        false
    };
    let Some(Ok(record_key)) = m.key().map(std::str::from_utf8) else {
        return skip(&"no key, or a key that is not UTF-8");
    };
    let Some(payload) = m.payload() else {
        return table.remove(record_key).is_some();
    };
    let signature = match codec.decode(payload) {
        Ok(s) => s,
        Err(e) => return skip(&e),
    };
    if let Err(e) = validate(&signature) {
        return skip(&e);
    }
    let own_key = key(&signature);
    if own_key != record_key {
        return skip(&format!("record key {record_key:?} differs from the signature's key {own_key:?}"));
    }
    if table.get(record_key) == Some(&signature) {
        return false;
    }
    table.insert(own_key, signature);
    true
}
