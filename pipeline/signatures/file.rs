//! Signature files: how people and scripts write failure signatures down.
//!
//! In: a JSON file holding one signature object, an array of them, or JSON lines (one
//! object per line), or a directory of such `*.json` files (read in name order, not
//! recursively). Out: the signatures with where each came from, every one checked by
//! [`validate`]. Guarantees: all or nothing — any problem fails the whole load with a
//! [`LoadError`] naming the file, the line and column, and the field; unknown fields
//! are refused (a misspelt `treshold` must not silently fall back to nothing); two
//! signatures with one key are refused, since the second would silently replace the
//! first in the table.
//!
//! The fields are those of `schemas/signature.avsc`; `normalisation` may be left out
//! (each metric then gets `window::features::default_normalisation`) and may be
//! written in lower case, `lead_ms` and `source` may be left out as in the schema.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::{key, validate, InvalidSignature};
use crate::codec::{FailureSignature, Normalisation};
use crate::window::features;

/// Why signature files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}:{line}:{column}: {source}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: InvalidSignature,
    },
    #[error("{second}: signature {key} is also defined at {first}; keys must be unique")]
    Duplicate { key: String, first: String, second: String },
    #[error("{path}: no signatures found (expected a JSON object, an array, JSON lines or a directory of *.json)")]
    Empty { path: PathBuf },
}

/// Where a signature was read: file, and line and column (1-based) of its opening `{`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// A signature and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub signature: FailureSignature,
    pub origin: Origin,
}

/// Loads a signature file or a directory of them; see the module documentation.
pub fn load_path(path: &Path) -> Result<Vec<Loaded>, LoadError> {
    let io = |source| LoadError::Io { path: path.to_owned(), source };
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "json") && p.is_file() {
                files.push(p);
            }
        }
        // Sorted, so that a load (and the error it reports first) is deterministic.
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut all = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io { path: file.clone(), source })?;
        all.extend(load_str(&text, &file)?);
    }
    if all.is_empty() {
        return Err(LoadError::Empty { path: path.to_owned() });
    }
    check_unique(&all)?;
    Ok(all)
}

/// Parses and validates the signatures in `text`, read from `path` (named in errors).
/// Keys are not checked for uniqueness here; [`load_path`] does that across files.
pub fn load_str(text: &str, path: &Path) -> Result<Vec<Loaded>, LoadError> {
    let parse_error = |e: serde_json::Error| LoadError::Parse {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()).to_owned(),
    };
    let mut parsed: Vec<(usize, SignatureFile)> = Vec::new();
    if text.trim_start().starts_with('[') {
        let entries: Vec<SignatureFile> = serde_json::from_str(text).map_err(parse_error)?;
        parsed.extend(array_element_starts(text).into_iter().zip(entries));
    } else {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<SignatureFile>();
        loop {
            let offset = stream.byte_offset();
            match stream.next() {
                None => break,
                Some(entry) => {
                    let start = offset + (text.len() - offset - text[offset..].trim_start().len());
                    parsed.push((start, entry.map_err(parse_error)?));
                }
            }
        }
    }
    parsed
        .into_iter()
        .map(|(offset, entry)| {
            let (line, column) = line_column(text, offset);
            let signature = entry.into_signature();
            validate(&signature).map_err(|source| LoadError::Invalid {
                path: path.to_owned(),
                line,
                column,
                source,
            })?;
            Ok(Loaded { signature, origin: Origin { path: path.to_owned(), line, column } })
        })
        .collect()
}

/// Refuses two signatures with one key, naming where both are.
pub fn check_unique(loaded: &[Loaded]) -> Result<(), LoadError> {
    let mut seen: BTreeMap<String, &Origin> = BTreeMap::new();
    for l in loaded {
        if let Some(first) = seen.insert(key(&l.signature), &l.origin) {
            return Err(LoadError::Duplicate {
                key: key(&l.signature),
                first: first.to_string(),
                second: l.origin.to_string(),
            });
        }
    }
    Ok(())
}

/// A signature as pretty JSON, one channel of the series per line (readable, and a
/// diff shows which channel changed). Values are rounded to 6 significant digits:
/// telemetry is not more precise than that.
pub fn to_pretty_json(s: &FailureSignature) -> String {
    let mut out = String::from("{\n");
    let fields: [(&str, String); 11] = [
        ("name", js(&s.name)),
        ("app_type", js(&s.app_type)),
        ("function", js(&s.function)),
        ("failure_kind", js(&s.failure_kind)),
        ("metrics", js(&s.metrics).replace("\",\"", "\", \"")),
        ("normalisation", js(&s.normalisation).replace("\",\"", "\", \"")),
        ("series", String::new()),
        ("interval_ms", s.interval_ms.to_string()),
        ("threshold", js(&round6(s.threshold))),
        ("lead_ms", s.lead_ms.to_string()),
        ("source", js(&s.source)),
    ];
    for (i, (name, value)) in fields.iter().enumerate() {
        let _ = write!(out, "  \"{name}\": ");
        if *name == "series" {
            out.push_str("[\n");
            for (c, channel) in s.series.iter().enumerate() {
                let rounded: Vec<f64> = channel.iter().map(|&v| round6(v)).collect();
                let sep = if c + 1 < s.series.len() { "," } else { "" };
                let _ = writeln!(out, "    {}{sep}", js(&rounded).replace(',', ", "));
            }
            out.push_str("  ]");
        } else {
            out.push_str(value);
        }
        out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
    out
}

/// Compact JSON of a plain value (strings, numbers, lists of them), which cannot fail.
fn js<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn round6(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let digits = 6 - 1 - v.abs().log10().floor() as i32;
    if !(-300..=300).contains(&digits) {
        return v;
    }
    let scale = 10f64.powi(digits);
    let r = (v * scale).round() / scale;
    if r.is_finite() {
        r
    } else {
        v
    }
}

/// serde_json appends " at line L column C" to its messages; the error says it once.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i + 9..].split(" column ").all(|n| n.bytes().all(|b| b.is_ascii_digit())) => &message[..i],
        _ => message,
    }
}

/// Line and column (1-based, in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Byte offsets of the elements of the top-level array in `text`, which has parsed as
/// JSON already (so strings and nesting are well formed).
fn array_element_starts(text: &str) -> Vec<usize> {
    let (mut depth, mut in_string, mut escaped, mut expecting) = (0usize, false, false, false);
    let mut starts = Vec::new();
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if expecting && !b.is_ascii_whitespace() && b != b']' {
            starts.push(i);
            expecting = false;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                expecting = depth == 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    starts
}

/// The file form of a signature: the schema's fields, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    #[serde(deserialize_with = "field::name")]
    name: String,
    #[serde(deserialize_with = "field::app_type")]
    app_type: String,
    #[serde(deserialize_with = "field::function")]
    function: String,
    #[serde(deserialize_with = "field::failure_kind")]
    failure_kind: String,
    #[serde(deserialize_with = "field::metrics")]
    metrics: Vec<String>,
    #[serde(default, deserialize_with = "field::normalisation")]
    normalisation: Option<Vec<Mode>>,
    #[serde(deserialize_with = "field::series")]
    series: Vec<Vec<f64>>,
    #[serde(deserialize_with = "field::interval_ms")]
    interval_ms: i64,
    #[serde(deserialize_with = "field::threshold")]
    threshold: f64,
    #[serde(default, deserialize_with = "field::lead_ms")]
    lead_ms: i64,
    #[serde(default, deserialize_with = "field::source")]
    source: String,
}

#[derive(Deserialize)]
enum Mode {
    #[serde(rename = "LEVEL", alias = "level")]
    Level,
    #[serde(rename = "SHAPE", alias = "shape")]
    Shape,
    #[serde(rename = "RISE", alias = "rise")]
    Rise,
}

impl SignatureFile {
    fn into_signature(self) -> FailureSignature {
        let normalisation = match self.normalisation {
            Some(modes) => modes
                .into_iter()
                .map(|m| match m {
                    Mode::Level => Normalisation::Level,
                    Mode::Shape => Normalisation::Shape,
                    Mode::Rise => Normalisation::Rise,
                })
                .collect(),
            None => self.metrics.iter().map(|m| features::default_normalisation(m)).collect(),
        };
        FailureSignature {
            name: self.name,
            app_type: self.app_type,
            function: self.function,
            failure_kind: self.failure_kind,
            metrics: self.metrics,
            normalisation,
            series: self.series,
            interval_ms: self.interval_ms,
            threshold: self.threshold,
            lead_ms: self.lead_ms,
            source: self.source,
        }
    }
}

/// One deserializer per field, so that a value of the wrong type names its field
/// (serde alone says "invalid type: string, expected f64" and leaves the reader to
/// guess which one).
mod field {
    use serde::de::{Deserialize, Deserializer, Error};

    macro_rules! named {
        ($($field:ident: $ty:ty),* $(,)?) => {$(
            pub(super) fn $field<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                <$ty>::deserialize(d).map_err(|e| {
                    D::Error::custom(format_args!("field `{}`: {}", stringify!($field), super::strip_position(&e.to_string())))
                })
            }
        )*};
    }

    named!(
        name: String,
        app_type: String,
        function: String,
        failure_kind: String,
        metrics: Vec<String>,
        normalisation: Option<Vec<super::Mode>>,
        series: Vec<Vec<f64>>,
        interval_ms: i64,
        threshold: f64,
        lead_ms: i64,
        source: String,
    );
}
