//! The whole controller against the real broker and an in-memory Kubernetes API server:
//! a simulated fleet's failures become the right PATCH / scale / eviction requests
//! within the guardrails, and SIGKILLs at random points never make a change twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use augur::actuate::kubernetes::quantity;
use augur::codec::{Action, Actuation, ActuationResult, Adjustment};
use rand::Rng;
use serde_json::json;

use crate::actuate::{actuations, actuator, adjustment, create_topics, permissive_policy, produce};
use crate::common::fake_kube::FakeKube;
use crate::common::{self, fake_kube::Recorded};
use crate::detect::{detector, prepare, wait_committed};

/// A runtime that keeps the fake API server serving for the whole test.
fn fake_kube() -> (tokio::runtime::Runtime, FakeKube) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let kube = rt.block_on(FakeKube::start());
    (rt, kube)
}

/// A Deployment `<app>-<function>` per workload, with one pod per simulated instance
/// named as the simulator names it, sized at the instance's nominal limits.
fn seed_fleet(kube: &FakeKube, instances: &BTreeSet<String>) {
    let mut workloads: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for i in instances {
        let workload = i.rsplit_once('-').map_or(i.as_str(), |(w, _)| w);
        workloads.entry(workload.to_owned()).or_default().push(i);
    }
    for (workload, pods) in workloads {
        let (cpu, memory) = augur::simulate::nominal_limits(pods[0]).expect("a simulated instance");
        let resources = json!({
            "requests": { "cpu": quantity::format_cpu(cpu / 2), "memory": quantity::format_memory(memory / 2) },
            "limits": { "cpu": quantity::format_cpu(cpu), "memory": quantity::format_memory(memory) },
        });
        kube.deployment_with_pods("default", &workload, &pods, resources);
    }
}

fn limits(kube: &FakeKube, pod: &str) -> (u64, u64) {
    let p = kube.get("pods", "default", pod).unwrap_or_else(|| panic!("pod {pod} is gone"));
    let l = &p["spec"]["containers"][0]["resources"]["limits"];
    (
        quantity::cpu_millis(l["cpu"].as_str().unwrap()).unwrap(),
        quantity::memory_bytes(l["memory"].as_str().unwrap()).unwrap(),
    )
}

fn writes_to(requests: &[Recorded], suffix: &str) -> Vec<Recorded> {
    requests.iter().filter(|r| r.method != "GET" && r.path.ends_with(suffix)).cloned().collect()
}

#[test]
fn a_failing_fleet_becomes_the_right_kubernetes_requests_within_the_guardrails() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("kube");
    let (_, records) = prepare(bootstrap, &prefix, 30, "4h", 11);
    let group = common::unique("g");
    let mut d = detector(bootstrap, &prefix, &group, "r", &[]);
    wait_committed(bootstrap, &group, &format!("{prefix}.telemetry"), records as i64, Duration::from_secs(600), &mut d);
    d.terminate();
    let adjustments = crate::detect::adjustments(bootstrap, &prefix);
    assert!(adjustments.iter().any(|a| a.action == Action::Resize), "no resize decided: {adjustments:?}");

    let (_rt, kube) = fake_kube();
    let instances: BTreeSet<String> = adjustments.iter().map(|a| a.instance_id.clone()).collect();
    seed_fleet(&kube, &instances);
    let before: BTreeMap<String, (u64, u64)> = instances.iter().map(|i| (i.clone(), limits(&kube, i))).collect();
    let group = common::unique("a");
    let flags = ["--backend", "kubernetes", "--kube-url", &kube.url, "--max-actions-per-minute", "6"];
    let mut a = actuator(bootstrap, &prefix, &group, &flags);
    let topic = format!("{prefix}.adjustments");
    wait_committed(bootstrap, &group, &topic, adjustments.len() as i64, Duration::from_secs(300), &mut a);
    a.terminate();

    let audit = actuations(bootstrap, &prefix);
    assert_eq!(audit.len(), adjustments.len(), "one audit record per adjustment");
    let requests = kube.requests();
    let by_id: BTreeMap<&str, &Adjustment> = adjustments.iter().map(|a| (a.id.as_str(), a)).collect();
    let policies = augur::policy::Policies::shipped().expect("shipped policies");
    let mut applied_times: Vec<i64> = Vec::new();
    let mut applied_on: BTreeMap<&str, Vec<(i64, &str, i32)>> = BTreeMap::new();
    let mut seen = BTreeMap::new();
    let mut current = before.clone();
    let mut ordered: Vec<&Actuation> = audit.iter().collect();
    ordered.sort_by_key(|a| a.event_time_ms);
    for act in ordered {
        let adj = by_id[act.adjustment_id.as_str()];
        *seen.entry(format!("{:?}/{:?}", adj.action, act.result)).or_insert(0) += 1;
        let guard = &policies.get(&adj.app_type).expect("a policy per simulated app type").guardrails;
        match act.result {
            ActuationResult::Applied => {
                applied_times.push(act.event_time_ms);
                // Actions decided from one alert, or from one window of the instance (a
                // resize and a scale-out, a signature match and its anomaly tier), go
                // together; others are a cooldown apart unless the later escalates: a
                // strictly higher tier than the earlier one.
                let earlier = applied_on.entry(act.instance_id.as_str()).or_default();
                for &(prev, prev_alert, prev_tier) in earlier.iter() {
                    let gap_s = (act.event_time_ms - prev) / 1000;
                    assert!(
                        prev_alert == adj.alert_id
                            || prev == act.event_time_ms
                            || gap_s >= guard.instance_cooldown_s as i64
                            || adj.tier > prev_tier,
                        "{} acted on twice {gap_s} s apart (tiers {prev_tier} then {}), inside the {} s cooldown",
                        act.instance_id,
                        adj.tier,
                        guard.instance_cooldown_s
                    );
                }
                earlier.push((act.event_time_ms, adj.alert_id.as_str(), adj.tier));
                match adj.action {
                    Action::Resize => {
                        let path = format!("/pods/{}/resize", act.instance_id);
                        assert!(!writes_to(&requests, &path).is_empty(), "no PATCH {path} for {}", act.adjustment_id);
                        assert!(
                            act.cpu_millis.is_some() || act.memory_bytes.is_some(),
                            "a resize that sets nothing: {act:?}"
                        );
                        // What the pod had before this resize: its seed, or the last resize.
                        let (cpu0, memory0) = current[&act.instance_id];
                        if let Some(cpu) = act.cpu_millis.map(|c| c as u64) {
                            assert!(
                                cpu <= guard.cpu_cap.0 && cpu >= guard.cpu_floor.0,
                                "cpu {cpu} outside the guardrails"
                            );
                            assert!(
                                cpu as f64 <= cpu0 as f64 * adj.cpu_factor.max(1.0) * 1.001,
                                "cpu {cpu} beyond {cpu0} × {}",
                                adj.cpu_factor
                            );
                        }
                        if let Some(memory) = act.memory_bytes.map(|m| m as u64) {
                            assert!(memory <= guard.memory_cap.0, "memory {memory} above the cap");
                            assert!(
                                memory as f64 <= memory0 as f64 * adj.memory_factor.max(1.0) * 1.001,
                                "memory {memory} beyond {memory0} × {}",
                                adj.memory_factor
                            );
                        }
                        let now = current.get_mut(&act.instance_id).expect("a seeded pod");
                        *now =
                            (act.cpu_millis.map_or(now.0, |c| c as u64), act.memory_bytes.map_or(now.1, |m| m as u64));
                    }
                    Action::ScaleOut => {
                        let scale: Vec<Recorded> = writes_to(&requests, "/scale");
                        assert!(!scale.is_empty(), "no scale request for {}", act.adjustment_id);
                        let replicas = act.replicas.expect("a scale-out sets replicas") as u32;
                        assert!(replicas <= guard.max_replicas, "replicas {replicas} beyond the cap");
                    }
                    Action::Migrate => {
                        let path = format!("/pods/{}/eviction", act.instance_id);
                        assert!(!writes_to(&requests, &path).is_empty(), "no eviction {path}");
                    }
                    Action::Shed => {
                        // The pod was labelled out of its Services; a later migration may
                        // have evicted it since, so the request is checked, not the pod.
                        let path = format!("/pods/{}", act.instance_id);
                        let labelled = writes_to(&requests, &path)
                            .iter()
                            .any(|r| r.body["metadata"]["labels"]["augur.io/serving"] == "false");
                        assert!(labelled, "no PATCH {path} labelling it out of service for {}", act.adjustment_id);
                    }
                    Action::Notify | Action::None => panic!("{:?} applied to the cluster", adj.action),
                }
            }
            ActuationResult::Refused => assert!(!act.detail.is_empty(), "a refusal without its reason"),
            ActuationResult::Duplicate | ActuationResult::DryRun => {}
            ActuationResult::Failed => panic!("{} failed: {}", act.adjustment_id, act.detail),
        }
    }
    // In every rolling minute of event time, at most the fleet-wide limit.
    for (i, &t) in applied_times.iter().enumerate() {
        let n = applied_times[i..].iter().take_while(|&&u| u < t + 60_000).count();
        assert!(n <= 6, "{n} actions within a minute of {t}, above the fleet-wide limit of 6");
    }
    for i in &instances {
        if let Some(pod) = kube.get("pods", "default", i) {
            let l = &pod["spec"]["containers"][0]["resources"]["limits"];
            let cpu = quantity::cpu_millis(l["cpu"].as_str().unwrap()).unwrap();
            let cap = policies.get(i.split('-').next().unwrap()).unwrap().guardrails.cpu_cap.0;
            assert!(cpu <= cap, "{i} has {cpu}m, above its cap {cap}m");
        }
    }
    eprintln!("{} adjustments → {seen:?}; {} requests to the API server", adjustments.len(), requests.len());
}

#[test]
fn sigkilled_actuator_resizes_every_pod_exactly_once() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("kkill");
    let group = common::unique("g");
    create_topics(bootstrap, &prefix);
    let start = crate::detect::start_ms();
    let n = 60;
    let adjustments: Vec<Adjustment> = (1..=n).map(|i| adjustment(i, start)).collect();
    let (_rt, kube) = fake_kube();
    let instances: BTreeSet<String> = adjustments.iter().map(|a| a.instance_id.clone()).collect();
    seed_fleet(&kube, &instances);
    let before: BTreeMap<String, (u64, u64)> = instances.iter().map(|i| (i.clone(), limits(&kube, i))).collect();
    produce(bootstrap, &format!("{prefix}.adjustments"), &adjustments, 0);
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = permissive_policy(policy_dir.path());
    let flags =
        ["--backend", "kubernetes", "--kube-url", &kube.url, "--policy", &policy, "--max-actions-per-minute", "1000"];
    let topic = format!("{prefix}.adjustments");

    let mut rng = rand::rng();
    let mut kills = 0;
    let finished = || crate::detect::committed(bootstrap, &group, &topic, 3).unwrap_or(0) >= n as i64;
    while kills < 12 && !finished() {
        let mut a = actuator(bootstrap, &prefix, &group, &flags);
        // Each resize is three writes (intent, change, done): kill at any of them.
        let target = kube.writes().len() + rng.random_range(1..=9);
        let began = Instant::now();
        while kube.writes().len() < target && !finished() {
            assert!(began.elapsed() < Duration::from_secs(120), "no progress at the API server");
            if let Some(status) = a.child().try_wait().unwrap() {
                panic!("the actuator exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(5)); // polling a condition, with a deadline
        }
        a.kill();
        kills += 1;
    }
    let mut a = actuator(bootstrap, &prefix, &group, &flags);
    wait_committed(bootstrap, &group, &topic, n as i64, Duration::from_secs(300), &mut a);
    a.terminate();

    let audit = actuations(bootstrap, &prefix);
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &audit {
        *per_id.entry(a.adjustment_id.as_str()).or_default() += 1;
        assert!(matches!(a.result, ActuationResult::Applied | ActuationResult::Duplicate), "{a:?}");
    }
    for adj in &adjustments {
        assert_eq!(per_id.get(adj.id.as_str()), Some(&1), "{} audited {:?} times", adj.id, per_id.get(adj.id.as_str()));
    }
    let requests = kube.requests();
    for adj in &adjustments {
        let pod = &adj.instance_id;
        let resizes = writes_to(&requests, &format!("/pods/{pod}/resize")).len();
        assert_eq!(resizes, 1, "{pod} resized {resizes} times after {kills} kills");
        let (cpu0, _) = before[pod];
        let (cpu, _) = limits(&kube, pod);
        let expected = (cpu0 as f64 * adj.cpu_factor).round() as u64;
        assert!(cpu.abs_diff(expected) <= 1, "{pod}: {cpu}m, expected {expected}m (×1.10 once)");
    }
    eprintln!(
        "{kills} kills; {} API writes; {} audited as duplicates",
        kube.writes().len(),
        audit.iter().filter(|a| a.result == ActuationResult::Duplicate).count()
    );
}
