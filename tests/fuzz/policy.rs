//! Policy files: [`parse`] of one file's text and [`Policies::load`] of a directory.
//!
//! In: the shipped `policies/*.toml`, edited line by line (a value replaced by one that
//! is not a number, out of range, of the wrong type or very long; an unknown key; a
//! repeated or deleted line; a stray table header) and blindly. Out: assertions that
//! nothing panics, that an accepted file passes its range checks, and that every
//! refusal reads `FILE:LINE: field: message` with a line of the file.

use std::path::Path;

use augur::policy::load::parse;
use augur::policy::{Policies, PolicyError};
use proptest::prelude::*;
use proptest::sample::Index;

use super::{apply_text, config, edits, long_string, Edit, NOT_A_NUMBER};

/// A case parses a file of about a hundred lines a few times and loads a directory of
/// two: 256 cases take about two seconds in a debug build.
const CASES: u32 = 256;

const SHIPPED: [&str; 4] = [
    include_str!("../../policies/cache.toml"),
    include_str!("../../policies/database.toml"),
    include_str!("../../policies/web.toml"),
    include_str!("../../policies/worker.toml"),
];

/// Quantities and values the policy fields must refuse or bound.
const BAD_VALUES: &[&str] = &[
    "\"-5m\"",
    "\"250x\"",
    "\"1e30Ei\"",
    "\"NaNGi\"",
    "\"infm\"",
    "\"18446744073709551616\"",
    "\"0\"",
    "\"0m\"",
    "\"1.5\"",
    "nan",
    "inf",
    "-inf",
    "-1.0",
    "1e308",
    "101.0",
    "2147483648",
    "-9223372036854775808",
];

const STRAY: &[&str] = &[
    "[guardrails]",
    "[rules.\"\"]",
    "[functions.x]\nexpected_instances = 0",
    "[[rules]]",
    "[tiers.deep.er]",
    "app_type = \"\"",
    "treshold = 1",
    "rules = 3",
    "[rules.\"*\"]\nmin_confidence = 2",
];

#[derive(Debug, Clone)]
enum LineEdit {
    Value(Index, &'static str),
    LongValue(Index),
    Insert(Index, &'static str),
    Repeat(Index),
    Delete(Index),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        (any::<Index>(), prop::sample::select(NOT_A_NUMBER)).prop_map(|(i, v)| LineEdit::Value(i, v)),
        (any::<Index>(), prop::sample::select(BAD_VALUES)).prop_map(|(i, v)| LineEdit::Value(i, v)),
        any::<Index>().prop_map(LineEdit::LongValue),
        (any::<Index>(), prop::sample::select(STRAY)).prop_map(|(i, s)| LineEdit::Insert(i, s)),
        any::<Index>().prop_map(LineEdit::Repeat),
        any::<Index>().prop_map(LineEdit::Delete),
    ]
}

fn apply_lines(text: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        let settings: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].contains(" = ")).collect();
        let n = lines.len();
        match e {
            LineEdit::Value(i, v) if !settings.is_empty() => {
                let k = settings[i.index(settings.len())];
                let key = lines[k].split(" = ").next().unwrap_or_default().to_owned();
                lines[k] = format!("{key} = {v}");
            }
            LineEdit::LongValue(i) if !settings.is_empty() => {
                let k = settings[i.index(settings.len())];
                let key = lines[k].split(" = ").next().unwrap_or_default().to_owned();
                lines[k] = format!("{key} = \"{}\"", long_string());
            }
            LineEdit::Insert(i, s) => lines.insert(i.index(n + 1), (*s).to_owned()),
            LineEdit::Repeat(i) if n > 0 => {
                let line = lines[i.index(n)].clone();
                lines.insert(i.index(n), line);
            }
            LineEdit::Delete(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

/// `FILE:LINE: field: message`, with a line of the file and a field named.
fn check_message(message: &str, file: &Path, text: &str) -> Result<(), TestCaseError> {
    let lines = text.lines().count() + 1;
    let rest = message.strip_prefix(&format!("{}:", file.display()));
    prop_assert!(rest.is_some(), "{message}");
    let (line, rest) = rest.unwrap_or_default().split_once(": ").unwrap_or_default();
    let line: usize = line.parse().unwrap_or(0);
    prop_assert!((1..=lines).contains(&line), "line {line} of {lines}: {message}");
    let (field, what) = rest.split_once(": ").unwrap_or_default();
    prop_assert!(!field.is_empty() && !what.is_empty(), "{message}");
    Ok(())
}

fn check_policy(text: &str, other: &str, dir: &Path) -> Result<(), TestCaseError> {
    let file = dir.join("a.toml");
    let parsed = parse(&file, text);
    match &parsed {
        Ok(policy) => prop_assert_eq!(policy.validate(), Vec::<(String, String)>::new()),
        Err(e) => check_message(&e.to_string(), &file, text)?,
    }
    // Loaded from a directory beside another valid file: same verdict, or the second
    // file refused for defining the same application type.
    let second = dir.join("b.toml");
    let write = |p: &Path, t: &str| std::fs::write(p, t).map_err(|e| TestCaseError::fail(e.to_string()));
    write(&file, text)?;
    write(&second, other)?;
    let loaded = Policies::load(&[dir.to_owned()]);
    match (parsed, loaded) {
        (Ok(p), Ok(all)) => prop_assert_eq!(all.get(&p.app_type), Some(&p)),
        (Ok(p), Err(e @ PolicyError::DuplicateAppType { .. })) => {
            prop_assert!(parse(&second, other).is_ok_and(|o| o.app_type == p.app_type));
            check_message(&e.to_string(), &second, other)?;
        }
        (Err(_), Err(e)) => check_message(&e.to_string(), &file, text)?,
        (parsed, loaded) => return Err(TestCaseError::fail(format!("parse {parsed:?} but load {loaded:?}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]
    #[test]
    fn policy_parser_never_panics_and_names_file_line_and_field(
        which in 0usize..4,
        other in 0usize..4,
        lines in prop::collection::vec(line_edit(), 0..4),
        bytes in prop::option::weighted(0.3, edits()),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = apply_lines(SHIPPED[which], &lines);
        let blind: Vec<Edit> = bytes.unwrap_or_default();
        check_policy(&apply_text(&text, &blind), SHIPPED[other], dir.path())?;
    }
}

#[test]
fn every_shipped_policy_parses() {
    for text in SHIPPED {
        let policy = parse(Path::new("p.toml"), text).expect("shipped policy parses");
        assert_eq!(policy.validate(), Vec::<(String, String)>::new());
    }
}
