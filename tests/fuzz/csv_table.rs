//! The CSV reader of `augur train --csv` and `augur score`, and the windowing behind it.
//!
//! In: valid tables (a `timestamp,<metric>...` header and rows in every timestamp form
//! the reader accepts), then edited: a cell replaced by something that is not a number
//! or not a time, a cell added or dropped, the header's names repeated or emptied, a
//! very long line, and blind byte edits. Out: assertions that the reader never panics,
//! that every error names the file, a line and a column inside the input, and that a
//! table it accepts is consistent and can be cut into training windows.

use std::path::Path;

use augur::codec::metric_names;
use augur::train::sources::{self, Table};
use augur::window::WindowConfig;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{apply_text, config, edits, long_string, Edit, NOT_A_NUMBER};

/// Reading and windowing a table of at most 40 rows is cheap: 1024 cases take about
/// three seconds in a debug build.
const CASES: u32 = 1024;

/// The forms a timestamp may take, for a row `k` seconds after a base time.
fn stamp(form: u8, base_s: i64, k: i64) -> String {
    let s = base_s + k * 10;
    match form % 4 {
        0 => s.to_string(),
        1 => (s * 1000).to_string(),
        2 => humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64))
            .to_string(),
        _ => humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64))
            .to_string()
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_owned(),
    }
}

/// A valid table: unique metric names, finite values or empty cells.
fn valid_table() -> impl Strategy<Value = String> {
    (
        prop::sample::subsequence(metric_names::ALL, 1..6),
        1_600_000_000i64..1_900_000_000,
        any::<u8>(),
        prop::collection::vec(prop::collection::vec(prop::option::weighted(0.9, 0.0f64..1e6), 6), 1..40),
    )
        .prop_map(|(names, base, form, rows)| {
            let mut text = format!("timestamp,{}\n", names.join(","));
            for (k, row) in rows.iter().enumerate() {
                text.push_str(&stamp(form, base, k as i64));
                for v in &row[..names.len()] {
                    text.push(',');
                    if let Some(v) = v {
                        text.push_str(&v.to_string());
                    }
                }
                text.push('\n');
            }
            text
        })
}

/// An edit that knows the format: cells and lines, not bytes.
#[derive(Debug, Clone)]
enum CellEdit {
    Replace(Index, Index, &'static str),
    ReplaceTime(Index, &'static str),
    AddCell(Index),
    DropCell(Index),
    RepeatHeaderName(Index),
    LongCell(Index, Index),
    DuplicateLine(Index),
}

const NOT_A_TIME: &[&str] = &[
    "-1",
    "1e300",
    "1e19",
    "9223372036854775807",
    "9223372036854775808",
    "NaN",
    "inf",
    "1e11",
    "253402300799",
    "9999-12-31T23:59:59Z",
    "1969-12-31T23:59:59Z",
    "2026-13-45 25:61:61",
    "0000-01-01 00:00:00",
    "2026-01-05T00:00:10+25:00",
    "",
    "yesterday",
];

fn cell_edit() -> impl Strategy<Value = CellEdit> {
    prop_oneof![
        (any::<Index>(), any::<Index>(), prop::sample::select(NOT_A_NUMBER))
            .prop_map(|(r, c, t)| CellEdit::Replace(r, c, t)),
        (any::<Index>(), prop::sample::select(NOT_A_TIME)).prop_map(|(r, t)| CellEdit::ReplaceTime(r, t)),
        any::<Index>().prop_map(CellEdit::AddCell),
        any::<Index>().prop_map(CellEdit::DropCell),
        any::<Index>().prop_map(CellEdit::RepeatHeaderName),
        (any::<Index>(), any::<Index>()).prop_map(|(r, c)| CellEdit::LongCell(r, c)),
        any::<Index>().prop_map(CellEdit::DuplicateLine),
    ]
}

fn apply_cells(text: &str, edits: &[CellEdit]) -> String {
    let mut rows: Vec<Vec<String>> = text.lines().map(|l| l.split(',').map(str::to_owned).collect()).collect();
    for e in edits {
        let n = rows.len();
        match e {
            CellEdit::Replace(r, c, t) if !rows[r.index(n)].is_empty() => {
                let row = &mut rows[r.index(n)];
                let c = c.index(row.len());
                row[c] = (*t).to_owned();
            }
            CellEdit::ReplaceTime(r, t) if n > 1 => rows[1 + r.index(n - 1)][0] = (*t).to_owned(),
            CellEdit::AddCell(r) => rows[r.index(n)].push("1".to_owned()),
            CellEdit::DropCell(r) => {
                rows[r.index(n)].pop();
            }
            CellEdit::RepeatHeaderName(c) if !rows[0].is_empty() => {
                let header = &mut rows[0];
                let name = header[c.index(header.len())].clone();
                header.push(name);
            }
            CellEdit::LongCell(r, c) if !rows[r.index(n)].is_empty() => {
                let row = &mut rows[r.index(n)];
                let c = c.index(row.len());
                row[c] = long_string();
            }
            CellEdit::DuplicateLine(r) => {
                let row = rows[r.index(n)].clone();
                rows.insert(r.index(n), row);
            }
            _ => {}
        }
    }
    rows.iter().map(|r| r.join(",") + "\n").collect()
}

/// What every outcome of the reader must satisfy: an error names the file and a line
/// and column that exist; an accepted table is consistent and windows without panic.
fn check_table(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("fuzz/instance.csv");
    match Table::parse(text, path) {
        Ok(table) => {
            prop_assert_eq!(table.values.len(), table.times.len() * table.metrics.len());
            prop_assert!(table.values.iter().all(|v| v.is_finite() || v.is_nan()));
            let data = sources::csv(&table, "fuzz", &WindowConfig::default())?;
            prop_assert!(data.first_event_ms <= data.last_event_ms);
        }
        Err(e) => {
            let message = e.to_string();
            let lines = text.lines().count().max(1) + 1;
            let prefix = format!("{} line ", path.display());
            prop_assert!(message.starts_with(&prefix), "{message}");
            let at: Vec<usize> = message[prefix.len()..]
                .split(':')
                .next()
                .unwrap_or_default()
                .split(" column ")
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            prop_assert!(at.len() == 2 && (1..=lines).contains(&at[0]) && at[1] >= 1, "{message}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]
    #[test]
    fn csv_reader_never_panics_and_names_line_and_column(
        text in valid_table(),
        cells in prop::collection::vec(cell_edit(), 0..4),
        bytes in prop::option::weighted(0.3, edits()),
    ) {
        check_table(&text)?;
        let edited = apply_cells(&text, &cells);
        check_table(&edited)?;
        let blind: Vec<Edit> = bytes.unwrap_or_default();
        check_table(&apply_text(&edited, &blind))?;
    }
}

#[test]
fn empty_and_header_only_files_are_refused_at_their_line() {
    for (text, line) in [("", 1), ("\n\n", 1), ("timestamp,cpu_utilization_ratio\n", 2)] {
        let e = Table::parse(text, Path::new("e.csv")).expect_err(text).to_string();
        assert!(e.starts_with(&format!("e.csv line {line} column 1:")), "{e}");
    }
}

/// Found by the property above: a timestamp of 2⁶³ ms saturated to `i64::MAX` and the
/// windowing overflowed on it; it is now refused where it is written.
#[test]
fn a_timestamp_beyond_9999_is_refused_at_its_cell() {
    let text = "timestamp,log_error_lines_per_second\n9223372036854775808,\n1600000010,\n";
    let e = Table::parse(text, Path::new("t.csv")).expect_err("year 292 million").to_string();
    assert!(e.starts_with("t.csv line 2 column 1:") && e.contains("after 9999-12-31"), "{e}");
}

/// Found by the property above: rows from 1973 and 9999 made the windowing step through
/// every empty hop between them (hours); the windows of the rows are still cut.
#[test]
fn rows_millennia_apart_are_windowed_without_walking_the_gap() {
    let text = "timestamp,cpu_utilization_ratio\n1e11,0.5\n1600000000,0.5\n9999-12-31T23:59:59Z,0.5\n";
    let table = Table::parse(text, Path::new("t.csv")).expect("valid rows");
    // Any row makes a window, so that every row's windows can be looked for.
    let config = WindowConfig { min_coverage: 0.0, ..WindowConfig::default() };
    let data = sources::csv(&table, "t", &config).expect("windows");
    assert_eq!((data.first_event_ms, data.last_event_ms), (100_000_000_000, 253_402_300_799_000));
    let length = config.length_ms();
    for &t in &table.times {
        let seen = data.windows.iter().filter(|(end, _)| t < *end && t >= end - length).count();
        assert!(seen > 0, "no window holds the row at {t} ms");
    }
    let empty = data.windows.iter().find(|(end, _)| !table.times.iter().any(|&t| t < *end && t >= end - length));
    assert_eq!(empty, None, "a window without a row");
}
