//! Signature files: the three layouts, directories, and errors that name file, line,
//! column and field.

use std::path::Path;

use super::signature;
use crate::codec::Normalisation;
use crate::signatures::file::{load_str, to_pretty_json};
use crate::signatures::{key, load_path, LoadError};

fn json(name: &str) -> String {
    serde_json::to_string(&signature(name)).unwrap()
}

fn parse_error(text: &str) -> (usize, usize, String) {
    match load_str(text, Path::new("sigs.json")) {
        Err(LoadError::Parse { path, line, column, message }) => {
            assert_eq!(path, Path::new("sigs.json"));
            (line, column, message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn an_object_an_array_and_json_lines_all_load_with_their_lines() {
    let one = load_str(&json("a"), Path::new("one.json")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].signature, signature("a"));
    assert_eq!((one[0].origin.line, one[0].origin.column), (1, 1));

    let array = format!("[\n  {},\n\n  {}\n]\n", json("a"), json("b"));
    let loaded = load_str(&array, Path::new("array.json")).unwrap();
    assert_eq!(loaded.iter().map(|l| l.origin.line).collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(loaded[1].origin.column, 3);
    assert_eq!(loaded[1].signature.name, "b");

    let lines = format!("{}\n{}\n\n{}\n", json("a"), json("b"), json("c"));
    let loaded = load_str(&lines, Path::new("lines.json")).unwrap();
    assert_eq!(loaded.iter().map(|l| l.origin.line).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert_eq!(loaded[2].origin.to_string(), "lines.json:4:1");
}

#[test]
fn unknown_missing_and_mistyped_fields_are_named_with_line_and_column() {
    let text = json("a").replacen("\"threshold\"", "\n\"treshold\"", 1);
    let (line, column, message) = parse_error(&text);
    assert_eq!(line, 2, "{message}");
    assert!(column > 1, "{message}");
    assert!(message.contains("unknown field `treshold`"), "{message}");

    let mut v: serde_json::Value = serde_json::from_str(&json("a")).unwrap();
    v.as_object_mut().unwrap().remove("interval_ms");
    let (_, _, message) = parse_error(&v.to_string());
    assert!(message.contains("missing field `interval_ms`"), "{message}");

    let text = format!("{}\n{}", json("a"), json("b").replace("\"threshold\":0.8", "\"threshold\":\"high\""));
    let (line, _, message) = parse_error(&text);
    assert_eq!(line, 2);
    assert!(message.starts_with("field `threshold`: invalid type: string \"high\""), "{message}");
    assert!(!message.contains(" at line "), "the position is said once: {message}");

    let (line, _, message) = parse_error("[\n{\"name\": \"a\",\n");
    assert_eq!(line, 3, "{message}");
}

#[test]
fn invalid_signatures_name_file_line_and_field() {
    let mut bad = signature("c");
    bad.series[1].pop();
    let lines = format!("{}\n{}\n{}\n", json("a"), json("b"), serde_json::to_string(&bad).unwrap());
    let e = load_str(&lines, Path::new("lib.jsonl")).unwrap_err();
    match &e {
        LoadError::Invalid { path, line, source, .. } => {
            assert_eq!(path, Path::new("lib.jsonl"));
            assert_eq!(*line, 3);
            assert_eq!(source.field, "series[1]");
            assert_eq!(source.key, "web/*/c");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("lib.jsonl:3:1: signature web/*/c: series[1] "), "{e}");
}

#[test]
fn directories_load_json_files_in_name_order_and_refuse_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.json"), json("b")).unwrap();
    std::fs::write(dir.path().join("a.json"), format!("[{}, {}]", json("a1"), json("a2"))).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a signature").unwrap();
    let loaded = load_path(dir.path()).unwrap();
    let names: Vec<&str> = loaded.iter().map(|l| l.signature.name.as_str()).collect();
    assert_eq!(names, vec!["a1", "a2", "b"]);
    assert!(loaded[2].origin.path.ends_with("b.json"));

    std::fs::write(dir.path().join("c.json"), format!("\n{}", json("a2"))).unwrap();
    match load_path(dir.path()).unwrap_err() {
        LoadError::Duplicate { key, first, second } => {
            assert_eq!(key, "web/*/a2");
            assert!(first.contains("a.json:1:"), "{first}");
            assert!(second.contains("c.json:2:1"), "{second}");
        }
        other => panic!("{other:?}"),
    }

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(load_path(empty.path()), Err(LoadError::Empty { .. })));
    let missing = empty.path().join("nope.json");
    let e = load_path(&missing).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }) && e.to_string().contains("nope.json"), "{e}");
}

#[test]
fn normalisation_defaults_per_metric_and_reads_lower_case() {
    let mut v: serde_json::Value = serde_json::from_str(&json("a")).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("normalisation");
    o.insert("metrics".into(), serde_json::json!(["memory_utilization_ratio", "request_rate_per_second"]));
    let loaded = load_str(&v.to_string(), Path::new("x.json")).unwrap();
    assert_eq!(loaded[0].signature.normalisation, vec![Normalisation::Level, Normalisation::Shape]);

    v["normalisation"] = serde_json::json!(["shape", "LEVEL"]);
    let loaded = load_str(&v.to_string(), Path::new("x.json")).unwrap();
    assert_eq!(loaded[0].signature.normalisation, vec![Normalisation::Shape, Normalisation::Level]);
}

#[test]
fn pretty_json_reads_back_as_the_same_signature() {
    let s = signature("round");
    let text = to_pretty_json(&s);
    assert!(text.lines().count() < 20, "one line per channel:\n{text}");
    let back = load_str(&text, Path::new("round.json")).unwrap();
    assert_eq!(back[0].signature, s);
    assert_eq!(key(&back[0].signature), "web/*/round");
}
