//! Training windows replayed from Kafka: `<prefix>.telemetry` read by event time, the
//! seed's "replay partitions for model retraining".
//!
//! In: the cluster, a range `[from, to)` of event time, the detector's window config
//! and a margin. Out: one [`Dataset`] per application type, its windows cut by the
//! detector's own [`Windows`] store, fed partition by partition in offset order as
//! `augur detect` feeds it. The start offsets come from the broker's offsets for the
//! start time (a window's length earlier, so the first windows are whole). Guarantees:
//! no window of an instance that comes within the margin of one of its alerts (any
//! kind: a signature or anomaly match, going offline, recovering) is kept as normal;
//! records that do not decode are skipped and counted, never trained on.

use std::collections::{BTreeMap, HashMap};

use super::sources::by_app_type;
use super::{Dataset, TrainError};
use rdkafka::config::ClientConfig;
use rdkafka::Message;

use crate::codec::{Alert, Codec, TelemetrySample};
use crate::kafka::reader::{self, Start};
use crate::window::{WindowConfig, Windows};

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    pub records: u64,
    pub undecodable: u64,
    pub windows: u64,
    /// Windows left out for an alert of their instance within the margin.
    pub near_alerts: u64,
}

/// Windows of the telemetry in `[from_ms, to_ms)` of `telemetry`, without those near
/// an alert of `alerts`; see the module documentation. Blocking.
pub fn replayed(
    config: &ClientConfig,
    telemetry: &str,
    alerts_topic: &str,
    from_ms: i64,
    to_ms: i64,
    window: &WindowConfig,
    margin_ms: i64,
) -> Result<(Vec<Dataset>, Replayed), TrainError> {
    let codec = Codec::<TelemetrySample>::new();
    let mut stats = Replayed::default();
    let mut range: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    // One store per partition: records of one partition arrive in order, those of
    // different partitions interleave in the reader.
    let mut stores: HashMap<i32, Windows> = HashMap::new();
    let mut closed = Vec::new();
    let replay = |e: reader::ReadError| TrainError::Replay(e.to_string());
    reader::read_to_end(config, telemetry, Start::Time(from_ms - window.length_ms()), |m| {
        let Some(sample) = m.payload().and_then(|p| codec.decode(p).ok()) else {
            stats.undecodable += 1;
            return;
        };
        if sample.timestamp_ms >= to_ms {
            return;
        }
        stats.records += 1;
        if sample.timestamp_ms >= from_ms {
            let r = range.entry(sample.app_type.clone()).or_insert((sample.timestamp_ms, sample.timestamp_ms));
            r.0 = r.0.min(sample.timestamp_ms);
            r.1 = r.1.max(sample.timestamp_ms);
        }
        let store = stores.entry(m.partition()).or_insert_with(|| Windows::new(window.clone()));
        closed.extend(store.push(m.partition(), &sample).closed.into_iter().filter(|w| w.end_ms > from_ms));
    })
    .map_err(replay)?;

    // Alerts of every instance, by event time; the topic is small beside the telemetry.
    let mut alerts: HashMap<String, Vec<i64>> = HashMap::new();
    let alert_codec = Codec::<Alert>::new();
    match reader::read_to_end(config, alerts_topic, Start::Beginning, |m| {
        if let Some(a) = m.payload().and_then(|p| alert_codec.decode(p).ok()) {
            alerts.entry(a.instance_id).or_default().push(a.window_end_ms);
        }
    }) {
        Ok(_) | Err(reader::ReadError::NoTopic(_)) => {}
        Err(e) => return Err(replay(e)),
    }
    let near = |instance: &str, start: i64, end: i64| {
        alerts.get(instance).is_some_and(|ts| ts.iter().any(|&t| t + margin_ms > start && t - margin_ms < end))
    };
    let total = closed.len() as u64;
    let kept: Vec<_> = closed.into_iter().filter(|w| !near(&w.instance_id, w.start_ms, w.end_ms)).collect();
    stats.windows = kept.len() as u64;
    stats.near_alerts = total - stats.windows;
    let created_from = format!(
        "{telemetry} replayed over [{}, {})",
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(from_ms.max(0) as u64)
        ),
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(to_ms.max(0) as u64)),
    );
    Ok((by_app_type(kept, window, &range, &created_from), stats))
}
