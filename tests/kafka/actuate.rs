//! `augur actuate` against the real broker: every adjustment changed exactly once and
//! audited exactly once, across SIGKILLs at random points; bad records in the DLQ.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use augur::codec::{Action, Actuation, ActuationResult, Adjustment, Codec, DeadLetter};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::common;
use crate::detect::{wait_committed, Running};

/// A webhook receiver that honours `Idempotency-Key` the way the actuator expects of
/// one: the first POST of a key is the effect, later ones answer 200 and change nothing.
/// Every key's first POST fails with 503 when its number is a multiple of 7, to make
/// the actuator retry.
#[derive(Default)]
pub(crate) struct Receiver {
    state: Mutex<Received>,
    moved: Condvar,
}

#[derive(Default, Debug, Clone)]
pub(crate) struct Received {
    pub posts: u64,
    /// Key → effects made for it (the test asserts 1 each).
    pub effects: BTreeMap<String, u32>,
    pub failed_once: BTreeMap<String, bool>,
    pub bodies: BTreeMap<String, serde_json::Value>,
}

impl Receiver {
    /// Serves on loopback from a runtime of its own; returns the URL.
    pub(crate) fn start() -> (Arc<Self>, String) {
        let receiver = Arc::new(Self::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = receiver.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().route("/hook", axum::routing::post(post)).with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("receiver started");
        (receiver, format!("http://{addr}/hook"))
    }

    pub(crate) fn snapshot(&self) -> Received {
        self.state.lock().unwrap().clone()
    }

    /// Waits until at least `posts` POSTs arrived or `done` says to stop looking.
    fn wait_posts(&self, posts: u64, limit: Duration, mut done: impl FnMut() -> bool) {
        let began = Instant::now();
        let mut state = self.state.lock().unwrap();
        while state.posts < posts && !done() {
            assert!(began.elapsed() < limit, "{} of {posts} POSTs within {limit:?}", state.posts);
            state = self.moved.wait_timeout(state, Duration::from_millis(200)).unwrap().0;
        }
    }
}

async fn post(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    let Some(key) = headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut s = r.state.lock().unwrap();
    s.posts += 1;
    r.moved.notify_all();
    let number: u64 = key.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(1);
    if number % 7 == 0 && !s.failed_once.contains_key(&key) {
        s.failed_once.insert(key, true);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if !s.effects.contains_key(&key) {
        s.effects.insert(key.clone(), 1);
        s.bodies.insert(key, serde_json::from_str(&body).unwrap_or_default());
    }
    StatusCode::OK
}

pub(crate) fn adjustment(i: usize, start_ms: i64) -> Adjustment {
    Adjustment {
        id: format!("alert-{i}/resize-{i}"),
        alert_id: format!("alert-{i}"),
        instance_id: format!("web-checkout-{i:04}"),
        app_type: "web".into(),
        function: "checkout".into(),
        action: Action::Resize,
        cpu_factor: 1.10,
        memory_factor: 1.05,
        replicas_delta: 0,
        shed_fraction: 0.0,
        tier: 1,
        reason: "anomaly score 40 (tier 31-70)".into(),
        dry_run: false,
        // One instance each, a minute apart: no cooldown or rate limit stands in the way.
        event_time_ms: start_ms + i as i64 * 60_000,
    }
}

/// Produces the adjustments (keyed by instance, as the detector does) and `garbage`
/// records that are not adjustments.
pub(crate) fn produce(bootstrap: &str, topic: &str, adjustments: &[Adjustment], garbage: usize) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let codec = Codec::<Adjustment>::new();
    for a in adjustments {
        let payload = codec.encode(a).unwrap();
        producer
            .send(BaseRecord::to(topic).key(a.instance_id.as_bytes()).payload(&payload).timestamp(a.event_time_ms))
            .unwrap();
    }
    for g in 0..garbage {
        producer.send(BaseRecord::to(topic).key("junk").payload(format!("not avro {g}").as_bytes())).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Creates the topics the actuator reads and writes (3 partitions) before anything is produced.
pub(crate) fn create_topics(bootstrap: &str, prefix: &str) {
    let admin: rdkafka::admin::AdminClient<_> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let topics: Vec<String> = ["adjustments", "actuations", "dlq"].iter().map(|t| format!("{prefix}.{t}")).collect();
    let new: Vec<_> = topics
        .iter()
        .map(|t| rdkafka::admin::NewTopic::new(t, 3, rdkafka::admin::TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for r in rt.block_on(admin.create_topics(&new, &rdkafka::admin::AdminOptions::new())).unwrap() {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
}

pub(crate) fn actuator(bootstrap: &str, prefix: &str, group: &str, extra: &[&str]) -> Running {
    let child = common::augur()
        .args(["actuate", "--brokers", bootstrap, "--topic-prefix", prefix, "--group", group])
        .args(["--replica-id", "one", "--partitions", "3"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start augur actuate");
    Running(Some(child))
}

pub(crate) fn actuations(bootstrap: &str, prefix: &str) -> Vec<Actuation> {
    let codec = Codec::<Actuation>::new();
    common::read_all(bootstrap, &format!("{prefix}.actuations"))
        .iter()
        .map(|m| codec.decode(m.payload().expect("actuation payload")).expect("actuation decodes"))
        .collect()
}

/// A policy folder whose guardrails stay out of the way of one resize per instance a
/// minute apart, so that every adjustment is meant to take effect.
pub(crate) fn permissive_policy(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("web.toml"), PERMISSIVE_WEB).unwrap();
    dir.to_str().unwrap().to_owned()
}

const PERMISSIVE_WEB: &str = include_str!("actuate_permissive_web.toml");

#[test]
fn sigkilled_actuator_makes_every_change_once_and_audits_each_adjustment_once() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("act");
    let group = common::unique("g");
    create_topics(bootstrap, &prefix);
    let (receiver, url) = Receiver::start();
    let start = crate::detect::start_ms();
    let n = 120;
    let adjustments: Vec<Adjustment> = (1..=n).map(|i| adjustment(i, start)).collect();
    produce(bootstrap, &format!("{prefix}.adjustments"), &adjustments, 2);
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = permissive_policy(policy_dir.path());
    let flags = ["--backend", "webhook", "--webhook-url", &url, "--policy", &policy];
    let flags = [&flags[..], &["--max-actions-per-minute", "1000"]].concat();
    let topic = format!("{prefix}.adjustments");
    let total = (n + 2) as i64;

    let mut rng = rand::rng();
    let mut kills = 0;
    while kills < 10 {
        let a = actuator(bootstrap, &prefix, &group, &flags);
        let target = receiver.snapshot().posts + rng.random_range(1..=12);
        let finished = || crate::detect::committed(bootstrap, &group, &topic, 3).unwrap_or(0) >= total;
        receiver.wait_posts(target, Duration::from_secs(120), finished);
        a.kill(); // SIGKILL, right after the receiver saw a change
        kills += 1;
        if finished() {
            break;
        }
    }
    let mut a = actuator(bootstrap, &prefix, &group, &flags);
    wait_committed(bootstrap, &group, &topic, total, Duration::from_secs(300), &mut a);
    a.terminate();

    let audit = actuations(bootstrap, &prefix);
    let mut per_id: BTreeMap<&str, Vec<&Actuation>> = BTreeMap::new();
    for a in &audit {
        per_id.entry(a.adjustment_id.as_str()).or_default().push(a);
    }
    for adj in &adjustments {
        let records = per_id.get(adj.id.as_str()).map_or(0, Vec::len);
        assert_eq!(records, 1, "adjustment {} has {records} actuation records after {kills} kills", adj.id);
    }
    assert_eq!(audit.len(), n, "one record per adjustment and nothing else");
    for a in &audit {
        assert!(
            matches!(a.result, ActuationResult::Applied | ActuationResult::Duplicate),
            "{} ended {:?}: {}",
            a.adjustment_id,
            a.result,
            a.detail
        );
        assert_eq!(a.backend, "webhook");
    }
    let received = receiver.snapshot();
    let keys: Vec<&String> = received.effects.keys().collect();
    let mut ids: Vec<&String> = adjustments.iter().map(|a| &a.id).collect();
    ids.sort();
    assert_eq!(keys, ids, "every adjustment reached the receiver under its own key");
    assert!(received.effects.values().all(|&e| e == 1));
    assert!(received.posts >= n as u64 + n as u64 / 7, "the 503s were retried: {} POSTs", received.posts);
    let body = &received.bodies[&adjustments[0].id];
    assert_eq!(body["adjustment"]["instance_id"], adjustments[0].instance_id.as_str());
    assert!(body["plan"]["action"] == "RESIZE", "{body}");

    let dead: Vec<DeadLetter> = common::read_all(bootstrap, &format!("{prefix}.dlq"))
        .iter()
        .map(|m| Codec::<DeadLetter>::new().decode(m.payload().unwrap()).unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "the two garbage records, once each: {dead:?}");
    assert!(dead.iter().all(|d| d.stage == "actuate" && d.reason.contains("not an adjustment record")), "{dead:?}");
    eprintln!(
        "{kills} kills; {} POSTs for {n} adjustments; {} audited as duplicates",
        received.posts,
        audit.iter().filter(|a| a.result == ActuationResult::Duplicate).count()
    );
}

#[test]
fn a_malformed_policy_file_stops_the_actuator_before_it_reads_anything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.toml"), "app_type = \"web\"\nno_such_setting = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["actuate", "--backend", "log", "--policy", dir.path().to_str().unwrap()])
        .args(["--brokers", "127.0.0.1:1", "--replica-id", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("web.toml") && stderr.contains("no_such_setting"), "{stderr}");
    assert!(stderr.contains("web.toml:2:"), "the error names the line: {stderr}");
}

#[test]
fn critical_tier_notifications_reach_an_alertmanager_endpoint_within_their_rate_limit() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("notify");
    let group = common::unique("g");
    create_topics(bootstrap, &prefix);
    let (receiver, url) = Receiver::start();
    let start = crate::detect::start_ms();
    // Five instances reach the top tier within one minute.
    let notifications: Vec<Adjustment> = (1..=5)
        .map(|i| Adjustment {
            id: format!("alert-{i}/notify-{i}"),
            action: Action::Notify,
            cpu_factor: 1.0,
            memory_factor: 1.0,
            tier: 3,
            reason: "anomaly score 97 (tier 91-100)".into(),
            event_time_ms: start + i as i64 * 1_000,
            ..adjustment(i, start)
        })
        .collect();
    produce(bootstrap, &format!("{prefix}.adjustments"), &notifications, 0);
    let flags = ["--backend", "sim", "--notify-url", &url, "--max-notifications-per-minute", "2"];
    let mut a = actuator(bootstrap, &prefix, &group, &flags);
    wait_committed(bootstrap, &group, &format!("{prefix}.adjustments"), 5, Duration::from_secs(120), &mut a);
    a.terminate();

    let audit = actuations(bootstrap, &prefix);
    assert_eq!(audit.len(), 5);
    let applied: Vec<&Actuation> = audit.iter().filter(|a| a.result == ActuationResult::Applied).collect();
    assert_eq!(applied.len(), 2, "two notifications a minute: {audit:?}");
    assert!(applied.iter().all(|a| a.backend == "notify"));
    for refused in audit.iter().filter(|a| a.result != ActuationResult::Applied) {
        assert_eq!(refused.result, ActuationResult::Refused);
        assert!(refused.detail.starts_with("notification rate limit"), "{}", refused.detail);
    }
    let received = receiver.snapshot();
    let keys: Vec<&String> = received.effects.keys().collect();
    let mut sent: Vec<&String> = applied.iter().map(|a| &a.adjustment_id).collect();
    sent.sort();
    assert_eq!(keys, sent, "the receiver got exactly the applied notifications");
    for (key, body) in &received.bodies {
        // Alertmanager's POST /api/v2/alerts body: a list of alerts.
        let alert = &body[0];
        assert_eq!(alert["labels"]["alertname"], "AugurFailurePredicted", "{body}");
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["annotations"]["adjustment_id"], key.as_str());
        assert!(alert["startsAt"].as_str().is_some_and(|s| s.ends_with('Z')), "{body}");
    }

    // What `augur tail` shows of both topics.
    let tail = |topic: &str| -> Vec<serde_json::Value> {
        let out = common::run_ok(common::augur().args(["tail", topic, "--from-beginning", "--max", "5"]).args([
            "--brokers",
            bootstrap,
            "--topic-prefix",
            &prefix,
        ]));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let shown = tail("adjustments");
    assert_eq!(shown.len(), 5);
    for v in &shown {
        for field in ["id", "alert_id", "instance", "action", "cpu_factor", "memory_factor", "replicas_delta", "reason"]
        {
            assert!(v.get(field).is_some(), "tail adjustments lacks {field}: {v}");
        }
    }
    let shown = tail("actuations");
    assert_eq!(shown.len(), 5);
    for v in &shown {
        assert!(v["adjustment_id"].is_string() && v["detail"].is_string(), "{v}");
        assert!(["applied", "refused"].contains(&v["result"].as_str().unwrap_or("")), "{v}");
    }
}

#[test]
fn a_backend_that_refuses_us_stops_the_actuator_with_nothing_committed() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("fatal");
    let group = common::unique("g");
    create_topics(bootstrap, &prefix);
    let (receiver, url) = Receiver::start();
    // The receiver answers 400 without an Idempotency-Key; a URL that 404s is a wrong
    // URL: every adjustment would fail the same way.
    let wrong = url.replace("/hook", "/no-such-path");
    produce(bootstrap, &format!("{prefix}.adjustments"), &[adjustment(1, crate::detect::start_ms())], 0);
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = permissive_policy(policy_dir.path());
    let out = common::augur()
        .args(["actuate", "--brokers", bootstrap, "--topic-prefix", &prefix, "--group", &group])
        .args(["--replica-id", "one", "--backend", "webhook", "--webhook-url", &wrong, "--policy", &policy])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the actuator went on after a 404");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404") && stderr.contains("no-such-path"), "{stderr}");
    assert_eq!(crate::detect::committed(bootstrap, &group, &format!("{prefix}.adjustments"), 3).unwrap_or(0), 0);
    assert!(actuations(bootstrap, &prefix).is_empty(), "an audit record was committed");
    assert_eq!(receiver.snapshot().posts, 0);
}
