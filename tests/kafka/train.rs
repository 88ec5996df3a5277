//! `augur train` against the real broker: replaying simulated telemetry by event time,
//! the calibration of the model it writes, the promotion gate and announcement, and a
//! running detector swapping to the announced model between two batches.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use augur::codec::AlertKind;

use crate::common;
use crate::detect::{alerts, detector, prepare, start_ms, wait_committed};

const HOUR: i64 = 3_600_000;

/// The body of `GET http://addr/metrics`; empty while nothing answers there.
fn scrape(addr: &str) -> String {
    common::http_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

#[test]
fn train_replays_telemetry_announces_a_model_and_a_running_detector_swaps_to_it() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("train");
    let group = common::unique("g");
    let start = start_ms();
    // Three hours of a fleet, a detector on it serving the shipped models.
    let (_, first) = prepare(bootstrap, &prefix, 24, "3h", 21);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut d = detector(bootstrap, &prefix, &group, "r1", &["--metrics-addr", &metrics]);
    let telemetry = format!("{prefix}.telemetry");
    wait_committed(bootstrap, &group, &telemetry, first as i64, Duration::from_secs(600), &mut d);
    assert!(
        scrape(&metrics).contains(r#"augur_detect_model{app_type="web",version="1"} 1"#),
        "the detector serves the shipped web model first:\n{}",
        scrape(&metrics)
    );

    // Train the web model on those three hours, replayed from the broker, by a trainer
    // that would retrain every hour and serves its own metrics meanwhile.
    let out = tempfile::tempdir().unwrap();
    let trainer_metrics = format!("127.0.0.1:{}", common::free_port());
    let trainer = common::augur()
        .args(["train", "--brokers", bootstrap, "--topic-prefix", &prefix])
        .args(["--from", &start.to_string(), "--to", &(start + 3 * HOUR).to_string()])
        .args(["--app-type", "web", "--epochs", "4", "--every", "1h", "--metrics-addr", &trainer_metrics])
        .args(["--out", out.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start augur train");
    let mut trainer = crate::detect::Running(Some(trainer));
    let began = Instant::now();
    let round = loop {
        let m = common::scrape(&trainer_metrics);
        if m.get("augur_train_rounds_total").is_some_and(|&n| n >= 1.0) {
            break m;
        }
        assert!(began.elapsed() < Duration::from_secs(900), "no training round completed: {m:?}");
        if let Some(status) = trainer.child().try_wait().unwrap() {
            panic!("the trainer exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(200)); // polling a condition, with a deadline
    };
    assert_eq!(round["augur_train_models_written_total"], 1.0, "{round:?}");
    assert_eq!(round["augur_train_models_promoted_total"], 1.0, "nothing was announced before: {round:?}");
    assert_eq!(round["augur_train_models_held_back_total"], 0.0, "{round:?}");
    assert!(round["augur_train_windows_total"] > 100.0, "{round:?}");
    assert!(round[r#"augur_train_candidate_error{app_type="web"}"#] > 0.0, "{round:?}");
    assert_eq!(common::http_get(&trainer_metrics, "/readyz").map(|(s, _)| s), Some(200));
    // Each model's line is printed as the round writes it, before the round is counted,
    // so it is there while the schedule still runs; SIGTERM between rounds ends it.
    let mut child = trainer.0.take().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let (lines, printed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout) {
            lines.send(line.expect("the trainer's stdout")).expect("the test is listening");
        }
    });
    let line = printed.recv_timeout(Duration::from_secs(60)).expect("the round's model line, printed while it runs");
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the trainer exited with {status} after SIGTERM");
    reader.join().unwrap();
    let rest: Vec<String> = printed.try_iter().collect();
    assert!(rest.is_empty(), "one line per model written, once: {rest:?}");
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["app_type"], "web", "{report}");
    assert!(report["train_windows"].as_u64().unwrap() > 100, "{report}");
    let share = report["validation_at_most_30_share"].as_f64().unwrap();
    assert!(share >= 0.99, "held-out normal windows scoring at most 30: {share}");
    assert_eq!(report["gate"]["promote"], true, "nothing announced before: the gate promotes ({report})");
    assert_eq!(report["announced"], true, "{report}");

    // The replayed model on a fresh simulated fleet with injected failures: normal
    // windows stay in the no-change tier, failures cross 70 before they happen.
    let model = augur::detect::lstm::AnomalyModel::load(std::path::Path::new(report["dir"].as_str().unwrap())).unwrap();
    let fleet = augur::simulate::FleetConfig {
        instances: 24,
        seed: 1001,
        start_ms: start,
        interval_ms: 10_000,
        duration_ms: 4 * HOUR,
        failure_fraction: 0.5,
        kinds: augur::simulate::FailureKind::ALL.to_vec(),
    };
    let check = augur::train::check::check(&model, &fleet).unwrap();
    let leads: Vec<(String, Option<i64>)> = check
        .failures
        .iter()
        .filter(|f| f.failure_ms.is_some())
        .map(|f| (f.kind.clone(), f.lead_above_70_ms.map(|ms| ms / 1000)))
        .collect();
    eprintln!(
        "web model on a failing fleet: {:.4} of normal windows ≤ 30; lead above 70 by kind (s): {leads:?}",
        check.normal_at_most_30_share
    );
    assert!(check.normal_at_most_30_share >= 0.99, "{check:?}");
    // Every kind that failed: most of its failures (all of one or two) cross 70 first.
    let mut kinds: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for (kind, lead) in &leads {
        let k = kinds.entry(kind.as_str()).or_default();
        k.0 += 1;
        k.1 += usize::from(lead.is_some_and(|s| s > 0));
    }
    assert!(!kinds.is_empty(), "{check:?}");
    for (kind, (failed, crossed)) in &kinds {
        assert!(crossed * 2 > *failed, "{kind}: {crossed} of {failed} crossed 70 before failing: {leads:?}");
    }
    // That fleet's web instances happen to have no load surge; a fleet of surges only.
    let surges = augur::simulate::FleetConfig { kinds: vec![augur::simulate::FailureKind::CpuSaturation], ..fleet };
    let check = augur::train::check::check(&model, &surges).unwrap();
    let leads: Vec<Option<i64>> = check
        .failures
        .iter()
        .filter(|f| f.failure_ms.is_some())
        .map(|f| f.lead_above_70_ms.map(|ms| ms / 1000))
        .collect();
    eprintln!("web model on load surges: lead above 70 (s): {leads:?}");
    let crossed = leads.iter().filter(|lead| lead.is_some_and(|s| s > 0)).count();
    assert!(!leads.is_empty() && crossed * 2 > leads.len(), "{crossed} of the surges crossed 70 first: {leads:?}");

    // The running detector loads the announcement between two batches.
    let version = std::path::Path::new(report["dir"].as_str().unwrap()).file_name().unwrap().to_str().unwrap();
    let wanted = format!(r#"augur_detect_model{{app_type="web",version="{version}"}} 1"#);
    let began = Instant::now();
    while !scrape(&metrics).contains(&wanted) {
        assert!(began.elapsed() < Duration::from_secs(60), "the detector did not swap:\n{}", scrape(&metrics));
        if let Some(status) = d.child().try_wait().unwrap() {
            panic!("the detector exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(200)); // polling a condition, with a deadline
    }

    // An hour more of the same fleet, judged with the new model.
    let later = (start + 3 * HOUR).to_string();
    let summary = common::simulate(
        bootstrap,
        &prefix,
        &[
            "--instances",
            "24",
            "--duration",
            "1h",
            "--seed",
            "21",
            "--failure-fraction",
            "0.5",
            "--start",
            &later,
            "--partitions",
            "3",
        ],
    );
    let total = first + summary["records"].as_u64().unwrap();
    wait_committed(bootstrap, &group, &telemetry, total as i64, Duration::from_secs(600), &mut d);
    d.terminate();

    let all = alerts(bootstrap, &prefix);
    let ids: BTreeSet<&str> = all.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "no alert is written twice");
    let judged = |a: &&augur::codec::Alert| {
        a.app_type == "web" && matches!(a.kind, AlertKind::Signature | AlertKind::Anomaly) && a.anomaly_score.is_some()
    };
    let after: Vec<_> = all.iter().filter(judged).filter(|a| a.window_end_ms > start + 3 * HOUR + 600_000).collect();
    assert!(!after.is_empty(), "the last hour of web telemetry raised no judged alert");
    for a in &after {
        assert_eq!(a.model_version.as_deref(), Some(version), "{a:?}");
    }
    for a in all.iter().filter(judged).filter(|a| a.window_end_ms <= start + 3 * HOUR) {
        assert_eq!(a.model_version.as_deref(), Some("1"), "before the promotion, the shipped model: {a:?}");
    }
}
