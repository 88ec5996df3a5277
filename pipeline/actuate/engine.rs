//! The actuator's Kafka loop: adjustments in, changes made, audit and offsets out in one
//! transaction.
//!
//! In: `<prefix>.adjustments` (`read_committed`, a consumer group, no auto-commit).
//! Out: per batch, one transaction holding an [`Actuation`] per adjustment (and a dead
//! letter per record that does not decode) together with the offsets after the batch —
//! written only after every change of the batch is durable. A crash between a change
//! and its commit leaves the change and no audit; the adjustment is delivered again, its
//! fence is found, and it is audited as a duplicate instead of being made twice.
//!
//! The guardrails' state (cooldowns, rate limits) is rebuilt at start from the audit of
//! the last `state_lookback` of wall time, so a restarted actuator does not forget the
//! actions of its previous self.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::actuate::apply::{self, Fatal, Gate, Retry};
use crate::actuate::backend::Backend;
use crate::codec::{Action, Actuation, ActuationResult, Adjustment, Codec, DeadLetter};
use crate::kafka::reader::{self, Start};
use crate::kafka::txn::{self, TxnError, CALL_TIMEOUT};
use crate::observe::Readiness;
use crate::policy::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the transactional producer was fenced or failed fatally (another actuator with replica id {replica} started?): {source}")]
    Fenced {
        replica: String,
        #[source]
        source: KafkaError,
    },
    #[error(transparent)]
    Backend(#[from] Fatal),
    #[error("rebuilding the guardrails from {topic}: {reason}")]
    Restore { topic: String, reason: String },
    #[error("encoding an output record: {0}")]
    Encode(#[from] crate::codec::CodecError),
}

pub struct EngineConfig {
    pub consumer: ClientConfig,
    pub producer: ClientConfig,
    /// For the read of the audit that rebuilds the guardrails.
    pub reader: ClientConfig,
    pub adjustments_topic: String,
    pub actuations_topic: String,
    pub dlq_topic: String,
    pub replica_id: String,
    pub retry: Retry,
    pub dry_run: bool,
    /// Adjustments per transaction at most.
    pub batch_max: usize,
    /// How far back (wall time) the audit is read to rebuild the guardrails.
    pub state_lookback: Duration,
    /// Counts the adjustments of every committed transaction (for a caller in the same
    /// process that waits for the actuator to catch up: the demo, tests).
    pub committed: Arc<AtomicU64>,
    pub metrics: Metrics,
    pub readiness: Readiness,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// `augur_actuate_*`: moved only when a transaction commits.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub actuations: Family<ResultLabels, Counter>,
    pub dead_letters: Counter,
    pub transactions: Counter,
    pub aborts: Counter,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("augur_actuate");
        r.register("actuations", "Adjustments handled, by result", self.actuations.clone());
        r.register("dead_letters", "Adjustment records that did not decode", self.dead_letters.clone());
        r.register("transactions", "Transactions committed", self.transactions.clone());
        r.register("aborts", "Transactions aborted", self.aborts.clone());
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub by_result: BTreeMap<String, u64>,
    pub dead: u64,
    pub transactions: u64,
    pub aborts: u64,
}

/// What one polled record became, before its transaction.
enum Out {
    Audit(Actuation),
    Dead(DeadLetter),
}

/// Runs the loop until `shutdown`; blocking (run it on a thread of its own). Backend
/// calls run on `runtime`. NOTIFY adjustments go to `notifier` if there is one.
pub fn run<B: Backend, N: Backend>(
    config: EngineConfig,
    backend: &B,
    notifier: Option<&N>,
    gate: &mut dyn Gate,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<Totals, EngineError> {
    restore(&config, gate)?;
    let consumer: BaseConsumer = config.consumer.create()?;
    let producer: BaseProducer = config.producer.create()?;
    producer.init_transactions(CALL_TIMEOUT).map_err(|e| fenced(&config, e))?;
    consumer.subscribe(&[&config.adjustments_topic])?;
    config.readiness.set(true);
    tracing::info!(topic = %config.adjustments_topic, backend = backend.name(), dry_run = config.dry_run, "actuating");
    let adjustment_codec = Codec::<Adjustment>::new();
    let actuation_codec = Codec::<Actuation>::new();
    let dead_codec = Codec::<DeadLetter>::new();
    let mut totals = Totals::default();

    while !shutdown.is_cancelled() {
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::new();
        while batch.len() < config.batch_max && !shutdown.is_cancelled() {
            // Wait for the first record; take what else is already there.
            let wait = if batch.is_empty() { Duration::from_millis(100) } else { Duration::ZERO };
            match consumer.poll(wait) {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {
                    if !batch.is_empty() {
                        break;
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }

        let mut outs = Vec::with_capacity(batch.len());
        for m in &batch {
            let out = match decode(&adjustment_codec, m) {
                Err(d) => Out::Dead(*d),
                Ok(adjustment) => {
                    let via_notifier = adjustment.action == Action::Notify;
                    let audit = runtime.block_on(async {
                        match (via_notifier, notifier) {
                            (true, Some(n)) => {
                                apply::actuate(n, gate, &adjustment, &config.retry, config.dry_run).await
                            }
                            (true, None) => Ok(no_notifier(&adjustment)),
                            _ => apply::actuate(backend, gate, &adjustment, &config.retry, config.dry_run).await,
                        }
                    })?;
                    tracing::debug!(adjustment = %audit.adjustment_id, result = ?audit.result, detail = %audit.detail, "actuation");
                    Out::Audit(audit)
                }
            };
            outs.push(out);
        }

        let mut offsets = TopicPartitionList::new();
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for m in &batch {
            last.insert(m.partition(), m.offset());
        }
        for (p, o) in &last {
            offsets.add_partition_offset(&config.adjustments_topic, *p, Offset::Offset(o + 1))?;
        }
        match transact(&config, &producer, &consumer, &offsets, &outs, &actuation_codec, &dead_codec) {
            Ok(()) => {
                totals.transactions += 1;
                config.metrics.transactions.inc();
                for out in &outs {
                    match out {
                        Out::Audit(a) => {
                            let r = a.result.name();
                            *totals.by_result.entry(r.to_owned()).or_default() += 1;
                            config.metrics.actuations.get_or_create(&ResultLabels { result: r.to_owned() }).inc();
                        }
                        Out::Dead(_) => {
                            totals.dead += 1;
                            config.metrics.dead_letters.inc();
                        }
                    }
                }
                config.committed.fetch_add(outs.len() as u64, Ordering::Relaxed);
            }
            Err(TxnError::Abort(e)) => {
                // The changes stay made; their adjustments come again and are found by
                // their fences. The guardrails already remember them.
                tracing::warn!(error = %e, "transaction aborted; reading the batch again");
                totals.aborts += 1;
                config.metrics.aborts.inc();
                crate::kafka::txn::abort(&producer, CALL_TIMEOUT).map_err(|e| fenced(&config, e))?;
                drop(batch);
                rewind(&consumer, &config.adjustments_topic)?;
            }
            Err(TxnError::Fatal(e)) => return Err(fenced(&config, e)),
            Err(TxnError::Encode(e)) => return Err(EngineError::Encode(e)),
        }
    }
    tracing::info!("leaving the consumer group");
    consumer.unsubscribe();
    Ok(totals)
}

fn fenced(config: &EngineConfig, source: KafkaError) -> EngineError {
    EngineError::Fenced { replica: config.replica_id.clone(), source }
}

fn decode(codec: &Codec<Adjustment>, m: &BorrowedMessage<'_>) -> Result<Adjustment, Box<DeadLetter>> {
    let reason = match m.payload().map(|p| codec.decode(p)) {
        Some(Ok(a)) => match check(&a) {
            None => return Ok(a),
            Some(r) => r,
        },
        Some(Err(e)) => format!("not an adjustment record: {e}"),
        None => "empty record (no payload)".to_owned(),
    };
    Err(Box::new(DeadLetter {
        source_topic: m.topic().to_owned(),
        source_partition: m.partition(),
        source_offset: m.offset(),
        reason,
        stage: "actuate".to_owned(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        event_time_ms: m.timestamp().to_millis().unwrap_or(0),
    }))
}

/// An adjustment out of bounds is refused whole, before any backend sees it.
fn check(a: &Adjustment) -> Option<String> {
    let factor_ok = |f: f64| f.is_finite() && f > 0.0 && f <= 10.0;
    if a.id.is_empty() || a.instance_id.is_empty() {
        return Some("adjustment without id or instance".to_owned());
    }
    if !factor_ok(a.cpu_factor) || !factor_ok(a.memory_factor) {
        return Some(format!("factor out of bounds (0, 10]: cpu {} memory {}", a.cpu_factor, a.memory_factor));
    }
    if !(0.0..=1.0).contains(&a.shed_fraction) {
        return Some(format!("shed_fraction {} outside 0..1", a.shed_fraction));
    }
    if !(0..=1000).contains(&a.replicas_delta) {
        return Some(format!("replicas_delta {} outside 0..1000", a.replicas_delta));
    }
    None
}

/// Audit of a critical-tier notification with nowhere to go.
pub(crate) fn no_notifier(a: &Adjustment) -> Actuation {
    apply::refusal(a, "notify", "no --notify-url configured: operations not notified".to_owned())
}

fn transact(
    config: &EngineConfig,
    producer: &BaseProducer,
    consumer: &BaseConsumer,
    offsets: &TopicPartitionList,
    outs: &[Out],
    actuation_codec: &Codec<Actuation>,
    dead_codec: &Codec<DeadLetter>,
) -> Result<(), TxnError> {
    producer.begin_transaction().map_err(txn::classify)?;
    let mut buf = Vec::with_capacity(512);
    for out in outs {
        match out {
            Out::Audit(a) => {
                actuation_codec.encode_into(a, &mut buf).map_err(TxnError::Encode)?;
                let record = BaseRecord::to(&config.actuations_topic)
                    .key(a.adjustment_id.as_bytes())
                    .payload(&buf)
                    .timestamp(a.applied_at_ms);
                txn::send(producer, record)?;
            }
            Out::Dead(d) => txn::send_dead_letter(producer, dead_codec, &config.dlq_topic, d, &mut buf)?,
        }
    }
    txn::commit(producer, consumer.group_metadata(), offsets)
}

/// After an abort: back to the committed offsets of every assigned partition.
fn rewind(consumer: &BaseConsumer, topic: &str) -> Result<(), EngineError> {
    let assignment = consumer.assignment()?;
    let committed = consumer.committed_offsets(assignment, CALL_TIMEOUT)?;
    for e in committed.elements().iter().filter(|e| e.topic() == topic) {
        let to = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        consumer.seek(e.topic(), e.partition(), to, CALL_TIMEOUT)?;
    }
    Ok(())
}

/// Feeds the guardrails the actions of the audit's recent past, oldest event first.
fn restore(config: &EngineConfig, gate: &mut dyn Gate) -> Result<(), EngineError> {
    let codec = Codec::<Actuation>::new();
    let from = apply::wall_ms() - config.state_lookback.as_millis() as i64;
    let mut acted = Vec::new();
    let read = reader::read_to_end(&config.reader, &config.actuations_topic, Start::Time(from), |m| {
        if let Some(Ok(a)) = m.payload().map(|p| codec.decode(p)) {
            if matches!(a.result, ActuationResult::Applied | ActuationResult::Duplicate | ActuationResult::DryRun) {
                acted.push(a);
            }
        }
    });
    match read {
        Ok(_) | Err(reader::ReadError::NoTopic(_)) => {}
        Err(e) => return Err(EngineError::Restore { topic: config.actuations_topic.clone(), reason: e.to_string() }),
    }
    acted.sort_by_key(|a| a.event_time_ms);
    for a in &acted {
        let (adjustment, plan) = from_audit(a);
        gate.remember(&adjustment, &plan);
    }
    tracing::info!(
        actions = acted.len(),
        lookback_s = config.state_lookback.as_secs(),
        "guardrails rebuilt from the audit"
    );
    Ok(())
}

/// The adjustment and plan an audit record stands for, as far as guardrails need them.
fn from_audit(a: &Actuation) -> (Adjustment, Plan) {
    let action: Action = serde_json::from_value(serde_json::Value::String(a.action.clone())).unwrap_or(Action::None);
    let adjustment = Adjustment {
        id: a.adjustment_id.clone(),
        alert_id: String::new(),
        instance_id: a.instance_id.clone(),
        app_type: a.app_type.clone(),
        function: a.function.clone(),
        action,
        cpu_factor: 1.0,
        memory_factor: 1.0,
        replicas_delta: 0,
        shed_fraction: 0.0,
        tier: 0,
        reason: String::new(),
        dry_run: a.result == ActuationResult::DryRun,
        event_time_ms: a.event_time_ms,
    };
    let plan = Plan {
        cpu_millis: a.cpu_millis.map(|v| v as u64),
        memory_bytes: a.memory_bytes.map(|v| v as u64),
        replicas: a.replicas.map(|v| v as u32),
        dry_run: a.result == ActuationResult::DryRun,
        ..Plan::unchanged(action)
    };
    (adjustment, plan)
}
