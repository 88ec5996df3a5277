//! The Kubernetes backend: applies adjustments to pods and their Deployments through the
//! API server, each change fenced so that it happens exactly once.
//!
//! In: an [`Adjustment`] whose instance id names a pod (`pod`, `namespace/pod` or
//! `namespace/pod/container`; the namespace defaults to the backend's) and its [`Plan`].
//! Out: the change in the cluster and, on the object changed, the fence annotation
//! [`fence::ANNOTATION`] naming the adjustment with its state.
//!
//! - RESIZE: in place through the pod's `resize` subresource (Kubernetes ≥ 1.33); on a
//!   cluster without it (404/405 on the subresource while the pod exists, remembered for
//!   the backend's lifetime) the owning Deployment's pod template, which rolls its pods.
//!   Limits are set to the plan; requests are scaled by the same factor and capped at the
//!   new limit, which keeps the pod's QoS class (an in-place resize may not change it).
//!   A container with a request but no limit gets its request set.
//! - SCALE_OUT: the owning Deployment's `scale` subresource to `Plan::replicas`.
//! - MIGRATE: cordons the pod's node and evicts the pod through the Eviction API, so
//!   PodDisruptionBudgets hold (a blocked eviction is retried as transient). Only pods of
//!   a Deployment: a bare pod would be deleted, not moved.
//! - SHED: sets the pod label [`SERVING_LABEL`] to `false` (`true` when `shed_fraction`
//!   is 0); Services that select `augur.io/serving: "true"` drop it from their endpoints.
//! - NOTIFY, NONE: refused; notifications are the actuator's, not the cluster's.
//!
//! The guarantee: a change that can carry the annotation (shed, template resize) writes
//! both in one PATCH with a `metadata.resourceVersion` precondition. A change through a
//! subresource (resize, scale, eviction) first records its intent (`pending` with the
//! plan, same precondition), then makes the change with absolute values, then records
//! `done`; an interrupted attempt is observed as [`Fence::Pending`](crate::actuate::backend::Fence::Pending) and completed with
//! its recorded plan. A 409 from a precondition is transient: the actuator re-observes.

mod error;
pub mod fence;
pub mod quantity;
mod resize;
mod workload;

use std::fmt::Debug;
use std::sync::atomic::AtomicBool;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::error::{classify, Request};
use self::fence::{combine, Entry, Ledger};
use crate::actuate::backend::{Backend, BackendError, Observed};
use crate::codec::{Action, Adjustment};
use crate::policy::plan::{Plan, Resources};

/// The pod label shedding flips; Services meant to shed select on it being `"true"`.
pub const SERVING_LABEL: &str = "augur.io/serving";

/// Every (API group, resource, verbs) the backend uses, and nothing more: the actuator's
/// Role must grant exactly these.
pub const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["get", "patch"]),
    ("", "pods/resize", &["patch"]),
    ("", "pods/eviction", &["create"]),
    ("", "nodes", &["patch"]),
    ("apps", "replicasets", &["get"]),
    ("apps", "deployments", &["get", "patch"]),
    ("apps", "deployments/scale", &["patch"]),
];

/// How long one API request may wait for its response: far above an API server's normal
/// latency (its own request timeout is 60 s, mostly spent on watches we never make).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why the backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid API server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("no Kubernetes configuration found (kubeconfig or in-cluster service account): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Applies adjustments to a Kubernetes cluster; see the module docs for what each action
/// changes.
pub struct KubernetesBackend {
    client: kube::Client,
    namespace: String,
    /// Set once the cluster answered that pods have no `resize` subresource.
    resize_unsupported: AtomicBool,
}

/// The pod (and container) an instance id names.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    namespace: String,
    pod: String,
    container: Option<String>,
}

impl KubernetesBackend {
    /// From the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or, failing that, the pod's
    /// service account; the namespace defaults to the configuration's.
    pub async fn infer(namespace: Option<&str>) -> Result<Self, SetupError> {
        let config = kube::Config::infer().await?;
        Self::from_config(config, namespace)
    }

    /// An API server at an explicit URL without credentials (a proxy such as
    /// `kubectl proxy`, or a test server).
    pub fn with_url(url: &str, namespace: &str) -> Result<Self, SetupError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| SetupError::Url { url: url.to_owned(), reason: e.to_string() })?;
        if uri.scheme().is_none() || uri.host().is_none() {
            let reason = "expected scheme://host[:port]".to_owned();
            return Err(SetupError::Url { url: url.to_owned(), reason });
        }
        Self::from_config(kube::Config::new(uri), Some(namespace))
    }

    fn from_config(mut config: kube::Config, namespace: Option<&str>) -> Result<Self, SetupError> {
        // The actuator owns retries and counts them against its limit; a second retry
        // layer inside the client would hide blocked evictions and throttling from it.
        config.default_retry = false;
        // kube-rs waits forever for a response by default; a hung API server must
        // surface as a transient error the actuator can retry, not stall it.
        config.read_timeout.get_or_insert(READ_TIMEOUT);
        let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_owned);
        Ok(Self::new(kube::Client::try_from(config)?, namespace))
    }

    /// From a client built elsewhere.
    pub fn new(client: kube::Client, namespace: String) -> Self {
        Self { client, namespace, resize_unsupported: AtomicBool::new(false) }
    }

    /// The namespace of instance ids that name none.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn target(&self, instance_id: &str) -> Result<Target, BackendError> {
        let parts: Vec<&str> = instance_id.split('/').collect();
        let (namespace, pod, container) = match parts.as_slice() {
            [pod] => (self.namespace.as_str(), *pod, None),
            [namespace, pod] => (*namespace, *pod, None),
            [namespace, pod, container] => (*namespace, *pod, Some(*container)),
            _ => ("", "", None),
        };
        let valid = |s: &str| !s.is_empty() && s.len() <= 253 && !s.contains(char::is_whitespace);
        if !(valid(namespace) && valid(pod) && container.is_none_or(valid)) {
            return Err(BackendError::Refused(format!(
                "instance id {instance_id:?} does not name a pod (pod, namespace/pod or namespace/pod/container)"
            )));
        }
        Ok(Target { namespace: namespace.into(), pod: pod.into(), container: container.map(str::to_owned) })
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// The pod, or `None` if it is gone.
    async fn pod(&self, t: &Target) -> Result<Option<Pod>, BackendError> {
        let request = Request { verb: "get", resource: "pods", namespace: &t.namespace, name: &t.pod };
        self.pods(&t.namespace).get_opt(&t.pod).await.map_err(|e| classify(request, e))
    }

    async fn existing_pod(&self, t: &Target) -> Result<Pod, BackendError> {
        self.pod(t).await?.ok_or_else(|| gone(t))
    }

    /// The Deployment that controls a pod through its ReplicaSet, if any.
    async fn owner_deployment(&self, namespace: &str, pod: &Pod) -> Result<Option<Deployment>, BackendError> {
        let Some(rs_name) = controller(&pod.metadata, "ReplicaSet") else { return Ok(None) };
        let request = Request { verb: "get", resource: "replicasets", namespace, name: rs_name };
        let replicasets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let Some(rs) = replicasets.get_opt(rs_name).await.map_err(|e| classify(request, e))? else { return Ok(None) };
        let Some(name) = controller(&rs.metadata, "Deployment") else { return Ok(None) };
        let request = Request { verb: "get", resource: "deployments", namespace, name };
        self.deployments(namespace).get_opt(name).await.map_err(|e| classify(request, e))
    }

    /// For a pod that is gone (evicted, rolled): the Deployment its name derives from
    /// (`<deployment>-<template hash>-<suffix>`), if that Deployment remembers `id`.
    /// A migration or template resize outlives its pod; its fence must too.
    async fn remembering_deployment(&self, t: &Target, id: &str) -> Result<Option<Deployment>, BackendError> {
        let mut parts = t.pod.rsplitn(3, '-');
        let (Some(_), Some(_), Some(name)) = (parts.next(), parts.next(), parts.next()) else { return Ok(None) };
        let request = Request { verb: "get", resource: "deployments", namespace: &t.namespace, name };
        let found = self.deployments(&t.namespace).get_opt(name).await.map_err(|e| classify(request, e))?;
        match found {
            Some(d) if ledger(&d.metadata)?.entry(id).is_some() => Ok(Some(d)),
            _ => Ok(None),
        }
    }
}

impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn observe(&self, adjustment: &Adjustment) -> Result<Observed, BackendError> {
        let t = self.target(&adjustment.instance_id)?;
        let id = adjustment.id.as_str();
        let Some(pod) = self.pod(&t).await? else {
            let deployment = self.remembering_deployment(&t, id).await?.ok_or_else(|| gone(&t))?;
            let resources = Resources { replicas: replicas(&deployment), ..Resources::default() };
            return Ok(Observed { resources, fence: ledger(&deployment.metadata)?.fence(id) });
        };
        let deployment = self.owner_deployment(&t.namespace, &pod).await?;
        let container = container(&t, pod.spec.as_ref().map(|s| s.containers.as_slice()))?;
        let mut resources = resize::allocation(container)?;
        resources.replicas = deployment.as_ref().and_then(replicas);
        let mut fence = ledger(&pod.metadata)?.fence(id);
        if let Some(d) = &deployment {
            fence = combine(fence, ledger(&d.metadata)?.fence(id));
        }
        Ok(Observed { resources, fence })
    }

    async fn apply(&self, adjustment: &Adjustment, plan: &Plan) -> Result<String, BackendError> {
        let t = self.target(&adjustment.instance_id)?;
        let id = adjustment.id.as_str();
        // A NaN would be written as null and leave the object's fence unreadable.
        if !plan.shed_fraction.is_finite() {
            return Err(BackendError::Refused(format!("plan has a non-finite shed fraction {}", plan.shed_fraction)));
        }
        match plan.action {
            Action::Resize => self.resize(&t, id, plan).await,
            Action::ScaleOut => self.scale_out(&t, id, plan).await,
            Action::Migrate => self.migrate(&t, id, plan).await,
            Action::Shed => self.shed(&t, id, plan).await,
            Action::Notify | Action::None => Err(BackendError::Refused(format!(
                "{:?} is not a kubernetes action: the actuator handles it without a backend",
                plan.action
            ))),
        }
    }
}

fn gone(t: &Target) -> BackendError {
    BackendError::Refused(format!("pod {}/{} not found", t.namespace, t.pod))
}

/// The name of the object of `kind` that controls the object of `meta`.
fn controller<'a>(meta: &'a ObjectMeta, kind: &str) -> Option<&'a str> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    owners.iter().find(|o| o.kind == kind && o.controller == Some(true)).map(|o| o.name.as_str())
}

fn replicas(deployment: &Deployment) -> Option<u32> {
    let replicas = deployment.spec.as_ref().map_or(Some(1), |s| s.replicas);
    replicas.and_then(|r| u32::try_from(r).ok())
}

/// The named container, or the first.
fn container<'a>(t: &Target, containers: Option<&'a [Container]>) -> Result<&'a Container, BackendError> {
    let containers = containers.unwrap_or_default();
    let found = match &t.container {
        Some(name) => containers.iter().find(|c| &c.name == name),
        None => containers.first(),
    };
    found.ok_or_else(|| {
        let which = t.container.as_deref().unwrap_or("(first)");
        BackendError::Refused(format!("pod {}/{} has no container {which}", t.namespace, t.pod))
    })
}

fn ledger(meta: &ObjectMeta) -> Result<Ledger, BackendError> {
    Ledger::read(meta.annotations.as_ref()).map_err(|e| {
        let name = meta.name.as_deref().unwrap_or_default();
        BackendError::Refused(format!("{name}: {e}"))
    })
}

/// Writes `ledger` (plus `change`, if any) to the object in one strategic-merge PATCH,
/// valid only while the object is at `resource_version`.
async fn write_fenced<K>(
    api: &Api<K>,
    request: Request<'_>,
    resource_version: Option<&str>,
    ledger: &Ledger,
    change: Option<Value>,
) -> Result<K, BackendError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let version = resource_version
        .ok_or_else(|| BackendError::Transient(format!("{request}: the object has no resourceVersion yet")))?;
    let mut body = ledger.patch(version).map_err(BackendError::Fatal)?;
    if let Some(change) = change {
        fence::merge(&mut body, change);
    }
    let patch = Patch::Strategic(body);
    api.patch(request.name, &PatchParams::default(), &patch).await.map_err(|e| classify(request, e))
}

/// Records `entry` on the object as it is now (re-read, so a status update by a
/// controller since our last read does not make the write conflict).
async fn record_fresh<K>(api: &Api<K>, request: Request<'_>, entry: Entry) -> Result<K, BackendError>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let get = Request { verb: "get", ..request };
    let object = api.get(request.name).await.map_err(|e| classify(get, e))?;
    let mut ledger = ledger(object.meta())?;
    ledger.record(entry);
    write_fenced(api, request, object.meta().resource_version.as_deref(), &ledger, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> KubernetesBackend {
        // No request is sent: only id parsing is exercised.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let _guard = rt.as_ref().map(|rt| rt.enter());
        KubernetesBackend::with_url("http://127.0.0.1:1", "prod").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn instance_ids_name_pods() {
        let b = backend();
        let t = |ns: &str, pod: &str, c: Option<&str>| Target {
            namespace: ns.into(),
            pod: pod.into(),
            container: c.map(Into::into),
        };
        assert_eq!(b.target("web-1").ok(), Some(t("prod", "web-1", None)));
        assert_eq!(b.target("shop/web-1").ok(), Some(t("shop", "web-1", None)));
        assert_eq!(b.target("shop/web-1/app").ok(), Some(t("shop", "web-1", Some("app"))));
        for bad in ["", "a//b", "a/b/c/d", "shop/web 1"] {
            assert!(matches!(b.target(bad), Err(BackendError::Refused(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_urls_are_named() {
        for url in ["not a url", "/just/a/path"] {
            assert!(matches!(KubernetesBackend::with_url(url, "ns"), Err(SetupError::Url { .. })), "{url}");
        }
    }

    #[test]
    fn rbac_lists_each_resource_once() {
        let mut seen: Vec<(&str, &str)> = RBAC.iter().map(|(g, r, _)| (*g, *r)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), RBAC.len());
    }
}
