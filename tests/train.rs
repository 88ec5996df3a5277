//! `augur train` and `augur score` from the command line: a CSV in, a model out, scores
//! back; bad flags and files refused with one line naming them.

mod common;

use std::fmt::Write as _;

fn refused(args: &[&str]) -> String {
    let out = common::augur().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "augur {args:?}: usage errors exit 2");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "augur {args:?}: not one line: {stderr}");
    stderr
}

#[test]
fn train_needs_one_source_and_a_readable_file() {
    assert!(refused(&["train", "--out", "x"]).contains("required arguments"));
    let e = refused(&["train", "--csv", "/nonexistent/telemetry.csv"]);
    assert!(e.contains("/nonexistent/telemetry.csv"), "{e}");
    assert!(refused(&["train", "--simulate", "--epochs", "0"]).contains("--epochs"));
    assert!(refused(&["train", "--simulate", "--model-version", "a/b"]).contains("--model-version"));
    assert!(refused(&["score", "--model", "m", "--csv", "/nonexistent.csv", "--out", "o"]).contains("/nonexistent.csv"));
    assert!(refused(&["score", "--model", "m"]).contains("required arguments"));
}

/// Three hours of two metrics at 10 s: a daily-like sine and a noisy level.
fn telemetry() -> String {
    let mut s = String::from("timestamp,load,queue\n");
    for k in 0..1080u32 {
        let t = 1_767_571_200 + 10 * k;
        let load = (f64::from(k) / 40.0).sin();
        let queue = 5.0 + f64::from(k * 7919 % 13) / 13.0;
        writeln!(s, "{t},{load:.4},{queue:.4}").unwrap();
    }
    s
}

#[test]
fn a_model_trained_on_a_csv_scores_every_row_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("svc.csv");
    std::fs::write(&csv, telemetry()).unwrap();
    let models = dir.path().join("models");
    let out = common::augur()
        .args(["train", "--epochs", "2", "--model-version", "3", "--csv"])
        .arg(&csv)
        .arg("--out")
        .arg(&models)
        .output()
        .unwrap();
    assert!(out.status.success(), "train failed: {}", String::from_utf8_lossy(&out.stderr));
    let model_dir = models.join("svc").join("3");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["features"], serde_json::json!(["load", "queue"]));
    assert_eq!(meta["training"]["first_event_ms"], 1_767_571_200_000i64);

    let scores = dir.path().join("scores.csv");
    let out = common::augur()
        .args(["score", "--model"])
        .arg(&model_dir)
        .arg("--csv")
        .arg(&csv)
        .arg("--out")
        .arg(&scores)
        .output()
        .unwrap();
    assert!(out.status.success(), "score failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&scores).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "timestamp,score,signature,confidence");
    assert_eq!(rows.len(), 1 + 1080, "one row per input row");
    // The first window is still filling: no score until 64 steps are behind a row.
    assert_eq!(rows[1], "1767571200,,,");
    let scored: Vec<u32> = rows[1..].iter().filter_map(|r| r.split(',').nth(1)?.parse().ok()).collect();
    assert!(scored.len() > 900, "{} rows scored", scored.len());
    assert!(scored.iter().all(|&s| s <= 100));

    // A bad cell is named by line and column.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "timestamp,load,queue\n1767571200,0.5,1\n1767571210,0.5,lots\n").unwrap();
    let out = common::augur()
        .args(["score", "--model"])
        .arg(&model_dir)
        .arg("--csv")
        .arg(&bad)
        .arg("--out")
        .arg(&scores)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.csv line 3 column 3: queue: \"lots\" is not a finite number"), "{stderr}");
}
