//! `augur demo --brokers` against the real broker gives the report the embedded cluster
//! gives for the same seed: the loop is stepped in event time, not by the cluster's pace.

use crate::common;

fn report(flags: &[&str], path: &std::path::Path) -> serde_json::Value {
    let out = common::augur()
        .args(["demo", "--instances", "12", "--duration", "2h", "--seed", "5", "--report"])
        .arg(path)
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "demo {flags:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let o = r.as_object_mut().unwrap();
    o.remove("wall_seconds");
    r
}

#[test]
fn demo_on_the_real_broker_reports_what_the_embedded_cluster_reports() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("demo");
    let mut real =
        report(&["--brokers", common::bootstrap(), "--topic-prefix", &prefix], &dir.path().join("real.json"));
    let mut embedded = report(&[], &dir.path().join("embedded.json"));
    assert_eq!(real["embedded_cluster"], false);
    assert_eq!(embedded["embedded_cluster"], true);
    for r in [&mut real, &mut embedded] {
        r.as_object_mut().unwrap().remove("embedded_cluster");
    }
    assert!(real["injected"].as_u64().unwrap_or(0) > 0, "{real}");
    assert_eq!(real, embedded);
}
