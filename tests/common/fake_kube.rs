//! An in-memory Kubernetes API server for the Kubernetes backend's tests.
//!
//! In: the HTTP requests kube-rs sends (GET, PATCH with merge, strategic-merge or JSON
//! patch content types, POST of evictions) for pods, replicasets, deployments (and their
//! `scale`), nodes, `pods/eviction`, `pods/resize` and poddisruptionbudgets. Out: JSON
//! objects and `Status` errors as the real API server shapes them, and a log of every
//! request for assertions. Guarantees: each write bumps a cluster-wide resourceVersion;
//! a patch carrying `metadata.resourceVersion` that is not the object's current one gets
//! 409; an eviction that would leave a PodDisruptionBudget below `minAvailable` gets 429.
//! Strategic merge patches merge lists of named objects (containers) by name, the only
//! part of the strategy the backend relies on; otherwise they are merge patches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// (resource, namespace — empty for nodes —, name)
type Key = (String, String, String);

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct World {
    objects: BTreeMap<Key, Value>,
    version: u64,
    requests: Vec<Recorded>,
    resize_unsupported: bool,
    forbidden: Vec<(String, String)>,
    race: Option<Key>,
    fail_next: Option<StatusCode>,
}

/// The running server; stops with the test's runtime.
#[derive(Clone)]
pub struct FakeKube {
    pub url: String,
    world: Arc<Mutex<World>>,
}

fn key(resource: &str, namespace: &str, name: &str) -> Key {
    (resource.to_owned(), namespace.to_owned(), name.to_owned())
}

impl FakeKube {
    pub async fn start() -> Self {
        let world = Arc::new(Mutex::new(World::default()));
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0 for the fake API server");
        let address = listener.local_addr().expect("local address of the fake API server");
        let served = Arc::clone(&world);
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let world = Arc::clone(&served);
            async move { handle(&world, method, uri, headers, body) }
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                panic!("fake API server stopped: {e}");
            }
        });
        Self { url: format!("http://{address}"), world }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores an object as given, with a fresh resourceVersion (a write by someone else).
    pub fn put(&self, resource: &str, namespace: &str, name: &str, mut object: Value) {
        let mut world = self.world();
        world.version += 1;
        object["metadata"]["resourceVersion"] = json!(world.version.to_string());
        world.objects.insert(key(resource, namespace, name), object);
    }

    /// Removes an object, as its controller or an operator would.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        self.world().objects.remove(&key(resource, namespace, name));
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.world().objects.get(&key(resource, namespace, name)).cloned()
    }

    /// A Deployment `name` with its ReplicaSet and `replicas` pods on nodes `node-<i>`,
    /// each with one container `app` of the given `resources`; returns the pod names.
    pub fn deployment(&self, namespace: &str, name: &str, replicas: u32, resources: Value) -> Vec<String> {
        let pods: Vec<String> = (0..replicas).map(|i| format!("{name}-5d8f7c9b4-p{i:04}")).collect();
        self.deployment_with_pods(namespace, name, &pods, resources);
        pods
    }

    /// A Deployment `name` with its ReplicaSet and one pod per name in `pods`, on nodes
    /// `node-<i>`, each with one container `app` of the given `resources`.
    pub fn deployment_with_pods(&self, namespace: &str, name: &str, pods: &[impl AsRef<str>], resources: Value) {
        let replicas = pods.len();
        let labels = json!({ "app": name, "augur.io/serving": "true" });
        let container = json!({ "name": "app", "image": "registry.local/app:1", "resources": resources });
        self.put(
            "deployments",
            namespace,
            name,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": name, "namespace": namespace, "uid": format!("uid-{name}") },
                "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
                          "template": { "metadata": { "labels": labels }, "spec": { "containers": [container.clone()] } } }
            }),
        );
        let rs = format!("{name}-5d8f7c9b4");
        self.put(
            "replicasets",
            namespace,
            &rs,
            json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": { "name": rs, "namespace": namespace, "uid": format!("uid-{rs}"),
                              "ownerReferences": [owner("apps/v1", "Deployment", name)] },
                "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } } }
            }),
        );
        for (i, pod) in pods.iter().enumerate() {
            let owner = Some(owner("apps/v1", "ReplicaSet", &rs));
            self.pod(namespace, pod.as_ref(), &format!("node-{i}"), labels.clone(), container.clone(), owner);
        }
    }

    /// A pod owned by nothing.
    pub fn bare_pod(&self, namespace: &str, name: &str, node: &str, resources: Value) {
        let container = json!({ "name": "app", "image": "registry.local/app:1", "resources": resources });
        self.pod(namespace, name, node, json!({ "app": name }), container, None);
    }

    fn pod(&self, namespace: &str, name: &str, node: &str, labels: Value, container: Value, owner: Option<Value>) {
        let mut meta = json!({ "name": name, "namespace": namespace, "uid": format!("uid-{name}"), "labels": labels });
        if let Some(owner) = owner {
            meta["ownerReferences"] = json!([owner]);
        }
        let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": meta,
                          "spec": { "nodeName": node, "containers": [container] } });
        self.put("pods", namespace, name, pod);
        if self.get("nodes", "", node).is_none() {
            self.put(
                "nodes",
                "",
                node,
                json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": node }, "spec": {} }),
            );
        }
    }

    /// A PodDisruptionBudget over the pods with `match_labels`.
    pub fn pdb(&self, namespace: &str, name: &str, match_labels: Value, min_available: i64) {
        let pdb = json!({ "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                          "metadata": { "name": name, "namespace": namespace },
                          "spec": { "minAvailable": min_available, "selector": { "matchLabels": match_labels } } });
        self.put("poddisruptionbudgets", namespace, name, pdb);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// The requests that change something (all but GET).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    /// (apiGroup, resource, verb) of every request, as a Role would have to grant them.
    pub fn permissions_used(&self) -> BTreeSet<(String, String, String)> {
        let mut used = BTreeSet::new();
        for request in self.requests() {
            let Some((resource, _, _, sub)) = route(&request.path) else { continue };
            let group = if request.path.starts_with("/apis/") {
                request.path.split('/').nth(2).unwrap_or_default()
            } else {
                ""
            };
            let resource = sub.map_or(resource.clone(), |s| format!("{resource}/{s}"));
            let verb = match request.method.as_str() {
                "GET" => "get",
                "PATCH" => "patch",
                "POST" => "create",
                other => other,
            };
            used.insert((group.to_owned(), resource, verb.to_owned()));
        }
        used
    }

    /// Pods have no `resize` subresource (clusters before 1.33): 404 on it.
    pub fn without_resize(&self) {
        self.world().resize_unsupported = true;
    }

    /// Answers 403 to `verb` (get, patch, create) on `resource` ("deployments/scale").
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.world().forbidden.push((verb.to_owned(), resource.to_owned()));
    }

    /// The next request, whatever it is, is answered with this status (5xx: overload).
    pub fn fail_next(&self, code: StatusCode) {
        self.world().fail_next = Some(code);
    }

    /// Just before the next write to this object, someone else writes it first.
    pub fn race_next_write(&self, resource: &str, namespace: &str, name: &str) {
        self.world().race = Some(key(resource, namespace, name));
    }
}

fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!({ "apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true })
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code.as_u16() });
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn ok(object: &Value) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], object.to_string()).into_response()
}

/// (resource, namespace, name, subresource) of an API path.
fn route(path: &str) -> Option<(String, String, String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (rest, namespace) = match parts.as_slice() {
        ["api", "v1", "nodes", rest @ ..] => (rest, ""),
        ["api", "v1", "namespaces", ns, rest @ ..] | ["apis", _, "v1", "namespaces", ns, rest @ ..] => (rest, *ns),
        _ => return None,
    };
    let resource = if namespace.is_empty() { "nodes" } else { rest.first()? };
    let rest = if namespace.is_empty() { rest } else { &rest[1..] };
    match rest {
        [name] => Some((resource.to_owned(), namespace.to_owned(), (*name).to_owned(), None)),
        [name, sub] => Some((resource.to_owned(), namespace.to_owned(), (*name).to_owned(), Some((*sub).to_owned()))),
        _ => None,
    }
}

fn handle(world: &Mutex<World>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let parsed: Option<Value> = if body.is_empty() { Some(Value::Null) } else { serde_json::from_slice(&body).ok() };
    world.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        content_type: content_type.clone(),
        body: parsed.clone().unwrap_or(Value::Null),
    });
    if let Some(code) = world.fail_next.take() {
        return status(code, code.canonical_reason().unwrap_or("Failure"), format!("injected {code}"));
    }
    let Some(patch) = parsed else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "request body is not JSON".into());
    };
    let Some((resource, namespace, name, sub)) = route(uri.path()) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource".into());
    };
    let verb = match method {
        Method::GET => "get",
        Method::PATCH => "patch",
        Method::POST => "create",
        _ => return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} not served")),
    };
    let rbac_resource = sub.as_ref().map_or_else(|| resource.clone(), |s| format!("{resource}/{s}"));
    if world.forbidden.contains(&(verb.to_owned(), rbac_resource.clone())) {
        let message = format!("{rbac_resource} \"{name}\" is forbidden: cannot {verb} resource \"{rbac_resource}\"");
        return status(StatusCode::FORBIDDEN, "Forbidden", message);
    }
    if sub.as_deref() == Some("resize") && world.resize_unsupported {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource".into());
    }
    let k = key(&resource, &namespace, &name);
    let Some(current) = world.objects.get(&k).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("{resource} \"{name}\" not found"));
    };
    match (verb, sub.as_deref()) {
        ("get", None) => ok(&current),
        ("get", Some("scale")) => ok(&scale_of(&current)),
        ("patch", sub @ (None | Some("resize") | Some("scale"))) => {
            if world.race.as_ref() == Some(&k) {
                world.race = None;
                world.version += 1;
                let version = world.version.to_string();
                if let Some(object) = world.objects.get_mut(&k) {
                    object["metadata"]["resourceVersion"] = json!(version);
                }
            }
            patch_object(&mut world, k, sub, &content_type, patch)
        }
        ("create", Some("eviction")) => evict(&mut world, &namespace, &name, &current),
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{verb} {rbac_resource} not served")),
    }
}

fn scale_of(deployment: &Value) -> Value {
    let meta = &deployment["metadata"];
    json!({ "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": { "name": meta["name"], "namespace": meta["namespace"], "resourceVersion": meta["resourceVersion"] },
            "spec": { "replicas": deployment["spec"]["replicas"] }, "status": { "replicas": deployment["spec"]["replicas"] } })
}

fn patch_object(world: &mut World, k: Key, sub: Option<&str>, content_type: &str, mut patch: Value) -> Response {
    let strategic = match content_type {
        "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        other => {
            return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", format!("{other:?} not served"))
        }
    };
    let Some(object) = world.objects.get(&k).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{}\" not found", k.0, k.2));
    };
    let precondition =
        patch.get_mut("metadata").and_then(|m| m.as_object_mut()).and_then(|m| m.remove("resourceVersion"));
    if let Some(wanted) = precondition {
        if wanted != object["metadata"]["resourceVersion"] {
            let message = format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                k.0, k.2
            );
            return status(StatusCode::CONFLICT, "Conflict", message);
        }
    }
    let mut updated = object;
    match sub {
        // Only replica counts go through scale, only container resources through resize.
        Some("scale") => updated["spec"]["replicas"] = patch["spec"]["replicas"].clone(),
        Some(_) => {
            let containers: Vec<Value> = patch["spec"]["containers"]
                .as_array()
                .map(|cs| cs.iter().map(|c| json!({ "name": c["name"], "resources": c["resources"] })).collect())
                .unwrap_or_default();
            merge(&mut updated, json!({ "spec": { "containers": containers } }), true);
        }
        None => merge(&mut updated, patch, strategic),
    }
    world.version += 1;
    updated["metadata"]["resourceVersion"] = json!(world.version.to_string());
    world.objects.insert(k.clone(), updated.clone());
    ok(&if sub == Some("scale") { scale_of(&updated) } else { updated })
}

/// RFC 7386 merge; with `strategic`, lists of objects that all have a `name` merge by it.
fn merge(target: &mut Value, patch: Value, strategic: bool) {
    let named = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(|e| e.get("name").is_some()));
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (field, value) in fields {
                if value.is_null() {
                    target.as_object_mut().map(|t| t.remove(&field));
                } else if let Some(slot) = target.as_object_mut().map(|t| t.entry(field).or_insert(Value::Null)) {
                    merge(slot, value, strategic);
                }
            }
        }
        Value::Array(items) if strategic && named(target) && named(&Value::Array(items.clone())) => {
            let Some(list) = target.as_array_mut() else { return };
            for item in items {
                match list.iter_mut().find(|e| e["name"] == item["name"]) {
                    Some(existing) => merge(existing, item, strategic),
                    None => list.push(item),
                }
            }
        }
        other => *target = other,
    }
}

fn evict(world: &mut World, namespace: &str, name: &str, pod: &Value) -> Response {
    let matches =
        |selector: &Value, labels: &Value| selector.as_object().is_some_and(|s| s.iter().all(|(k, v)| &labels[k] == v));
    let pods_in = |world: &World| -> Vec<Value> {
        world.objects.iter().filter(|(k, _)| k.0 == "pods" && k.1 == namespace).map(|(_, v)| v.clone()).collect()
    };
    for ((resource, ns, pdb_name), pdb) in &world.objects {
        if resource != "poddisruptionbudgets" || ns != namespace {
            continue;
        }
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        if !matches(selector, &pod["metadata"]["labels"]) {
            continue;
        }
        let healthy = pods_in(world).iter().filter(|p| matches(selector, &p["metadata"]["labels"])).count() as i64;
        if healthy - pdb["spec"]["minAvailable"].as_i64().unwrap_or(0) < 1 {
            let message = format!("Cannot evict pod as it would violate the pod's disruption budget {pdb_name}.");
            return status(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
        }
    }
    world.objects.remove(&key("pods", namespace, name));
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 });
    (StatusCode::CREATED, [("content-type", "application/json")], body.to_string()).into_response()
}
