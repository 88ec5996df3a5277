//! Signature files: parsing the JSON of `augur signatures import` and validating it.
//!
//! In: valid signatures written as the project writes them ([`to_pretty_json`]), as one
//! object, an array or JSON lines, then edited field by field (removed, repeated,
//! unknown, of the wrong type, a number that is NaN/inf/huge/negative, a series point
//! that is not finite, an empty list, a very long or control-character string) and
//! blindly. Out: assertions that loading never panics, that every signature it accepts
//! passes [`validate`], and that every refusal names the file and a line of it.

use std::path::Path;

use augur::codec::{metric_names, FailureSignature, Normalisation};
use augur::signatures::file::load_str;
use augur::signatures::{load_path, to_pretty_json, validate, LoadError};
use proptest::prelude::*;
use proptest::sample::Index;

use super::{apply_text, config, edits, long_string, Edit, NOT_A_NUMBER};

/// A case parses a few kilobytes of JSON three times and writes one temporary file:
/// 256 cases take about two seconds in a debug build.
const CASES: u32 = 256;

fn valid_signature() -> impl Strategy<Value = FailureSignature> {
    (
        "[a-z][a-z0-9_-]{0,11}",
        "[a-z]{1,8}",
        prop_oneof![Just("*".to_owned()), "[a-z]{1,8}"],
        prop::sample::subsequence(metric_names::ALL, 1..5),
        8usize..40,
        prop::collection::vec(-1e6f64..1e6, 200),
        1i64..600_000,
        0.001f64..0.99,
        0i64..3_600_000,
    )
        .prop_map(|(name, app_type, function, metrics, points, values, interval_ms, threshold, lead_ms)| {
            let n = metrics.len();
            FailureSignature {
                name,
                app_type,
                function,
                failure_kind: "oom".to_owned(),
                metrics: metrics.iter().map(|m| (*m).to_owned()).collect(),
                normalisation: (0..n).map(|k| [Normalisation::Level, Normalisation::Rise][k % 2]).collect(),
                series: (0..n).map(|c| values[c * points % 160..][..points].to_vec()).collect(),
                interval_ms,
                threshold,
                lead_ms,
                source: "fuzz".to_owned(),
            }
        })
}

/// Edits of one signature object, field by field, on its JSON text.
#[derive(Debug, Clone)]
enum FieldEdit {
    Remove(Index),
    Repeat(Index),
    Unknown,
    Raw(Index, &'static str),
    Quote(Index),
    LongString(Index),
    Point(Index, Index, &'static str),
}

/// Strings a name or key part must not be, and JSON that is not a string at all.
const BAD_STRINGS: &[&str] =
    &["\"a/b\"", "\"a\\u0000b\"", "\"\\ud800\"", "\"\\n\"", "\"   \"", "\"*\"", "\"LEVEL\"", "\"level\"", "null"];

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        any::<Index>().prop_map(FieldEdit::Remove),
        any::<Index>().prop_map(FieldEdit::Repeat),
        Just(FieldEdit::Unknown),
        (any::<Index>(), prop::sample::select(NOT_A_NUMBER)).prop_map(|(i, t)| FieldEdit::Raw(i, t)),
        (any::<Index>(), prop::sample::select(BAD_STRINGS)).prop_map(|(i, t)| FieldEdit::Raw(i, t)),
        any::<Index>().prop_map(FieldEdit::Quote),
        any::<Index>().prop_map(FieldEdit::LongString),
        (any::<Index>(), any::<Index>(), prop::sample::select(NOT_A_NUMBER))
            .prop_map(|(c, p, t)| FieldEdit::Point(c, p, t)),
    ]
}

/// The signature as `(key, raw JSON value)` pairs, edited, and joined back into an object.
fn edited_object(s: &FailureSignature, edits: &[FieldEdit]) -> String {
    let value: serde_json::Value = serde_json::from_str(&to_pretty_json(s)).expect("pretty JSON parses");
    let mut fields: Vec<(String, String)> =
        value.as_object().expect("an object").iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    for e in edits {
        let n = fields.len();
        if n == 0 {
            break;
        }
        match e {
            FieldEdit::Remove(i) => {
                fields.remove(i.index(n));
            }
            FieldEdit::Repeat(i) => fields.push(fields[i.index(n)].clone()),
            FieldEdit::Unknown => fields.push(("treshold".to_owned(), "0.5".to_owned())),
            FieldEdit::Raw(i, t) => fields[i.index(n)].1 = (*t).to_owned(),
            FieldEdit::Quote(i) => {
                let v = &mut fields[i.index(n)].1;
                *v = serde_json::Value::String(v.clone()).to_string();
            }
            FieldEdit::LongString(i) => fields[i.index(n)].1 = format!("\"{}\"", long_string()),
            FieldEdit::Point(c, p, t) => {
                let mut series: Vec<Vec<String>> =
                    s.series.iter().map(|ch| ch.iter().map(f64::to_string).collect()).collect();
                let ch: &mut Vec<String> = &mut series[c.index(s.series.len())];
                let at = p.index(ch.len());
                ch[at] = (*t).to_owned();
                let raw = series.iter().map(|ch| format!("[{}]", ch.join(","))).collect::<Vec<_>>().join(",");
                if let Some(f) = fields.iter_mut().find(|(k, _)| k == "series") {
                    f.1 = format!("[{raw}]");
                }
            }
        }
    }
    let body: Vec<String> =
        fields.iter().map(|(k, v)| format!("  {}: {v}", serde_json::Value::from(k.as_str()))).collect();
    format!("{{\n{}\n}}", body.join(",\n"))
}

/// The outcome every text must get from the loader.
fn check_load(text: &str, dir: &Path) -> Result<(), TestCaseError> {
    let path = Path::new("fuzz/signatures.json");
    let lines = text.lines().count() + 1;
    match load_str(text, path) {
        Ok(loaded) => {
            for l in &loaded {
                prop_assert_eq!(validate(&l.signature), Ok(()));
                prop_assert_eq!(&l.origin.path, path);
                prop_assert!((1..=lines).contains(&l.origin.line), "{}", l.origin);
                // What the project writes of an accepted signature loads back.
                let again = load_str(&to_pretty_json(&l.signature), path);
                prop_assert!(again.is_ok(), "{:?}", again);
            }
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.starts_with(&path.display().to_string()), "{message}");
            if let LoadError::Parse { line, .. } | LoadError::Invalid { line, .. } = e {
                prop_assert!((1..=lines).contains(&line), "line {line} of {lines}: {message}");
            }
        }
    }
    // The same text as a file: the import path agrees and names the file.
    let file = dir.join("s.json");
    std::fs::write(&file, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if let Err(e) = load_path(&file) {
        prop_assert!(e.to_string().starts_with(&file.display().to_string()), "{e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]
    #[test]
    fn signature_import_never_panics_and_names_file_and_line(
        sigs in prop::collection::vec(valid_signature(), 1..4),
        fields in prop::collection::vec(field_edit(), 0..4),
        container in 0u8..3,
        bytes in prop::option::weighted(0.3, edits()),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let objects: Vec<String> = sigs
            .iter()
            .enumerate()
            .map(|(k, s)| edited_object(s, if k == 0 { &fields } else { &[] }))
            .collect();
        let text = match container {
            0 => objects.join("\n"),
            1 => format!("[{}]", objects.join(",\n")),
            _ => objects.iter().map(|o| o.replace('\n', " ")).collect::<Vec<_>>().join("\n"),
        };
        check_load(&text, dir.path())?;
        let blind: Vec<Edit> = bytes.unwrap_or_default();
        check_load(&apply_text(&text, &blind), dir.path())?;
    }
}
