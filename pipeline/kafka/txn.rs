//! The transactional producer's calls as every exactly-once loop makes them.
//!
//! In: a producer with a `transactional.id` and records for the open transaction. Out:
//! the records sent (waiting out a full local queue rather than dropping), and the
//! consumed offsets committed with them — the only place offsets are committed. Errors
//! are sorted as librdkafka documents: retriable calls are retried here, abortable ones
//! tell the caller to abort and read its input again, fatal ones end the loop.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;

/// How long a transactional call may block before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the caller does after a failed transactional step.
#[derive(Debug)]
pub enum TxnError {
    /// Abort the transaction and read the input again from the committed offsets.
    Abort(KafkaError),
    /// The producer cannot go on (fenced by a newer instance with the same id, or broken).
    Fatal(KafkaError),
    Encode(crate::codec::CodecError),
}

/// Sorts a transactional call's error: fatal ones are fatal, everything else (abortable,
/// or not a transactional error at all) aborts and reads the input again.
pub fn classify(e: KafkaError) -> TxnError {
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => TxnError::Fatal(e),
        _ => TxnError::Abort(e),
    }
}

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

/// Sends a record into the open transaction; a full local queue is backpressure, not
/// an error: librdkafka delivers, then the record is offered again.
pub fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), TxnError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(50));
                record = r;
            }
            Err((e, _)) => return Err(classify(e)),
        }
    }
}

/// Aborts the open transaction. Aborting purges the records still in flight, and
/// librdkafka will not finish until their delivery reports have been served: on a
/// `BaseProducer` nobody else polls, so a batch with many records outstanding (a
/// rebalance in the middle of a large transaction) times out unless the caller polls.
/// Retries the abort, polling between tries, until `timeout`.
pub fn abort(producer: &BaseProducer, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        match producer.abort_transaction(ABORT_SLICE) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && std::time::Instant::now() < deadline => {
                producer.poll(ABORT_SLICE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One try of [`abort`]: short enough that delivery reports are served often.
const ABORT_SLICE: Duration = Duration::from_millis(500);

/// Sends a dead letter into the open transaction, keyed as its source record was, with
/// the reason and source in headers as well as in the record.
pub fn send_dead_letter(
    producer: &BaseProducer,
    codec: &crate::codec::Codec<crate::codec::DeadLetter>,
    topic: &str,
    dead: &crate::codec::DeadLetter,
    buf: &mut Vec<u8>,
) -> Result<(), TxnError> {
    codec.encode_into(dead, buf).map_err(TxnError::Encode)?;
    let mut record = BaseRecord::to(topic).payload(buf.as_slice()).headers(super::dead_letter_headers(dead));
    if let Some(key) = &dead.key {
        record = record.key(key.as_slice());
    }
    send(producer, record)
}

/// Adds the consumed `offsets` to the open transaction and commits it. No group
/// metadata means the consumer is not (or no longer) a member: abort.
pub fn commit(
    producer: &BaseProducer,
    metadata: Option<ConsumerGroupMetadata>,
    offsets: &TopicPartitionList,
) -> Result<(), TxnError> {
    let metadata = metadata.ok_or(TxnError::Abort(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId)))?;
    loop {
        match producer.send_offsets_to_transaction(offsets, &metadata, CALL_TIMEOUT) {
            Ok(()) => break,
            Err(e) if retriable(&e) => continue,
            Err(e) => return Err(classify(e)),
        }
    }
    loop {
        match producer.commit_transaction(CALL_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if retriable(&e) => continue,
            Err(e) => return Err(classify(e)),
        }
    }
}
