//! A global table: a compacted topic held in memory, the way a stream processor holds
//! one (the signature table, the model table).
//!
//! In: the records of the topic, key the entry's own [`Entry::key`], value an Avro
//! record, a tombstone (null value) deleting its key. Out: a snapshot of every entry
//! by key, and a version counter that increases with every change, so that a reader
//! rebuilds what it derives from the table only when something changed.
//! Guarantees: [`Table::follow`] returns once the topic has been read up to the high
//! watermarks it had when the table opened (read_committed, by assignment: no
//! consumer group, nothing committed); after that a background thread follows the
//! topic until shutdown or until the table is dropped. A record that does not decode,
//! does not pass [`Entry::check`] or whose key does not match its value is logged with
//! its partition and offset and skipped; it never stops the table.

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

use super::reader::{self, ReadError, Start};
use super::{Cluster, ConnectError, Retention, TopicSpec};
use crate::codec::{Codec, Record};

/// Partitions of a table's topic when a command creates it: a table of at most a few
/// thousand small records needs no parallelism, and one partition keeps one order.
pub const PARTITIONS: i32 = 1;
/// One poll of the follower: also how long dropping the table may wait for it.
const POLL_SLICE: Duration = Duration::from_millis(200);
/// How long a topic just created may take to show in the metadata.
const TOPIC_VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("loading a table: {0}")]
    Read(#[from] ReadError),
    #[error("following {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("loading a table: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot start a table's thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A record that a [`Table`] holds.
pub trait Entry: Record + Clone + PartialEq + Send + Sync + 'static {
    /// What the entries are, for logs and the follower thread's name.
    const NAME: &'static str;
    /// The key the entry is stored under; a record whose key differs is skipped.
    fn key(&self) -> String;
    /// Whether the entry may be used; the reason if not.
    fn check(&self) -> Result<(), String>;
}

/// The table as of one version.
#[derive(Debug, Clone)]
pub struct Snapshot<V> {
    /// Number of changes applied since the table opened (the initial load included).
    pub version: u64,
    pub entries: Arc<BTreeMap<String, V>>,
}

impl<V> Default for Snapshot<V> {
    fn default() -> Self {
        Self { version: 0, entries: Arc::default() }
    }
}

/// A compacted topic, loaded and followed; see the module documentation.
pub struct Table<V: Entry> {
    topic: String,
    state: Arc<watch::Sender<Snapshot<V>>>,
    stop: Arc<AtomicBool>,
    follower: Option<JoinHandle<()>>,
}

impl<V: Entry> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("topic", &self.topic).field("version", &self.version()).finish()
    }
}

impl<V: Entry> Table<V> {
    /// Creates the topic if it is missing (compacted), loads it to the end, and follows
    /// it until `shutdown` is cancelled or the table is dropped.
    pub async fn follow(cluster: &Cluster, shutdown: CancellationToken) -> Result<Self, TableError> {
        let topic = cluster.topic::<V>();
        ensure_topic::<V>(cluster).await?;
        let config = reader_config::<V>(cluster);
        let (entries, positions, changes) = {
            let (config, topic) = (config.clone(), topic.clone());
            tokio::task::spawn_blocking(move || load_visible::<V>(&config, &topic)).await??
        };
        let consumer: BaseConsumer =
            config.create().map_err(|source| TableError::Kafka { topic: topic.clone(), source })?;
        let assignment = assignment(&consumer, &topic, &positions)
            .map_err(|source| TableError::Kafka { topic: topic.clone(), source })?;
        consumer.assign(&assignment).map_err(|source| TableError::Kafka { topic: topic.clone(), source })?;
        tracing::info!(%topic, entries = entries.len(), "{} table loaded", V::NAME);

        let state = Arc::new(watch::Sender::new(Snapshot { version: changes, entries: Arc::new(entries.clone()) }));
        let stop = Arc::new(AtomicBool::new(false));
        let follower = {
            let (state, stop, topic) = (state.clone(), stop.clone(), topic.clone());
            std::thread::Builder::new()
                .name(format!("augur-{}", V::NAME))
                .spawn(move || follow(consumer, &topic, entries, &state, &stop, &shutdown))
                .map_err(TableError::Thread)?
        };
        Ok(Self { topic, state, stop, follower: Some(follower) })
    }

    /// Every entry by key, as of now. Cheap: the map is shared, never copied.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, V>> {
        self.state.borrow().entries.clone()
    }

    /// The entries and their version, read together (reading [`Self::version`] and
    /// [`Self::snapshot`] one after the other may see a change in between).
    pub fn current(&self) -> Snapshot<V> {
        self.state.borrow().clone()
    }

    /// Increases with every change to the table.
    pub fn version(&self) -> u64 {
        self.state.borrow().version
    }

    /// A receiver that is notified of every new version (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot<V>> {
        self.state.subscribe()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl<V: Entry> Drop for Table<V> {
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
pub async fn read_table<V: Entry>(cluster: &Cluster) -> Result<BTreeMap<String, V>, TableError> {
    let topic = cluster.topic::<V>();
    let config = reader_config::<V>(cluster);
    let loaded = tokio::task::spawn_blocking(move || load::<V>(&config, &topic)).await?;
    match loaded {
        Ok((entries, _, _)) => Ok(entries),
        Err(ReadError::NoTopic(_)) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the table's topic, compacted, if it does not exist.
pub async fn ensure_topic<V: Entry>(cluster: &Cluster) -> Result<(), ConnectError> {
    let name = cluster.topic::<V>();
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

fn reader_config<V: Entry>(cluster: &Cluster) -> ClientConfig {
    let mut config = cluster.client_config();
    config
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        // Required by librdkafka for assign(); never used to commit.
        .set("group.id", format!("augur-{}", V::NAME));
    config
}

/// What a load found: the table, the next offset of each partition that held a
/// record, and the number of changes applied.
type Loaded<V> = (BTreeMap<String, V>, HashMap<i32, i64>, u64);

fn load<V: Entry>(config: &ClientConfig, topic: &str) -> Result<Loaded<V>, ReadError> {
    let codec = Codec::<V>::new();
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
fn load_visible<V: Entry>(config: &ClientConfig, topic: &str) -> Result<Loaded<V>, ReadError> {
    let deadline = Instant::now() + TOPIC_VISIBLE_TIMEOUT;
    loop {
        match load::<V>(config, topic) {
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
fn follow<V: Entry>(
    consumer: BaseConsumer,
    topic: &str,
    mut table: BTreeMap<String, V>,
    state: &watch::Sender<Snapshot<V>>,
    stop: &AtomicBool,
    shutdown: &CancellationToken,
) {
    let codec = Codec::<V>::new();
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
                        tracing::warn!(%error, %topic, "{} table: consumer error (retrying)", V::NAME);
                        last_error = Some(text);
                    }
                    break;
                }
            }
        }
        if changes > 0 {
            let entries = Arc::new(table.clone());
            state.send_modify(|snapshot| {
                snapshot.entries = entries;
                snapshot.version += changes;
            });
            tracing::info!(%topic, entries = table.len(), changes, "{} table changed", V::NAME);
        }
    }
}

/// Applies one record to `table`; true if the table changed. Records that cannot be
/// used are logged and leave the table as it was.
fn apply<V: Entry>(table: &mut BTreeMap<String, V>, codec: &Codec<V>, topic: &str, m: &BorrowedMessage<'_>) -> bool {
    let (partition, offset) = (m.partition(), m.offset());
    let skip = |reason: &dyn std::fmt::Display| {
        tracing::warn!(%topic, partition, offset, %reason, "{} record skipped", V::NAME);
        false
    };
    let Some(Ok(record_key)) = m.key().map(std::str::from_utf8) else {
        return skip(&"no key, or a key that is not UTF-8");
    };
    let Some(payload) = m.payload() else {
        return table.remove(record_key).is_some();
    };
    let entry = match codec.decode(payload) {
        Ok(s) => s,
        Err(e) => return skip(&e),
    };
    if let Err(e) = entry.check() {
        return skip(&e);
    }
    let own_key = entry.key();
    if own_key != record_key {
        return skip(&format!("record key {record_key:?} differs from the {}'s key {own_key:?}", V::NAME));
    }
    if table.get(record_key) == Some(&entry) {
        return false;
    }
    table.insert(own_key, entry);
    true
}
