//! The detector's Kafka loop: a consumer-group member over the telemetry topic that
//! writes its alerts, dead letters and consumed offsets in one transaction per batch.
//!
//! In: records of the partitions the group assigns to this member
//! (`read_committed`, cooperative-sticky, no auto-commit). Out: per batch, one Kafka
//! transaction holding the alerts, the dead letters and the offsets after the last
//! record of each partition (`send_offsets_to_transaction` with the group's
//! metadata) — the only place offsets are committed.
//!
//! A rebalance is a state boundary. Revoked partitions lose their windows and state,
//! and records of theirs polled but not yet processed are dropped (the next owner
//! reads them from the committed offset). Assigned partitions are rebuilt before any
//! of their records is processed: the lookback before the committed offset is
//! replayed through the same processing with its outputs discarded. No transaction is
//! open while the consumer polls, so a rebalance never finds one half done. A batch
//! whose transaction aborts is rebuilt the same way and read again.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::codec::{Adjustment, Alert, Codec, DeadLetter, WindowEvidence};
use crate::detect::dtw::Dtw;
use crate::detect::metrics::Metrics;
use crate::detect::partition::{Counters, Input, Judge, Output, PartitionState, Shared};
use crate::kafka::reader::{self, Start};
use crate::kafka::txn::{self, TxnError, CALL_TIMEOUT};
use crate::observe::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the transactional producer was fenced or failed fatally (another detector with replica id {replica} started?): {source}")]
    Fatal {
        replica: String,
        #[source]
        source: KafkaError,
    },
    #[error("rebuilding partition {partition} by replay failed: {reason}")]
    Replay { partition: i32, reason: String },
    #[error("encoding an output record: {0}")]
    Encode(#[from] crate::codec::CodecError),
}

/// What the loop needs besides the shared processing state.
pub struct EngineConfig {
    pub consumer: ClientConfig,
    pub producer: ClientConfig,
    /// Client configuration for the replays that rebuild assigned partitions.
    pub replay: ClientConfig,
    pub telemetry_topic: String,
    pub alerts_topic: String,
    pub adjustments_topic: String,
    /// Every evaluated window's evidence, for the feedback loop.
    pub scores_topic: String,
    pub dlq_topic: String,
    pub replica_id: String,
    pub threads: usize,
    pub batch_max: usize,
    pub batch_wait: Duration,
    pub dtw_radius: usize,
    /// How often a progress line is logged.
    pub report_every: Duration,
    /// Counts the records of every committed transaction, for a caller in the same
    /// process that waits for the detector to catch up (the demo).
    pub committed: Arc<AtomicU64>,
    /// Moved once per committed batch.
    pub metrics: Metrics,
    /// Raised once the assigned partitions are rebuilt, lowered while a rebuild runs.
    pub readiness: Readiness,
}

/// What windows are judged by now, and a way to learn that the signature or the model
/// table changed.
pub trait Judges: Send + Sync {
    /// A version that changes whenever either table does.
    fn version(&self) -> u64;
    /// The matcher and the models for the current tables.
    fn judge(&self) -> Arc<Judge>;
}

/// Totals of a run, for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub counters: Counters,
    pub transactions: u64,
    pub aborts: u64,
    pub rebalances: u64,
}

struct Ctx {
    shared: Arc<Shared>,
    states: Mutex<BTreeMap<i32, PartitionState>>,
    judge: RwLock<Arc<Judge>>,
    replay: ClientConfig,
    topic: String,
    radius: usize,
    /// Partitions revoked or assigned during the current poll.
    changed: Mutex<Vec<i32>>,
    failure: Mutex<Option<EngineError>>,
    rebalances: Mutex<u64>,
    readiness: Readiness,
    metrics: Metrics,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = partitions_of(tpl, &self.topic);
            let mut states = lock(&self.states);
            for &p in &partitions {
                self.shared.windows.drop_partition(p);
                states.remove(&p);
            }
            tracing::info!(?partitions, "partitions revoked; their windows are dropped");
            lock(&self.changed).extend(partitions);
            *lock(&self.rebalances) += 1;
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = partitions_of(tpl, &self.topic);
            *lock(&self.rebalances) += 1;
            if partitions.is_empty() {
                return;
            }
            self.readiness.set(false);
            match self.rebuild(consumer, &partitions) {
                // The replayed records are counted before readiness rises: a scrape
                // that sees the detector ready sees the rebuild that made it so.
                Ok(_) => self.readiness.set(true),
                Err(e) => *lock(&self.failure) = Some(e),
            }
            lock(&self.changed).extend(partitions);
        }
    }
}

impl Ctx {
    /// Replays the lookback before each partition's committed offset into fresh state;
    /// returns the committed offsets it rebuilt to. The records replayed are counted in
    /// the metrics before this returns.
    fn rebuild(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) -> Result<TopicPartitionList, EngineError> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = consumer.committed_offsets(tpl, CALL_TIMEOUT)?;
        let judge = read(&self.judge).clone();
        let reader = reader::consumer(&self.replay)?;
        let mut dtw = Dtw::new(self.radius);
        let mut total = 0;
        for &p in partitions {
            self.shared.windows.drop_partition(p);
            let mut state = PartitionState::new(p, &self.shared);
            let resume = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o > 0 => Some(o),
                _ => None,
            };
            let began = Instant::now();
            let mut replayed = 0;
            if let Some(resume) = resume {
                state.begin_replay();
                replayed = self.replay_into(&reader, &mut state, resume)?;
                state.finish_replay(&self.shared, &judge, &mut dtw);
            }
            tracing::info!(
                partition = p,
                ?resume,
                replayed,
                took_ms = began.elapsed().as_millis() as u64,
                "partition rebuilt"
            );
            lock(&self.states).insert(p, state);
            total += replayed;
        }
        self.metrics.replayed_records.inc_by(total);
        Ok(committed)
    }

    fn replay_into(&self, reader: &BaseConsumer, state: &mut PartitionState, resume: i64) -> Result<u64, EngineError> {
        let p = state.partition();
        let fail = |e: reader::ReadError| EngineError::Replay { partition: p, reason: e.to_string() };
        // The event time at the resume point: that of the last records before it (a few,
        // since the very last offsets may be transaction markers).
        let mut resume_ms = None;
        reader::read_partition(reader, &self.topic, p, Start::Offset(resume - 16), Some(resume), |m| {
            if let Some(t) = m.timestamp().to_millis() {
                resume_ms = Some(resume_ms.map_or(t, |r: i64| r.max(t)));
            }
        })
        .map_err(fail)?;
        let Some(resume_ms) = resume_ms else { return Ok(0) };
        let mut discard = Vec::new();
        let mut n = 0;
        let from = Start::Time(resume_ms - self.shared.lookback_ms);
        reader::read_partition(reader, &self.topic, p, from, Some(resume), |m| {
            state.process(&self.shared, input(m), &mut discard);
            discard.clear();
            n += 1;
        })
        .map_err(fail)?;
        Ok(n)
    }
}

fn input<'a>(m: &'a BorrowedMessage<'_>) -> Input<'a> {
    Input { offset: m.offset(), key: m.key(), payload: m.payload(), timestamp_ms: m.timestamp().to_millis() }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

/// A poisoned lock means a thread panicked mid-update; the state is still usable for
/// the counters and maps kept here, and the panic itself is reported where it happened.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

/// How often the gauges (windows, memory, consumer lag) are refreshed: often enough for
/// a scrape to follow a catch-up, rarely enough that the watermark requests (one per
/// assigned partition) cost nothing.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// Runs the loop until `shutdown`; blocking (run it on a thread of its own).
pub fn run(
    config: EngineConfig,
    shared: Arc<Shared>,
    judges: Arc<dyn Judges>,
    shutdown: CancellationToken,
) -> Result<Totals, EngineError> {
    let ctx = Ctx {
        shared: shared.clone(),
        states: Mutex::new(BTreeMap::new()),
        judge: RwLock::new(judges.judge()),
        replay: config.replay.clone(),
        topic: config.telemetry_topic.clone(),
        radius: config.dtw_radius,
        changed: Mutex::new(Vec::new()),
        failure: Mutex::new(None),
        rebalances: Mutex::new(0),
        readiness: config.readiness.clone(),
        metrics: config.metrics.clone(),
    };
    let mut seen_version = judges.version();
    let mut metrics_rebalances = 0;
    config.metrics.models(&judges.judge().models);
    let consumer: BaseConsumer<Ctx> = config.consumer.create_with_context(ctx)?;
    let producer: BaseProducer = config.producer.create()?;
    let watermarks = reader::consumer(&config.replay)?;
    producer.init_transactions(CALL_TIMEOUT).map_err(|e| fatal(&config, e))?;
    consumer.subscribe(&[&config.telemetry_topic])?;
    tracing::info!(topic = %config.telemetry_topic, replica = %config.replica_id, threads = config.threads, "detecting");

    let mut dtws: Vec<Dtw> = (0..config.threads.max(1)).map(|_| Dtw::new(config.dtw_radius)).collect();
    let mut totals = Totals::default();
    let mut last_report = Instant::now();
    let mut last_gauges = Instant::now();
    let codecs = Codecs { alert: Codec::new(), adjustment: Codec::new(), evidence: Codec::new(), dead: Codec::new() };

    while !shutdown.is_cancelled() {
        // Also while idle, so that the gauges (lag above all) come down to rest.
        if last_gauges.elapsed() >= GAUGES_EVERY {
            last_gauges = Instant::now();
            let w = shared.windows.stats();
            config.metrics.window_instances.set(w.instances as i64);
            config.metrics.window_memory_bytes.set(w.memory_bytes as i64);
            match crate::kafka::consumer_lag(&consumer, &watermarks, Duration::from_secs(5)) {
                Ok(lag) => {
                    config.metrics.consumer_lag.set(lag);
                }
                Err(error) => tracing::debug!(%error, "cannot measure the consumer lag now"),
            };
            let rebalances = *lock(&consumer.context().rebalances);
            config.metrics.rebalances.inc_by(rebalances.saturating_sub(metrics_rebalances));
            metrics_rebalances = rebalances;
        }
        if last_report.elapsed() >= config.report_every {
            last_report = Instant::now();
            let w = shared.windows.stats();
            tracing::info!(
                records = totals.counters.records,
                alerts = totals.counters.alerts,
                dead = totals.counters.dead,
                late = totals.counters.late,
                windows = totals.counters.windows,
                dtw_computed = totals.counters.dtw_computed,
                dtw_pruned = totals.counters.dtw_pruned,
                transactions = totals.transactions,
                aborts = totals.aborts,
                instances = w.instances,
                window_bytes = w.memory_bytes,
                bytes_per_instance = w.memory_bytes / w.instances.max(1),
                "progress"
            );
        }

        // Between batches, so that no batch is judged by two versions.
        if judges.version() != seen_version {
            seen_version = judges.version();
            let j = judges.judge();
            tracing::info!(
                signatures = j.matcher.len(),
                skipped = j.matcher.skipped().len(),
                models = ?j.models.versions(),
                "signature or model table changed"
            );
            config.metrics.models(&j.models);
            warn_if_late(&read(&consumer.context().judge), &j, consumer.context());
            *consumer.context().judge.write().unwrap_or_else(|p| p.into_inner()) = j;
        }

        // Collect a batch; no transaction is open while polling.
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::new();
        let began = Instant::now();
        while batch.len() < config.batch_max && began.elapsed() < config.batch_wait && !shutdown.is_cancelled() {
            let polled = consumer.poll(Duration::from_millis(50));
            let changed: HashSet<i32> = lock(&consumer.context().changed).drain(..).collect();
            if !changed.is_empty() {
                batch.retain(|m| !changed.contains(&m.partition()));
            }
            if let Some(e) = lock(&consumer.context().failure).take() {
                return Err(e);
            }
            match polled {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {
                    if batch.is_empty() {
                        continue;
                    }
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }

        // Process, partition by partition, on every thread.
        let mut by_partition: BTreeMap<i32, Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
        for m in &batch {
            by_partition.entry(m.partition()).or_default().push(m);
        }
        let mut work: Vec<Work<'_, '_>> = Vec::new();
        {
            let mut states = lock(&consumer.context().states);
            for (p, msgs) in by_partition {
                match states.remove(&p) {
                    Some(state) => work.push((state, msgs, Vec::new())),
                    None => tracing::warn!(partition = p, "records of a partition without state skipped"),
                }
            }
        }
        let judge = read(&consumer.context().judge).clone();
        let judging = Instant::now();
        process_parallel(&shared, &judge, &mut dtws, &mut work);
        config.metrics.batch_seconds.observe(judging.elapsed().as_secs_f64());

        // One transaction: outputs, then the offsets after each partition's last record.
        let mut offsets = TopicPartitionList::new();
        for (state, msgs, _) in &work {
            if let Some(last) = msgs.last() {
                offsets.add_partition_offset(
                    &config.telemetry_topic,
                    state.partition(),
                    Offset::Offset(last.offset() + 1),
                )?;
            }
        }
        let outcome = transact(&config, &producer, &consumer, &offsets, &work, &codecs);
        match outcome {
            Ok(()) => {
                totals.transactions += 1;
                let records: usize = work.iter().map(|(_, msgs, _)| msgs.len()).sum();
                config.committed.fetch_add(records as u64, Ordering::Relaxed);
                config.metrics.transactions.inc();
                for (state, _, _) in &work {
                    add(&mut totals.counters, &state.counters);
                    config.metrics.committed(&state.counters);
                }
                let mut states = lock(&consumer.context().states);
                for (mut state, _, _) in work {
                    state.counters = Counters::default();
                    states.insert(state.partition(), state);
                }
            }
            Err(TxnError::Abort(e)) => {
                tracing::warn!(error = %e, "transaction aborted; rebuilding the batch's partitions and reading them again");
                totals.aborts += 1;
                config.metrics.aborts.inc();
                txn::abort(&producer, CALL_TIMEOUT).map_err(|e| fatal(&config, e))?;
                drop(work);
                rewind(&consumer)?;
            }
            Err(TxnError::Fatal(e)) => return Err(fatal(&config, e)),
            Err(TxnError::Encode(e)) => return Err(EngineError::Encode(e)),
        }
        drop(batch);
    }
    totals.rebalances = *lock(&consumer.context().rebalances);
    tracing::info!("leaving the consumer group");
    consumer.unsubscribe();
    Ok(totals)
}

fn add(total: &mut Counters, c: &Counters) {
    total.records += c.records;
    total.dead += c.dead;
    total.late += c.late;
    total.windows += c.windows;
    total.alerts += c.alerts;
    total.adjustments += c.adjustments;
    total.dtw_computed += c.dtw_computed;
    total.dtw_pruned += c.dtw_pruned;
    total.scored += c.scored;
}

fn fatal(config: &EngineConfig, source: KafkaError) -> EngineError {
    EngineError::Fatal { replica: config.replica_id.clone(), source }
}

/// A partition's share of a batch: its state, its records, and what they produced.
type Work<'a, 'c> = (PartitionState, Vec<&'a BorrowedMessage<'c>>, Vec<Output>);

/// Runs each partition's records through its state, partitions spread over threads.
fn process_parallel(shared: &Shared, judge: &Judge, dtws: &mut [Dtw], work: &mut [Work<'_, '_>]) {
    let threads = dtws.len().min(work.len()).max(1);
    if threads == 1 {
        for (state, msgs, out) in work.iter_mut() {
            for m in msgs.iter() {
                state.process(shared, input(m), out);
            }
            state.flush(shared, judge, &mut dtws[0], out);
        }
        return;
    }
    // Partitions dealt round-robin; each thread owns its share and its DTW scratch.
    let mut shares: Vec<Vec<&mut Work<'_, '_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, w) in work.iter_mut().enumerate() {
        shares[i % threads].push(w);
    }
    std::thread::scope(|scope| {
        for (share, dtw) in shares.into_iter().zip(dtws.iter_mut()) {
            scope.spawn(move || {
                for (state, msgs, out) in share {
                    for m in msgs.iter() {
                        state.process(shared, input(m), out);
                    }
                    state.flush(shared, judge, dtw, out);
                }
            });
        }
    });
}

/// One encoder per kind of output record.
struct Codecs {
    alert: Codec<Alert>,
    adjustment: Codec<Adjustment>,
    evidence: Codec<WindowEvidence>,
    dead: Codec<DeadLetter>,
}

fn transact(
    config: &EngineConfig,
    producer: &BaseProducer,
    consumer: &BaseConsumer<Ctx>,
    offsets: &TopicPartitionList,
    work: &[Work<'_, '_>],
    codecs: &Codecs,
) -> Result<(), TxnError> {
    producer.begin_transaction().map_err(txn::classify)?;
    let mut buf = Vec::with_capacity(512);
    for (_, _, outputs) in work {
        for output in outputs {
            match output {
                Output::Alert(a) => {
                    codecs.alert.encode_into(a, &mut buf).map_err(TxnError::Encode)?;
                    let record = BaseRecord::to(&config.alerts_topic)
                        .key(a.instance_id.as_bytes())
                        .payload(&buf)
                        .timestamp(a.window_end_ms);
                    txn::send(producer, record)?;
                }
                Output::Adjustment(a) => {
                    codecs.adjustment.encode_into(a, &mut buf).map_err(TxnError::Encode)?;
                    let record = BaseRecord::to(&config.adjustments_topic)
                        .key(a.instance_id.as_bytes())
                        .payload(&buf)
                        .timestamp(a.event_time_ms);
                    txn::send(producer, record)?;
                }
                Output::Evidence(e) => {
                    codecs.evidence.encode_into(e, &mut buf).map_err(TxnError::Encode)?;
                    let record = BaseRecord::to(&config.scores_topic)
                        .key(e.instance_id.as_bytes())
                        .payload(&buf)
                        .timestamp(e.window_end_ms);
                    txn::send(producer, record)?;
                }
                Output::Dead(d) => txn::send_dead_letter(producer, &codecs.dead, &config.dlq_topic, d, &mut buf)?,
            }
        }
    }
    txn::commit(producer, consumer.group_metadata(), offsets)
}

/// A model or tuned step that takes effect at an event time this replica's partitions
/// have passed arrived late: windows judged since then kept the previous one, where a
/// replay (after a crash, or by the replica that takes the partition over) applies the
/// new one. Announcements and steps take effect ahead of the telemetry so that this
/// does not happen; a replica far behind the others can still see it, and says so.
fn warn_if_late(before: &Judge, after: &Judge, ctx: &Ctx) {
    let newest = [after.models.earliest_new(&before.models), after.tuning.earliest_new_step(&before.tuning)]
        .into_iter()
        .flatten()
        .min_by_key(|(_, from)| *from);
    let Some((what, from_ms)) = newest else { return };
    let judged = lock(&ctx.states).values().filter_map(PartitionState::clock_ms).max();
    if let Some(judged_to_ms) = judged.filter(|&t| t > from_ms) {
        tracing::warn!(
            what,
            effective_from_ms = from_ms,
            judged_to_ms,
            "read after its effective time: windows judged since then kept the previous value, a replay would apply the new one"
        );
    }
}

/// After an abort: every owned partition is rebuilt from its committed offset and the
/// consumer seeks back there, so the aborted batch is read and processed again.
fn rewind(consumer: &BaseConsumer<Ctx>) -> Result<(), EngineError> {
    let assignment = consumer.assignment()?;
    let ctx = consumer.context();
    let partitions = partitions_of(&assignment, &ctx.topic);
    let committed = ctx.rebuild(consumer, &partitions)?;
    for e in committed.elements() {
        let to = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        consumer.seek(e.topic(), e.partition(), to, CALL_TIMEOUT)?;
    }
    lock(&ctx.changed).clear();
    Ok(())
}
