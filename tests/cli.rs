//! Invalid command lines are refused up front with one line naming what is wrong.

mod common;

fn refused(args: &[&str]) -> String {
    let out = common::augur().args(args).output().unwrap();
    assert!(!out.status.success(), "augur {args:?} was accepted");
    assert_eq!(out.status.code(), Some(2), "augur {args:?}: usage errors exit 2");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "augur {args:?}: not one line: {stderr}");
    stderr
}

#[test]
fn unknown_subcommand_and_flag_are_named() {
    assert!(refused(&["frobnicate"]).contains("frobnicate"));
    assert!(refused(&["tail", "alerts", "--frob"]).contains("--frob"));
}

#[test]
fn tail_refuses_an_unknown_topic_role_and_a_bad_duration() {
    assert!(refused(&["tail", "nonsense"]).contains("nonsense"));
    assert!(refused(&["tail", "alerts", "--idle-exit", "soon"]).contains("--idle-exit"));
}

#[test]
fn librdkafka_pass_through_must_be_key_value() {
    assert!(refused(&["tail", "alerts", "--librdkafka", "novalue"]).contains("KEY=VALUE"));
}

#[test]
fn demo_runs_simulator_signatures_and_detector_on_the_embedded_cluster_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = common::augur()
        .args(["demo", "--instances", "10", "--duration", "90m", "--seed", "3", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["embedded_cluster"], true);
    assert_eq!(r["instances"], 10);
    let produced = r["records_produced"].as_u64().unwrap();
    assert!(produced > 0);
    assert_eq!(r["records_detected"].as_u64(), Some(produced), "the detector processed every record");
    let starter = augur::signatures::starter::library().unwrap().len();
    assert_eq!(r["signatures"].as_u64(), Some(starter as u64), "the starter library is imported");
    let happened = r["score"]["failures_happened"].as_u64().unwrap();
    assert!(happened > 0, "the fleet had failures: {r}");
    // Every crash is an instance going silent: the liveness detector sees each one.
    assert_eq!(r["score"]["crashes_detected_offline"].as_u64(), Some(happened), "{r}");
    assert_eq!(r["alerts"]["OFFLINE"].as_u64(), Some(happened), "{r}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("predicted before failure") && stdout.contains("false alarms"), "{stdout}");
}

#[test]
fn demo_refuses_an_unwritable_report_path_before_running() {
    let out = common::augur()
        .args(["demo", "--instances", "2", "--duration", "20m", "--report", "/nonexistent-dir/report.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-dir/report.json"), "{stderr}");
}
