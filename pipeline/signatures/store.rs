//! Writes to the signature table: imports and deletes.
//!
//! In: validated [`FailureSignature`]s, or the key of one to delete. Out: records on the
//! compacted `<prefix>.signatures` topic, key `app_type/function/name`. Guarantees: an
//! import is one Kafka transaction, so a read_committed table sees all of its
//! signatures or none; a delete is a tombstone from an idempotent producer, confirmed
//! by the cluster before it returns. Nothing invalid is written: every signature is
//! validated again here, whatever the caller did.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::table::{ensure_topic, read_table, TableError};
use super::validate::{key, validate, InvalidSignature};
use crate::codec::{Codec, CodecError, FailureSignature};
use crate::kafka::{Cluster, ConnectError};

/// How long initialising, committing or aborting the transaction, or confirming a
/// tombstone, may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Commits retried after a retriable error before the import gives up.
const COMMIT_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Invalid(#[from] InvalidSignature),
    #[error(transparent)]
    Encode(#[from] CodecError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing to {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("the import to {topic} was aborted, nothing was imported: {source}")]
    Aborted {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("no signature {key:?} in {topic}; `augur signatures list` shows the keys")]
    NoSuchKey { key: String, topic: String },
    #[error("importing: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Writes `signatures` to the table in one transaction; returns how many. The
/// transactional id is derived from the topic, so a second import to the same topic
/// that overlaps this one fences it instead of interleaving with it.
pub async fn import(cluster: &Cluster, signatures: &[FailureSignature]) -> Result<usize, StoreError> {
    let codec = Codec::<FailureSignature>::new();
    let mut records = Vec::with_capacity(signatures.len());
    for s in signatures {
        validate(s)?;
        records.push((key(s), codec.encode(s)?));
    }
    ensure_topic(cluster).await?;
    let topic = cluster.topic::<FailureSignature>();
    let mut config = cluster.producer_config();
    config.set("transactional.id", format!("{topic}.import"));
    let count = records.len();
    tokio::task::spawn_blocking(move || {
        let kafka = |source| StoreError::Kafka { topic: topic.clone(), source };
        let producer: BaseProducer = config.create().map_err(kafka)?;
        producer.init_transactions(CALL_TIMEOUT).map_err(kafka)?;
        producer.begin_transaction().map_err(kafka)?;
        for (k, payload) in &records {
            if let Err(source) = send(&producer, &topic, k, payload) {
                return Err(abort(&producer, &topic, source));
            }
        }
        // The commit flushes: it returns once every record is written, or fails.
        let mut attempt = 1;
        loop {
            match producer.commit_transaction(CALL_TIMEOUT) {
                Ok(()) => return Ok(count),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < COMMIT_ATTEMPTS => attempt += 1,
                Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                    return Err(abort(&producer, &topic, KafkaError::Transaction(e)))
                }
                Err(source) => return Err(kafka(source)),
            }
        }
    })
    .await?
}

/// Produces one record, waiting for room in the queue if it is full.
fn send(producer: &BaseProducer, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(100));
                record = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Aborts the open transaction; the error says nothing was imported either way (an
/// abort that fails leaves the transaction to time out, uncommitted).
fn abort(producer: &BaseProducer, topic: &str, source: KafkaError) -> StoreError {
    if let Err(error) = producer.abort_transaction(CALL_TIMEOUT) {
        tracing::warn!(%error, %topic, "aborting the import failed; the broker will time it out");
    }
    StoreError::Aborted { topic: topic.to_owned(), source }
}

/// Deletes the signature `key` with a tombstone; refuses a key the table does not hold.
pub async fn delete(cluster: &Cluster, key: &str) -> Result<(), StoreError> {
    let topic = cluster.topic::<FailureSignature>();
    if !read_table(cluster).await?.contains_key(key) {
        return Err(StoreError::NoSuchKey { key: key.to_owned(), topic });
    }
    let kafka = |source| StoreError::Kafka { topic: topic.clone(), source };
    let producer: FutureProducer = cluster.producer_config().create().map_err(kafka)?;
    let tombstone = FutureRecord::<str, [u8]>::to(&topic).key(key);
    producer.send(tombstone, Timeout::After(CALL_TIMEOUT)).await.map_err(|(source, _)| kafka(source))?;
    Ok(())
}
