//! Where training windows come from: the in-process simulator and CSV files.
//!
//! In: a [`FleetConfig`] or a CSV file. Out: [`Dataset`]s, one per application type,
//! of windows cut by the detector's own code: simulated samples go through a
//! [`Windows`] store exactly as `augur detect` feeds it, CSV rows through
//! [`features::grid`], the function that store calls. Guarantees: no window of an
//! instance near an injected failure (from its onset, less a margin, to its end) is
//! kept as normal; a CSV cell that is not a number is refused with its line and
//! column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Dataset, TrainError};
use crate::detect::lstm::WindowShape;
use crate::simulate::{Fleet, FleetConfig};
use crate::window::{features, ClosedWindow, WindowConfig, Windows};

/// Windows of the simulator's telemetry, per application type, cut as `window` says.
/// Windows of an instance that reach within `margin_ms` of one of its injected
/// failures (onset to failure, or to the end of the run if it did not fail) are left
/// out, so a fleet with failures still yields only normal windows.
pub fn simulated(fleet: &FleetConfig, window: &WindowConfig, margin_ms: i64) -> Result<Vec<Dataset>, TrainError> {
    window.validate().map_err(|e| TrainError::Settings(e.to_string()))?;
    let mut sim = Fleet::new(fleet.clone()).map_err(|e| TrainError::Settings(e.to_string()))?;
    let store = Windows::new(window.clone());
    let mut range: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut closed = Vec::new();
    while let Some(samples) = sim.tick() {
        for s in &samples {
            let r = range.entry(s.app_type.clone()).or_insert((s.timestamp_ms, s.timestamp_ms));
            r.0 = r.0.min(s.timestamp_ms);
            r.1 = r.1.max(s.timestamp_ms);
            closed.extend(store.push(0, s).closed);
        }
    }
    let end = fleet.start_ms + fleet.duration_ms;
    let failing: BTreeMap<&str, (i64, i64)> = sim
        .ground_truth()
        .iter()
        .map(|g| (g.instance.as_str(), (g.onset_ms - margin_ms, g.failure_ms.map_or(end, |f| f + margin_ms))))
        .collect();
    let created_from = format!(
        "simulator: {} instances, seed {}, {} from {} ms, {} s interval, failure fraction {}",
        fleet.instances,
        fleet.seed,
        humantime::format_duration(std::time::Duration::from_millis(fleet.duration_ms.max(0) as u64)),
        fleet.start_ms,
        fleet.interval_ms / 1000,
        fleet.failure_fraction
    );
    let kept = closed.into_iter().filter(|w| match failing.get(w.instance_id.as_str()) {
        Some(&(from, to)) => !(w.end_ms > from && w.start_ms < to),
        None => true,
    });
    Ok(by_app_type(kept, window, &range, &created_from))
}

/// Groups normal windows into one [`Dataset`] per application type; `range` holds the
/// event time of the first and last sample read per type.
pub(crate) fn by_app_type(
    windows: impl IntoIterator<Item = ClosedWindow>,
    window: &WindowConfig,
    range: &BTreeMap<String, (i64, i64)>,
    created_from: &str,
) -> Vec<Dataset> {
    let shape = WindowShape { points: window.points, step_ms: window.step_ms };
    let mut out: BTreeMap<String, Dataset> = BTreeMap::new();
    for w in windows {
        let (first, last) = range.get(&w.app_type).copied().unwrap_or((0, 0));
        out.entry(w.app_type.clone())
            .or_insert_with(|| Dataset {
                app_type: w.app_type.clone(),
                features: window.features.clone(),
                shape,
                windows: Vec::new(),
                first_event_ms: first,
                last_event_ms: last,
                created_from: created_from.to_owned(),
            })
            .windows
            .push((w.end_ms, w.values));
    }
    out.into_values().collect()
}

/// A CSV file of one instance's telemetry: `timestamp,<metric>,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub path: PathBuf,
    /// The metric columns, in header order.
    pub metrics: Vec<String>,
    /// Per data row, in file order: its timestamp, epoch ms.
    pub times: Vec<i64>,
    /// Per data row: its timestamp as written.
    pub stamps: Vec<String>,
    /// `times.len() × metrics.len()`, row by row; `NaN` for an empty cell.
    pub values: Vec<f64>,
}

impl Table {
    /// Reads and checks the whole file: a header `timestamp,<metric>,...` and rows of
    /// a timestamp (epoch seconds or milliseconds, RFC 3339, or `YYYY-MM-DD HH:MM:SS`
    /// in UTC) and numbers (an empty cell is a missing value).
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrainError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, TrainError> {
        let bad = |line: usize, column: usize, reason: String| TrainError::Csv {
            path: path.to_owned(),
            line,
            column,
            reason,
        };
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| bad(1, 1, "the file is empty; expected a header timestamp,<metric>,...".to_owned()))?;
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        if !names[0].eq_ignore_ascii_case("timestamp") {
            return Err(bad(1, 1, format!("the first column must be named timestamp, got {:?}", names[0])));
        }
        if names.len() < 2 {
            return Err(bad(1, 2, "no metric columns after timestamp".to_owned()));
        }
        for (i, n) in names.iter().enumerate().skip(1) {
            if n.is_empty() || names[1..i].contains(n) {
                return Err(bad(1, i + 1, format!("metric column name {n:?} is empty or repeated")));
            }
        }
        let metrics: Vec<String> = names[1..].iter().map(|s| (*s).to_owned()).collect();
        let (mut times, mut stamps, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (i, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                return Err(bad(
                    i + 1,
                    cells.len().min(names.len()) + 1,
                    format!("{} cells, the header has {}", cells.len(), names.len()),
                ));
            }
            times.push(parse_timestamp(cells[0]).map_err(|r| bad(i + 1, 1, r))?);
            stamps.push(cells[0].to_owned());
            for (c, cell) in cells.iter().enumerate().skip(1) {
                let v = if cell.is_empty() {
                    f64::NAN
                } else {
                    match cell.parse::<f64>() {
                        Ok(v) if v.is_finite() => v,
                        _ => return Err(bad(i + 1, c + 1, format!("{}: {cell:?} is not a finite number", names[c]))),
                    }
                };
                values.push(v);
            }
        }
        if times.is_empty() {
            return Err(bad(2, 1, "no data rows after the header".to_owned()));
        }
        Ok(Self { path: path.to_owned(), metrics, times, stamps, values })
    }

    /// Rows sorted by time as `features::grid` wants them, each reordered to
    /// `features` (a feature the table lacks is `NaN`).
    pub fn rows_for(&self, features: &[String]) -> (Vec<i64>, Vec<f64>) {
        let m = self.metrics.len();
        let cols: Vec<Option<usize>> = features.iter().map(|f| self.metrics.iter().position(|n| n == f)).collect();
        let mut order: Vec<usize> = (0..self.times.len()).collect();
        order.sort_by_key(|&i| self.times[i]);
        let times = order.iter().map(|&i| self.times[i]).collect();
        let mut values = Vec::with_capacity(order.len() * features.len());
        for &i in &order {
            values.extend(cols.iter().map(|c| c.map_or(f64::NAN, |c| self.values[i * m + c])));
        }
        (times, values)
    }
}

/// The window of `shape` ending at `end_ms` over sorted `times`/`values`
/// (`channels` per row), gridded by the detector's [`features::grid`]; `None` if less
/// than `min_coverage` of its steps hold a row.
pub fn window_at(
    times: &[i64],
    values: &[f64],
    channels: usize,
    end_ms: i64,
    config: &WindowConfig,
) -> Option<Vec<f64>> {
    let start = end_ms - config.length_ms();
    let lo = times.partition_point(|&t| t < start);
    let hi = times.partition_point(|&t| t < end_ms);
    if lo == hi {
        return None;
    }
    let rows: Vec<(i64, &[f64])> = (lo..hi).map(|i| (times[i], &values[i * channels..(i + 1) * channels])).collect();
    let (grid, coverage) =
        features::grid(&rows, channels, end_ms, config.step_ms, config.points, config.max_fill_steps);
    (coverage >= config.min_coverage).then_some(grid)
}

/// Windows of a CSV table ending on every multiple of `window.hop_ms` it covers, over
/// its metric columns (`features` of the model to come).
pub fn csv(table: &Table, app_type: &str, window: &WindowConfig) -> Result<Dataset, TrainError> {
    let features = table.metrics.clone();
    let (times, values) = table.rows_for(&features);
    let (first, last) = (times[0], times[times.len() - 1]);
    let mut windows = Vec::new();
    let mut end = (first.div_euclid(window.hop_ms) + 1) * window.hop_ms;
    while end <= last + window.step_ms {
        // Rows years apart would cost one step per hop of the empty stretch between them
        // (hours for a file spanning 1970 to 9999, found by tests/fuzz): jump to the
        // first window end past the next row. The windows skipped hold no row.
        let Some(&next) = times.get(times.partition_point(|&t| t < end - window.length_ms())) else { break };
        if next >= end {
            end = (next.div_euclid(window.hop_ms) + 1) * window.hop_ms;
            continue;
        }
        if let Some(w) = window_at(&times, &values, features.len(), end, window) {
            windows.push((end, w));
        }
        end += window.hop_ms;
    }
    Ok(Dataset {
        app_type: app_type.to_owned(),
        features,
        shape: WindowShape { points: window.points, step_ms: window.step_ms },
        windows,
        first_event_ms: first,
        last_event_ms: last,
        created_from: format!("CSV file {}", table.path.display()),
    })
}

/// 9999-12-31T23:59:59.999Z in epoch milliseconds: no later time is telemetry.
const LATEST_MS: i64 = 253_402_300_799_999;

/// Epoch seconds or milliseconds (by size: below 10¹¹ is seconds, which covers
/// seconds up to the year 5138 and milliseconds from 1973), or RFC 3339 /
/// `YYYY-MM-DD HH:MM:SS[.fff]` in UTC.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return Err(format!("timestamp {s:?} must be a non-negative epoch time"));
        }
        let ms = if n < 1e11 { n * 1000.0 } else { n }.round();
        // Checked before the cast, which would saturate 1e300 to i64::MAX and overflow the
        // window arithmetic of `csv` (found by tests/fuzz).
        if ms > LATEST_MS as f64 {
            return Err(format!("timestamp {s:?} is after 9999-12-31, the last time RFC 3339 can write"));
        }
        return Ok(ms as i64);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("timestamp {s:?} is neither epoch seconds/milliseconds nor RFC 3339 / YYYY-MM-DD HH:MM:SS")
    })?;
    let ms =
        t.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("timestamp {s:?} is before 1970"))?.as_millis();
    Ok(ms as i64)
}
