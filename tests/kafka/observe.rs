//! What a platform team sees of `augur detect` over HTTP during a real-broker run:
//! counters that move with the work, a consumer-lag gauge that rises with a backlog and
//! comes down to 0 once it is processed, and `/readyz` turning ready only once the
//! windows of the assigned partitions are rebuilt.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common;
use crate::detect::{detector, prepare};

/// Between two looks at a running detector: a poll interval, not a wait for an event.
const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(300);

fn value(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name).unwrap_or_else(|| panic!("no {name} in the scrape: {m:?}"))
}

#[test]
fn detector_metrics_follow_the_work_and_readyz_waits_for_the_window_rebuild() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("observe");
    let group = common::unique("observe-group");
    let instances = 40;
    let (_, total) = prepare(bootstrap, &prefix, instances, "3h", 5);

    // A backlog of the whole run, worked off in small transactions: it takes the
    // detector several gauge refreshes (one a second).
    let addr = format!("127.0.0.1:{}", common::free_port());
    let a = detector(bootstrap, &prefix, &group, "a", &["--metrics-addr", &addr, "--batch-max", "100"]);
    let began = Instant::now();
    let (mut records, mut lags) = (Vec::new(), Vec::new());
    let last = loop {
        assert!(began.elapsed() < LIMIT, "the detector did not catch up: records {records:?}, lag {lags:?}");
        let m = common::scrape(&addr);
        if m.is_empty() {
            std::thread::sleep(POLL);
            continue;
        }
        let (done, lag) = (value(&m, "augur_detect_records_in_total"), value(&m, "augur_detect_consumer_lag"));
        if records.last() != Some(&done) {
            records.push(done);
        }
        if lags.last() != Some(&lag) {
            lags.push(lag);
        }
        if done == total as f64 && lag == 0.0 {
            break m;
        }
        std::thread::sleep(POLL);
    };
    assert!(records.windows(2).all(|w| w[0] < w[1]), "records_in went back: {records:?}");
    assert!(records.len() >= 3, "records_in did not move in steps while the backlog was worked off: {records:?}");
    assert!(lags.iter().any(|&l| l >= 1000.0), "the lag gauge never showed the backlog of {total} records: {lags:?}");
    assert!(value(&last, "augur_detect_transactions_total") >= (total / 100) as f64, "{last:?}");
    assert!(value(&last, "augur_detect_windows_total") > 0.0, "{last:?}");
    assert!(value(&last, "augur_detect_alerts_total") > 0.0, "a failing fleet raised no alert: {last:?}");
    assert!(
        value(&last, "augur_detect_dtw_computed_total") + value(&last, "augur_detect_dtw_pruned_total") > 0.0,
        "{last:?}"
    );
    assert!(value(&last, "augur_detect_rebalances_total") >= 1.0, "{last:?}");
    assert!(value(&last, "augur_detect_scoring_seconds_count") > 0.0, "the model scored no batch: {last:?}");
    assert!(value(&last, "augur_detect_batch_seconds_count") > 0.0, "{last:?}");
    assert_eq!(value(&last, "augur_detect_replayed_records_total"), 0.0, "nothing was committed before a");
    a.terminate();

    // A second detector takes the group over at the committed offsets: it has the
    // lookback to replay before it may call itself ready, and nothing new to process.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let b = detector(bootstrap, &prefix, &group, "b", &["--metrics-addr", &addr]);
    let began = Instant::now();
    let mut answers = Vec::new();
    let replayed = loop {
        assert!(began.elapsed() < LIMIT, "b never became ready: /readyz answered {answers:?}");
        let Some((status, _)) = common::http_get(&addr, "/readyz") else {
            std::thread::sleep(POLL);
            continue;
        };
        if answers.last() != Some(&status) {
            answers.push(status);
        }
        if status == 200 {
            // Read after the 200: had readiness risen before the rebuild, the replay
            // would not be counted yet.
            let m = common::scrape(&addr);
            break value(&m, "augur_detect_replayed_records_total");
        }
        assert_eq!(status, 503, "/readyz answered neither ready nor not ready");
        std::thread::sleep(POLL);
    };
    assert_eq!(answers, [503, 200], "/readyz must say not ready until the rebuild, then ready");
    assert!(
        replayed >= (instances * 60) as f64,
        "ready after replaying {replayed} records: not the lookback of {instances} instances"
    );
    // The windows in memory come from the replay alone: b processed no record.
    let began = Instant::now();
    loop {
        let m = common::scrape(&addr);
        assert_eq!(value(&m, "augur_detect_records_in_total"), 0.0, "b had nothing new to process");
        if value(&m, "augur_detect_window_instances") == instances as f64 {
            assert!(value(&m, "augur_detect_window_memory_bytes") > 0.0, "{m:?}");
            break;
        }
        assert!(began.elapsed() < LIMIT, "b's windows never showed the {instances} instances: {m:?}");
        std::thread::sleep(POLL);
    }
    b.terminate();
}
