//! The Kubernetes backend against an in-memory API server: each action becomes the
//! right requests with the right values, its fence makes it happen once, an interrupted
//! attempt is completed with its recorded plan, and errors are sorted for the actuator.

mod common;

use augur::actuate::backend::{Backend, BackendError, Fence};
use augur::actuate::kubernetes::fence::ANNOTATION;
use augur::actuate::kubernetes::KubernetesBackend;
use augur::codec::{Action, Adjustment};
use augur::policy::plan::Plan;
use common::fake_kube::{FakeKube, Recorded};
use serde_json::{json, Value};

const NS: &str = "shop";

fn resources() -> Value {
    json!({ "limits": { "cpu": "1", "memory": "512Mi" }, "requests": { "cpu": "500m", "memory": "512Mi" } })
}

fn adjustment(id: &str, instance: &str, action: Action) -> Adjustment {
    Adjustment {
        id: id.into(),
        alert_id: format!("alert-{id}"),
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        action,
        cpu_factor: 1.25,
        memory_factor: 1.15,
        replicas_delta: 0,
        shed_fraction: 0.0,
        tier: 3,
        reason: "test".into(),
        dry_run: false,
        event_time_ms: 1_700_000_000_000,
    }
}

fn plan(action: Action) -> Plan {
    Plan::unchanged(action)
}

fn resize(cpu: u64, memory: u64) -> Plan {
    Plan { cpu_millis: Some(cpu), memory_bytes: Some(memory), ..plan(Action::Resize) }
}

async fn setup(replicas: u32) -> (FakeKube, KubernetesBackend, Vec<String>) {
    let fake = FakeKube::start().await;
    let pods = fake.deployment(NS, "web", replicas, resources());
    let backend = KubernetesBackend::with_url(&fake.url, NS).expect("backend for the fake API server");
    (fake, backend, pods)
}

fn pod_path(pod: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{pod}")
}

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/web";

/// (method, path) of each write.
fn writes(fake: &FakeKube) -> Vec<(String, String)> {
    fake.writes().into_iter().map(|r| (r.method, r.path)).collect()
}

fn w(method: &str, path: &str) -> (String, String) {
    (method.to_owned(), path.to_owned())
}

/// The fence entries an object carries, parsed from its annotation.
fn fence_of(object: &Value) -> Vec<Value> {
    let text = object["metadata"]["annotations"][ANNOTATION].as_str().unwrap_or("[]");
    serde_json::from_str(text).expect("fence annotation is JSON")
}

fn fence_in_body(request: &Recorded) -> Vec<Value> {
    fence_of(&request.body)
}

#[tokio::test]
async fn resize_in_place_goes_through_the_resize_subresource_once() {
    let (fake, backend, pods) = setup(2).await;
    let instance = format!("{NS}/{}", pods[0]);
    let adj = adjustment("adj-1", &instance, Action::Resize);
    let observed = backend.observe(&adj).await.expect("observe");
    assert_eq!((observed.resources.cpu_millis, observed.resources.memory_bytes), (Some(1000), Some(512 << 20)));
    assert_eq!((observed.resources.replicas, observed.fence), (Some(2), Fence::Absent));

    let detail = backend.apply(&adj, &resize(1250, 589 << 20)).await.expect("apply");
    assert!(detail.contains("cpu 1000m→1250m") && detail.contains("memory 512Mi→589Mi"), "{detail}");
    let path = pod_path(&pods[0]);
    let resize_path = format!("{path}/resize");
    assert_eq!(writes(&fake), [w("PATCH", &path), w("PATCH", &resize_path), w("PATCH", &path)]);
    let sent = fake.writes();
    assert_eq!(fence_in_body(&sent[0])[0]["state"], "pending");
    assert!(sent[0].body["metadata"]["resourceVersion"].is_string(), "intent without precondition");
    assert_eq!(sent[1].content_type, "application/strategic-merge-patch+json");
    assert_eq!(
        sent[1].body["spec"]["containers"],
        json!([{ "name": "app", "resources": { "limits": { "cpu": "1250m", "memory": "589Mi" },
                                               "requests": { "cpu": "625m", "memory": "589Mi" } } }])
    );
    let pod = fake.get("pods", NS, &pods[0]).expect("pod");
    assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"], json!({ "cpu": "1250m", "memory": "589Mi" }));
    assert_eq!(pod["spec"]["containers"][0]["image"], "registry.local/app:1", "resize lost container fields");
    assert_eq!(fence_of(&pod)[0]["state"], "done");
    let other = fake.get("pods", NS, &pods[1]).expect("other pod");
    assert_eq!(other["spec"]["containers"][0]["resources"], resources());

    let again = backend.observe(&adj).await.expect("observe again");
    assert_eq!(again.fence, Fence::Done);
    assert_eq!(again.resources.cpu_millis, Some(1250));
    backend.apply(&adj, &resize(1250, 589 << 20)).await.expect("second apply");
    assert_eq!(fake.writes().len(), 3, "a second apply changed something");
}

#[tokio::test]
async fn without_in_place_resize_the_deployment_template_changes_with_its_fence() {
    let (fake, backend, pods) = setup(2).await;
    fake.without_resize();
    let adj = adjustment("adj-2", &pods[1], Action::Resize);
    let detail = backend.apply(&adj, &resize(1500, 1 << 30)).await.expect("apply");
    assert!(detail.contains("Deployment shop/web template"), "{detail}");
    let template_write = fake.writes().into_iter().find(|r| r.path == DEPLOYMENT).expect("the Deployment was patched");
    assert!(template_write.body["metadata"]["resourceVersion"].is_string(), "template patch without precondition");
    assert_eq!(fence_in_body(&template_write)[0]["state"], "done", "fence not in the template's PATCH");
    let deployment = fake.get("deployments", NS, "web").expect("deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"], json!({ "cpu": "1500m", "memory": "1Gi" }));
    assert_eq!(container["resources"]["requests"], json!({ "cpu": "750m", "memory": "1Gi" }));
    assert_eq!(container["image"], "registry.local/app:1");

    // A fresh backend (restarted actuator) sees the adjustment as done and changes nothing.
    let restarted = KubernetesBackend::with_url(&fake.url, NS).expect("backend");
    assert_eq!(restarted.observe(&adj).await.expect("observe").fence, Fence::Done);
    let before = fake.writes().len();
    restarted.apply(&adj, &resize(1500, 1 << 30)).await.expect("second apply");
    assert_eq!(fake.writes().len(), before);
}

/// Writes an intent as an attempt that died after it would have.
fn interrupt(fake: &FakeKube, resource: &str, name: &str, id: &str, recorded: &Plan) {
    let mut object = fake.get(resource, NS, name).expect("object to interrupt");
    let entry = json!([{ "id": id, "state": "pending", "plan": recorded }]);
    object["metadata"]["annotations"] = json!({ ANNOTATION: entry.to_string() });
    fake.put(resource, NS, name, object);
}

#[tokio::test]
async fn an_interrupted_resize_completes_its_recorded_plan() {
    let (fake, backend, pods) = setup(1).await;
    let adj = adjustment("adj-3", &pods[0], Action::Resize);
    let recorded = resize(1500, 768 << 20);
    interrupt(&fake, "pods", &pods[0], "adj-3", &recorded);
    assert_eq!(backend.observe(&adj).await.expect("observe").fence, Fence::Pending(recorded.clone()));

    // Handed a newly decided plan, the backend still converges on the recorded one.
    backend.apply(&adj, &resize(4000, 4 << 30)).await.expect("apply");
    let path = pod_path(&pods[0]);
    assert_eq!(writes(&fake), [w("PATCH", &format!("{path}/resize")), w("PATCH", &path)]);
    let pod = fake.get("pods", NS, &pods[0]).expect("pod");
    assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"], json!({ "cpu": "1500m", "memory": "768Mi" }));
    assert_eq!(backend.observe(&adj).await.expect("observe").fence, Fence::Done);
}

#[tokio::test]
async fn an_interrupted_resize_whose_change_was_made_is_only_marked_done() {
    let (fake, backend, pods) = setup(1).await;
    let adj = adjustment("adj-4", &pods[0], Action::Resize);
    let recorded = resize(1000, 512 << 20); // what the pod already has
    interrupt(&fake, "pods", &pods[0], "adj-4", &recorded);
    backend.apply(&adj, &recorded).await.expect("apply");
    assert_eq!(writes(&fake), [w("PATCH", &pod_path(&pods[0]))]);
    assert_eq!(backend.observe(&adj).await.expect("observe").fence, Fence::Done);
}

#[tokio::test]
async fn a_stale_resource_version_is_transient_and_the_retry_applies_once() {
    let (fake, backend, pods) = setup(1).await;
    let adj = adjustment("adj-5", &pods[0], Action::Shed);
    let shed = Plan { shed_fraction: 0.5, ..plan(Action::Shed) };
    fake.race_next_write("pods", NS, &pods[0]);
    match backend.apply(&adj, &shed).await {
        Err(BackendError::Transient(message)) => assert!(message.contains("409"), "{message}"),
        other => panic!("a conflicting write gave {other:?}"),
    }
    assert_eq!(fake.get("pods", NS, &pods[0]).expect("pod")["metadata"]["labels"]["augur.io/serving"], "true");
    assert_eq!(backend.observe(&adj).await.expect("observe").fence, Fence::Absent);
    backend.apply(&adj, &shed).await.expect("retry");
    backend.apply(&adj, &shed).await.expect("duplicate");
    let succeeded = fake.requests().into_iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(succeeded, 2, "one refused write, one effect");
}

#[tokio::test]
async fn shedding_relabels_the_pod_with_its_fence_in_one_patch() {
    let (fake, backend, pods) = setup(2).await;
    let adj = adjustment("adj-6", &pods[0], Action::Shed);
    let detail = backend.apply(&adj, &Plan { shed_fraction: 0.3, ..plan(Action::Shed) }).await.expect("shed");
    assert!(detail.contains("out of its Services"), "{detail}");
    let sent = fake.writes();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["metadata"]["labels"]["augur.io/serving"], "false");
    assert_eq!(fence_in_body(&sent[0])[0]["id"], "adj-6");
    assert!(sent[0].body["metadata"]["resourceVersion"].is_string());
    let pod = fake.get("pods", NS, &pods[0]).expect("pod");
    assert_eq!(pod["metadata"]["labels"]["augur.io/serving"], "false");
    assert_eq!(pod["metadata"]["labels"]["app"], "web", "other labels kept");

    let restore = adjustment("adj-7", &pods[0], Action::Shed);
    backend.apply(&restore, &plan(Action::Shed)).await.expect("restore");
    let pod = fake.get("pods", NS, &pods[0]).expect("pod");
    assert_eq!(pod["metadata"]["labels"]["augur.io/serving"], "true");
    let ids: Vec<Value> = fence_of(&pod).iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, [json!("adj-6"), json!("adj-7")]);
}

#[tokio::test]
async fn scale_out_sets_the_deployments_replicas_once() {
    let (fake, backend, pods) = setup(2).await;
    let adj = adjustment("adj-8", &pods[0], Action::ScaleOut);
    let scale = Plan { replicas: Some(5), ..plan(Action::ScaleOut) };
    let detail = backend.apply(&adj, &scale).await.expect("scale");
    assert!(detail.contains("replicas 2→5"), "{detail}");
    let scale_path = format!("{DEPLOYMENT}/scale");
    assert_eq!(writes(&fake), [w("PATCH", DEPLOYMENT), w("PATCH", &scale_path), w("PATCH", DEPLOYMENT)]);
    assert_eq!(fake.writes()[1].body, json!({ "spec": { "replicas": 5 } }));
    assert_eq!(fake.get("deployments", NS, "web").expect("deployment")["spec"]["replicas"], 5);
    let observed = backend.observe(&adj).await.expect("observe");
    assert_eq!((observed.fence, observed.resources.replicas), (Fence::Done, Some(5)));
    backend.apply(&adj, &scale).await.expect("duplicate");
    assert_eq!(fake.writes().len(), 3);
}

#[tokio::test]
async fn migrate_cordons_and_evicts_and_its_fence_outlives_the_pod() {
    let (fake, backend, pods) = setup(2).await;
    fake.pdb(NS, "web-pdb", json!({ "app": "web" }), 1);
    let adj = adjustment("adj-9", &format!("{NS}/{}", pods[0]), Action::Migrate);
    let detail = backend.apply(&adj, &plan(Action::Migrate)).await.expect("migrate");
    assert!(detail.contains("node-0 cordoned") && detail.contains("evicted"), "{detail}");
    let eviction = format!("{}/eviction", pod_path(&pods[0]));
    assert_eq!(
        writes(&fake),
        [w("PATCH", DEPLOYMENT), w("PATCH", "/api/v1/nodes/node-0"), w("POST", &eviction), w("PATCH", DEPLOYMENT)]
    );
    assert_eq!(fake.get("nodes", "", "node-0").expect("node")["spec"]["unschedulable"], true);
    assert!(fake.get("pods", NS, &pods[0]).is_none(), "pod not evicted");
    assert_eq!(backend.observe(&adj).await.expect("observe after eviction").fence, Fence::Done);
    backend.apply(&adj, &plan(Action::Migrate)).await.expect("duplicate");
    assert_eq!(fake.writes().len(), 4);
}

#[tokio::test]
async fn an_interrupted_scale_out_completes_its_recorded_replicas() {
    let (fake, backend, pods) = setup(2).await;
    let adj = adjustment("adj-16", &pods[0], Action::ScaleOut);
    let recorded = Plan { replicas: Some(4), ..plan(Action::ScaleOut) };
    interrupt(&fake, "deployments", "web", "adj-16", &recorded);
    assert_eq!(backend.observe(&adj).await.expect("observe").fence, Fence::Pending(recorded));
    backend.apply(&adj, &Plan { replicas: Some(9), ..plan(Action::ScaleOut) }).await.expect("apply");
    assert_eq!(fake.get("deployments", NS, "web").expect("deployment")["spec"]["replicas"], 4);
    let scale_path = format!("{DEPLOYMENT}/scale");
    assert_eq!(writes(&fake), [w("PATCH", &scale_path), w("PATCH", DEPLOYMENT)]);
}

#[tokio::test]
async fn a_migration_interrupted_after_the_eviction_cordons_the_recorded_node() {
    let (fake, backend, pods) = setup(2).await;
    let adj = adjustment("adj-17", &pods[1], Action::Migrate);
    let mut deployment = fake.get("deployments", NS, "web").expect("deployment");
    let entry = json!([{ "id": "adj-17", "state": "pending", "plan": plan(Action::Migrate), "node": "node-1" }]);
    deployment["metadata"]["annotations"] = json!({ ANNOTATION: entry.to_string() });
    fake.put("deployments", NS, "web", deployment);
    fake.delete("pods", NS, &pods[1]); // evicted before the attempt died
    assert!(matches!(backend.observe(&adj).await.expect("observe").fence, Fence::Pending(_)));
    let detail = backend.apply(&adj, &plan(Action::Migrate)).await.expect("apply");
    assert!(detail.contains("node-1 cordoned") && detail.contains("already gone"), "{detail}");
    assert_eq!(writes(&fake), [w("PATCH", "/api/v1/nodes/node-1"), w("PATCH", DEPLOYMENT)]);
    assert_eq!(backend.observe(&adj).await.expect("observe").fence, Fence::Done);
}

#[tokio::test]
async fn the_rbac_list_is_exactly_what_the_backend_uses() {
    let (fake, backend, pods) = setup(4).await;
    fake.bare_pod(NS, "solo", "node-0", resources());
    let cases = [
        (adjustment("r1", &pods[0], Action::Resize), resize(1100, 600 << 20)),
        (adjustment("r2", &pods[1], Action::ScaleOut), Plan { replicas: Some(5), ..plan(Action::ScaleOut) }),
        (adjustment("r3", &pods[2], Action::Migrate), plan(Action::Migrate)),
        (adjustment("r4", &pods[3], Action::Shed), Plan { shed_fraction: 1.0, ..plan(Action::Shed) }),
    ];
    for (adj, plan) in &cases {
        backend.observe(adj).await.expect("observe");
        backend.apply(adj, plan).await.expect("apply");
    }
    fake.without_resize();
    let fallback = adjustment("r5", &pods[0], Action::Resize);
    backend.apply(&fallback, &resize(1200, 600 << 20)).await.expect("template resize");
    let used = fake.permissions_used();
    let granted: std::collections::BTreeSet<(String, String, String)> = augur::actuate::kubernetes::RBAC
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs.iter().map(|v| ((*group).to_owned(), (*resource).to_owned(), (*v).to_owned()))
        })
        .collect();
    assert_eq!(used, granted);
}

#[tokio::test]
async fn a_disruption_budget_blocks_eviction_as_transient() {
    let (fake, backend, pods) = setup(2).await;
    fake.pdb(NS, "web-pdb", json!({ "app": "web" }), 2);
    let adj = adjustment("adj-10", &pods[1], Action::Migrate);
    match backend.apply(&adj, &plan(Action::Migrate)).await {
        Err(BackendError::Transient(message)) => assert!(message.contains("PodDisruptionBudget"), "{message}"),
        other => panic!("a blocked eviction gave {other:?}"),
    }
    assert!(fake.get("pods", NS, &pods[1]).is_some());
    assert!(matches!(backend.observe(&adj).await.expect("observe").fence, Fence::Pending(_)));
}

#[tokio::test]
async fn a_bare_pod_is_not_migrated() {
    let (fake, backend, _) = setup(1).await;
    fake.bare_pod(NS, "batch-1", "node-9", resources());
    let adj = adjustment("adj-11", "batch-1", Action::Migrate);
    assert!(matches!(backend.apply(&adj, &plan(Action::Migrate)).await, Err(BackendError::Refused(_))));
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn a_denied_verb_is_fatal_and_names_it() {
    let (fake, backend, pods) = setup(1).await;
    fake.forbid("patch", "deployments/scale");
    let adj = adjustment("adj-12", &pods[0], Action::ScaleOut);
    match backend.apply(&adj, &Plan { replicas: Some(3), ..plan(Action::ScaleOut) }).await {
        Err(BackendError::Fatal(message)) => assert!(message.contains("patch deployments/scale shop/web"), "{message}"),
        other => panic!("403 gave {other:?}"),
    }
}

#[tokio::test]
async fn gone_pods_and_foreign_actions_are_refused() {
    let (_fake, backend, _) = setup(1).await;
    let gone = adjustment("adj-13", "web-5d8f7c9b4-zzzzz", Action::Resize);
    assert!(matches!(backend.observe(&gone).await, Err(BackendError::Refused(m)) if m.contains("not found")));
    let notify = adjustment("adj-14", "web-5d8f7c9b4-p0000", Action::Notify);
    assert!(matches!(backend.apply(&notify, &plan(Action::Notify)).await, Err(BackendError::Refused(_))));
}

#[tokio::test]
async fn a_server_error_is_transient() {
    let (fake, backend, pods) = setup(1).await;
    fake.fail_next(axum::http::StatusCode::SERVICE_UNAVAILABLE);
    let adj = adjustment("adj-18", &pods[0], Action::Resize);
    assert!(matches!(backend.observe(&adj).await, Err(BackendError::Transient(m)) if m.contains("503")));
    assert_eq!(backend.observe(&adj).await.expect("observe after the outage").fence, Fence::Absent);
}

#[tokio::test]
async fn a_hand_edited_fence_is_refused_with_its_name() {
    let (fake, backend, pods) = setup(1).await;
    let mut pod = fake.get("pods", NS, &pods[0]).expect("pod");
    pod["metadata"]["annotations"] = json!({ ANNOTATION: "not json" });
    fake.put("pods", NS, &pods[0], pod);
    let adj = adjustment("adj-19", &pods[0], Action::Shed);
    assert!(matches!(backend.observe(&adj).await, Err(BackendError::Refused(m)) if m.contains(ANNOTATION)));
    assert!(matches!(backend.apply(&adj, &plan(Action::Shed)).await, Err(BackendError::Refused(_))));
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn the_fence_keeps_the_last_32_ids() {
    let (fake, backend, pods) = setup(1).await;
    for i in 0..40 {
        let adj = adjustment(&format!("shed-{i}"), &pods[0], Action::Shed);
        backend.apply(&adj, &Plan { shed_fraction: f64::from(i % 2), ..plan(Action::Shed) }).await.expect("shed");
    }
    let entries = fence_of(&fake.get("pods", NS, &pods[0]).expect("pod"));
    assert_eq!(entries.len(), 32);
    assert_eq!((entries[0]["id"].as_str(), entries[31]["id"].as_str()), (Some("shed-8"), Some("shed-39")));
    let forgotten = adjustment("shed-7", &pods[0], Action::Shed);
    assert_eq!(backend.observe(&forgotten).await.expect("observe").fence, Fence::Absent);
}

#[tokio::test]
async fn an_unreachable_api_server_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let backend = KubernetesBackend::with_url(&url, NS).expect("backend");
    let adj = adjustment("adj-15", "web-1", Action::Resize);
    assert!(matches!(backend.observe(&adj).await, Err(BackendError::Transient(_))));
}
