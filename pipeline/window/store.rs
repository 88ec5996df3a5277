//! The per-instance window store: samples in, [`ClosedWindow`]s out as each
//! instance's watermark passes hop boundaries.
//!
//! One [`Windows`] is shared by every partition worker (`&self` methods over a
//! [`DashMap`]); an instance's entry is only ever touched by the worker of the
//! partition it is read from, so the shard locks are uncontended in practice. Each
//! entry keeps its samples sorted by event time, flat (one `f64` per feature), and no
//! older than the next window can read, so an instance costs a fixed few kilobytes.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::{features, WindowConfig};
use crate::codec::TelemetrySample;

/// 9999-12-31T23:59:59.999Z. Timestamps outside 1970..9999 are dropped as late: no
/// agent sends them, and the boundary arithmetic stays far from overflow.
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// What a shard of the map costs besides its table: dashmap 6 pads each shard's lock
/// to a cache line pair (`CachePadded`, 128 bytes on x86-64 and aarch64).
const SHARD_BYTES: usize = 128;

/// One window of one instance, closed: its watermark has passed `end_ms`, so no
/// sample can change it any more.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    /// The partition the instance's latest sample was read from.
    pub partition: i32,
    /// `end_ms − length`, inclusive.
    pub start_ms: i64,
    /// A multiple of `hop_ms`, exclusive.
    pub end_ms: i64,
    /// `points × features`, time-major; `NaN` where a channel had no value nearby.
    pub values: Vec<f64>,
    /// Per feature: whether the window holds any value of it.
    pub present: Vec<bool>,
    /// Share of grid steps that held a sample.
    pub coverage: f64,
    /// `seq` of the newest sample in the window.
    pub last_seq: i64,
}

/// Bitwise on `values` and `coverage`, so that a window equals an identical copy even
/// where it holds `NaN` (which is what replay tests compare).
impl PartialEq for ClosedWindow {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.instance_id == other.instance_id
            && self.app_type == other.app_type
            && self.function == other.function
            && self.partition == other.partition
            && self.start_ms == other.start_ms
            && self.end_ms == other.end_ms
            && bits(&self.values) == bits(&other.values)
            && self.present == other.present
            && self.coverage.to_bits() == other.coverage.to_bits()
            && self.last_seq == other.last_seq
    }
}

/// What one [`Windows::push`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Push {
    /// The sample was older than its instance's watermark and was dropped.
    pub late: bool,
    /// Windows the sample closed, oldest first.
    pub closed: Vec<ClosedWindow>,
}

/// A snapshot of the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub instances: usize,
    pub samples_held: usize,
    /// Samples dropped as late since the store was made.
    pub late_dropped: u64,
    /// Samples dropped because their instance already held one at that event time.
    pub duplicates: u64,
    /// Windows not emitted because too few of their steps held a sample.
    pub insufficient: u64,
    /// Bytes held, measured from the structures (see [`Windows::stats`]); divide by
    /// `instances` for the cost of one.
    pub memory_bytes: usize,
}

/// The windows of every instance of the partitions this process reads.
pub struct Windows {
    config: WindowConfig,
    map: DashMap<String, InstanceWindow>,
    shards: usize,
    late: AtomicU64,
    duplicates: AtomicU64,
    insufficient: AtomicU64,
}

/// One instance: samples sorted by event time, within reach of its next window.
struct InstanceWindow {
    app_type: String,
    function: String,
    partition: i32,
    /// Newest event time accepted; the watermark is this minus the lateness.
    max_ms: i64,
    times: Vec<i64>,
    seqs: Vec<i64>,
    /// `times.len() × features`, row by row.
    values: Vec<f64>,
}

impl InstanceWindow {
    fn heap_bytes(&self) -> usize {
        self.app_type.capacity()
            + self.function.capacity()
            + self.times.capacity() * size_of::<i64>()
            + self.seqs.capacity() * size_of::<i64>()
            + self.values.capacity() * size_of::<f64>()
    }
}

impl Windows {
    /// A store cutting windows as `config` says. `config` is taken as given: check it
    /// with [`WindowConfig::validate`] where it is loaded (a zero step or hop would
    /// divide by zero on the first push).
    pub fn new(config: WindowConfig) -> Self {
        // dashmap's own default, chosen here so that memory accounting knows it.
        let shards = (std::thread::available_parallelism().map_or(1, usize::from) * 4).next_power_of_two();
        Self {
            config,
            map: DashMap::with_shard_amount(shards),
            shards,
            late: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            insufficient: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// Adds one sample read from `partition` to its instance's window and returns the
    /// windows whose end its watermark (newest event time − lateness) now passes.
    pub fn push(&self, partition: i32, sample: &TelemetrySample) -> Push {
        let ts = sample.timestamp_ms;
        if !(0..=MAX_TIMESTAMP_MS).contains(&ts) {
            self.late.fetch_add(1, Ordering::Relaxed);
            return Push { late: true, closed: Vec::new() };
        }
        let c = &self.config;
        let mut w = match self.map.get_mut(sample.instance_id.as_str()) {
            Some(w) => w,
            None => self.map.entry(sample.instance_id.clone()).or_insert_with(|| {
                // What an instance reporting once a step holds at most: its steady
                // state, allocated once rather than by doubling past it (capped, as
                // odd settings could ask for millions of rows).
                let reach = ((c.length_ms() + c.hop_ms + c.lateness_ms) / c.step_ms + 1).min(1024) as usize;
                InstanceWindow {
                    app_type: String::new(),
                    function: String::new(),
                    partition,
                    max_ms: ts,
                    times: Vec::with_capacity(reach),
                    seqs: Vec::with_capacity(reach),
                    values: Vec::with_capacity(reach * c.features.len()),
                }
            }),
        };
        let old_watermark = w.max_ms - c.lateness_ms;
        if ts < old_watermark {
            self.late.fetch_add(1, Ordering::Relaxed);
            return Push { late: true, closed: Vec::new() };
        }
        let channels = c.features.len();
        let row = c.features.iter().map(|f| features::value(sample, f));
        let at = w.times.partition_point(|&t| t < ts);
        if w.times.get(at) == Some(&ts) {
            // Agents resend after a lost acknowledgement: the first copy stands.
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Push::default();
        }
        if at == w.times.len() {
            w.values.extend(row);
        } else {
            w.values.splice(at * channels..at * channels, row);
        }
        w.times.insert(at, ts);
        w.seqs.insert(at, sample.seq);
        w.partition = partition;
        if w.app_type != sample.app_type {
            w.app_type.clone_from(&sample.app_type);
        }
        if w.function != sample.function {
            w.function.clone_from(&sample.function);
        }

        let old_max = w.max_ms;
        w.max_ms = old_max.max(ts);
        let watermark = w.max_ms - c.lateness_ms;
        let first = old_watermark.div_euclid(c.hop_ms) + 1;
        let crossed = watermark.div_euclid(c.hop_ms);
        if crossed < first {
            return Push::default();
        }
        // Every sample but this one is at most `old_max`, and this one is past every
        // boundary crossed: windows ending later than `old_max + length` are empty.
        // That bounds the work after a long silence to (lateness + length) / hop + 1.
        let last = crossed.min((old_max + c.length_ms()).div_euclid(c.hop_ms));
        let mut closed = Vec::new();
        for k in first..=last {
            match self.close(sample, &w, k * c.hop_ms) {
                Some(window) => closed.push(window),
                None => {
                    self.insufficient.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // No later window reads anything before the next boundary minus the length.
        let keep_from = (crossed + 1) * c.hop_ms - c.length_ms();
        let drop = w.times.partition_point(|&t| t < keep_from);
        if drop > 0 {
            w.times.drain(..drop);
            w.seqs.drain(..drop);
            w.values.drain(..drop * channels);
        }
        Push { late: false, closed }
    }

    /// The window of `w` ending at `end_ms`, if enough of it is covered.
    fn close(&self, sample: &TelemetrySample, w: &InstanceWindow, end_ms: i64) -> Option<ClosedWindow> {
        let c = &self.config;
        let channels = c.features.len();
        let start_ms = end_ms - c.length_ms();
        let lo = w.times.partition_point(|&t| t < start_ms);
        let hi = w.times.partition_point(|&t| t < end_ms);
        if lo == hi {
            return None;
        }
        let rows: Vec<(i64, &[f64])> =
            (lo..hi).map(|i| (w.times[i], &w.values[i * channels..(i + 1) * channels])).collect();
        let (values, coverage) = features::grid(&rows, channels, end_ms, c.step_ms, c.points, c.max_fill_steps);
        if coverage < c.min_coverage {
            return None;
        }
        let present = (0..channels).map(|ch| values.iter().skip(ch).step_by(channels).any(|v| !v.is_nan())).collect();
        Some(ClosedWindow {
            instance_id: sample.instance_id.clone(),
            app_type: w.app_type.clone(),
            function: w.function.clone(),
            partition: w.partition,
            start_ms,
            end_ms,
            values,
            present,
            coverage,
            last_seq: w.seqs[hi - 1],
        })
    }

    /// Forgets every instance last read from `partition` (its assignment was
    /// revoked); returns how many.
    pub fn drop_partition(&self, partition: i32) -> usize {
        self.remove_where(|w| w.partition == partition)
    }

    /// Forgets the instances of `partition` whose newest sample is older than
    /// `now_ms − idle_expiry_ms`, `now_ms` being the partition's event-time clock;
    /// returns how many.
    pub fn expire(&self, partition: i32, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.config.idle_expiry_ms);
        self.remove_where(|w| w.partition == partition && w.max_ms < cutoff)
    }

    fn remove_where(&self, doomed: impl Fn(&InstanceWindow) -> bool) -> usize {
        let mut removed = 0;
        self.map.retain(|_, w| {
            let d = doomed(w);
            removed += usize::from(d);
            !d
        });
        removed
    }

    /// Whether the store still holds this instance (it has not expired or been dropped).
    pub fn holds(&self, instance_id: &str) -> bool {
        self.map.contains_key(instance_id)
    }

    /// Instances held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Counters and a measurement of the memory held. `memory_bytes` adds the heap
    /// capacity of every key, string and vector to the map's table, estimated from
    /// hashbrown's layout (one `(key, value)` slot and one control byte per bucket,
    /// buckets = capacity · 8/7), and `SHARD_BYTES` per shard; the allocator's own
    /// overhead per allocation is not counted.
    pub fn stats(&self) -> WindowStats {
        let (mut instances, mut samples_held, mut heap) = (0, 0, 0);
        for entry in self.map.iter() {
            instances += 1;
            samples_held += entry.times.len();
            heap += entry.key().capacity() + entry.heap_bytes();
        }
        let buckets = self.map.capacity() * 8 / 7;
        let table = buckets * (size_of::<(String, InstanceWindow)>() + 1);
        WindowStats {
            instances,
            samples_held,
            late_dropped: self.late.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            insufficient: self.insufficient.load(Ordering::Relaxed),
            memory_bytes: size_of::<Self>() + self.shards * SHARD_BYTES + table + heap,
        }
    }
}
