//! Labelled benchmark files in, [`Series`] out: one table of numeric rows with a
//! timestamp each, read from CSV with a header line.
//!
//! Guarantees: every row has exactly one value per column and every value is a finite
//! number; a file that breaks this is refused with an error naming the file, the line
//! (1-based, the header is line 1) and the column.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A multivariate time series: `len()` rows of `width()` values, each with a timestamp
/// in epoch seconds (UTC). NAB files have one column, SMD machines 38.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Where the rows came from (a NAB path such as `realTweets/Twitter_volume_AAPL.csv`
    /// or an SMD machine name), for messages and reports.
    pub name: String,
    /// Column names, without the timestamp.
    pub columns: Vec<String>,
    /// One timestamp per row, epoch seconds.
    pub timestamps: Vec<i64>,
    /// Row-major values: row `i` is `values[i * width .. (i + 1) * width]`.
    values: Vec<f64>,
}

/// Values, timestamps and columns that do not make a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {values} values do not make {rows} rows of {columns} columns (at least one)")]
pub struct ShapeError {
    pub name: String,
    pub values: usize,
    pub rows: usize,
    pub columns: usize,
}

/// Why a file could not be read into a [`Series`] or labels.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {source}")]
    Csv {
        path: PathBuf,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: line 1: expected the header to start with {expected:?}, found {found:?}")]
    Header { path: PathBuf, expected: String, found: String },
    #[error("{path}: line {line}, column {column:?}: {reason} (found {value:?})")]
    Field { path: PathBuf, line: u64, column: String, value: String, reason: &'static str },
    #[error("{path}: {reason}")]
    Content { path: PathBuf, reason: String },
}

impl Series {
    /// Builds a series, checking that there is one timestamp per row of `columns.len()` values.
    pub fn new(name: String, columns: Vec<String>, timestamps: Vec<i64>, values: Vec<f64>) -> Result<Self, ShapeError> {
        if columns.is_empty() || values.len() != timestamps.len() * columns.len() {
            return Err(ShapeError { name, values: values.len(), rows: timestamps.len(), columns: columns.len() });
        }
        Ok(Self { name, columns, timestamps, values })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// True when the series has no rows.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Number of values per row.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The values of row `i`.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn row(&self, i: usize) -> &[f64] {
        let w = self.width();
        &self.values[i * w..(i + 1) * w]
    }

    /// The rows in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f64]> + '_ {
        self.values.chunks_exact(self.width())
    }

    /// A copy of the rows in `range` (a detector's training prefix, for instance).
    ///
    /// # Panics
    /// When `range` reaches past `len()`.
    pub fn slice(&self, range: Range<usize>) -> Series {
        let w = self.width();
        Series {
            name: self.name.clone(),
            columns: self.columns.clone(),
            timestamps: self.timestamps[range.clone()].to_vec(),
            values: self.values[range.start * w..range.end * w].to_vec(),
        }
    }
}

/// Reads a CSV file whose first column is a timestamp and whose other columns are numbers.
/// `parse_time` turns the timestamp text into epoch seconds or says why it cannot.
pub(crate) fn read_csv(
    path: &Path,
    name: String,
    parse_time: impl Fn(&str) -> Result<i64, &'static str>,
) -> Result<Series, LoadError> {
    let mut reader = open(path)?;
    let header = reader.headers().map_err(|source| csv_error(path, source))?.clone();
    if header.get(0) != Some("timestamp") || header.len() < 2 {
        return Err(LoadError::Header {
            path: path.to_owned(),
            expected: "timestamp,<at least one value column>".into(),
            found: header.iter().collect::<Vec<_>>().join(","),
        });
    }
    let columns: Vec<String> = header.iter().skip(1).map(str::to_owned).collect();
    let mut timestamps = Vec::new();
    let mut values = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|source| csv_error(path, source))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |column: &str, value: &str, reason| LoadError::Field {
            path: path.to_owned(),
            line,
            column: column.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let stamp = record.get(0).unwrap_or_default();
        timestamps.push(parse_time(stamp).map_err(|reason| field("timestamp", stamp, reason))?);
        for (column, text) in columns.iter().zip(record.iter().skip(1)) {
            let value: f64 = text.trim().parse().map_err(|_| field(column, text, "not a number"))?;
            if !value.is_finite() {
                return Err(field(column, text, "not a finite number"));
            }
            values.push(value);
        }
    }
    if timestamps.is_empty() {
        return Err(LoadError::Content { path: path.to_owned(), reason: "no data rows after the header".into() });
    }
    Series::new(name, columns, timestamps, values)
        .map_err(|e| LoadError::Content { path: path.to_owned(), reason: e.to_string() })
}

/// A CSV reader that insists on the same number of fields in every record, so a short
/// row is reported by its line instead of shifting values between columns.
pub(crate) fn open(path: &Path) -> Result<csv::Reader<std::fs::File>, LoadError> {
    let file = std::fs::File::open(path).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
    Ok(csv::ReaderBuilder::new().flexible(false).from_reader(file))
}

pub(crate) fn csv_error(path: &Path, source: csv::Error) -> LoadError {
    let line = source.position().map_or(0, |p| p.line());
    LoadError::Csv { path: path.to_owned(), line, source }
}

/// NAB's `2014-04-01 00:00:00` (data files) and `2014-04-10 07:15:00.000000` (labels),
/// read as UTC.
pub(crate) fn parse_nab_time(text: &str) -> Result<i64, &'static str> {
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp())
        .map_err(|_| "not a timestamp like 2014-04-01 00:00:00")
}

/// SMD's synthetic timestamps: whole epoch seconds.
pub(crate) fn parse_epoch_seconds(text: &str) -> Result<i64, &'static str> {
    text.trim().parse().map_err(|_| "not whole epoch seconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("f.csv");
        std::fs::write(&path, text).expect("write temp file");
        path
    }

    #[test]
    fn reads_rows_and_parses_nab_timestamps() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(&dir, "timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,-2\n");
        let s = read_csv(&path, "f".into(), parse_nab_time).expect("valid file");
        assert_eq!(s.timestamps, vec![1_396_310_400, 1_396_310_700]);
        assert_eq!(s.rows().collect::<Vec<_>>(), vec![&[1.5][..], &[-2.0][..]]);
        assert_eq!(parse_nab_time("2014-04-01 00:05:00.000000"), Ok(1_396_310_700));
    }

    #[test]
    fn bad_value_names_file_line_and_column() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(&dir, "timestamp,a,b\n1,0.5,0.1\n2,0.5,x\n");
        let err = read_csv(&path, "f".into(), parse_epoch_seconds).expect_err("x is not a number").to_string();
        assert!(err.contains("f.csv") && err.contains("line 3") && err.contains("\"b\""), "{err}");
    }

    #[test]
    fn bad_timestamp_and_short_row_are_refused_with_their_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(&dir, "timestamp,value\n2014-04-01 00:00:00,1\n2014-13-01 00:00:00,1\n");
        let err = read_csv(&path, "f".into(), parse_nab_time).expect_err("month 13").to_string();
        assert!(err.contains("line 3") && err.contains("timestamp"), "{err}");
        let path = write(&dir, "timestamp,a,b\n1,0.5,0.1\n2,0.5\n");
        let err = read_csv(&path, "f".into(), parse_epoch_seconds).expect_err("short row").to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
