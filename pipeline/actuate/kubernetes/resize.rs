//! RESIZE: a pod's CPU and memory, in place through its `resize` subresource, or through
//! its Deployment's pod template where the cluster has no such subresource.
//!
//! In: the target pod and the plan's absolute CPU (millicores) and memory (bytes). Out:
//! new limits, and requests scaled by the same factor (capped at the new limit) so the
//! QoS class stays; a container with only a request has its request set. In place, the
//! pod carries the fence (intent, resize, done); through the template, the Deployment
//! carries it, written in the same PATCH as the template.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Patch, PatchParams};
use serde_json::{json, Map, Value};
use tracing::warn;

use super::error::{classify, status_code, Request};
use super::fence::{Entry, State};
use super::quantity::{self, BadQuantity};
use super::{container, ledger, record_fresh, write_fenced, KubernetesBackend, Target};
use crate::actuate::backend::{BackendError, Fence};
use crate::policy::plan::{Plan, Resources};

/// A container's allocation as plans see it: the limit, else the request.
pub(super) fn allocation(c: &Container) -> Result<Resources, BackendError> {
    Ok(Resources {
        cpu_millis: current(c, "cpu", quantity::cpu_millis)?.and_then(|(limit, request)| limit.or(request)),
        memory_bytes: current(c, "memory", quantity::memory_bytes)?.and_then(|(limit, request)| limit.or(request)),
        replicas: None,
    })
}

/// The container's (limit, request) of one resource; `None` if it has neither.
type Current = Option<(Option<u64>, Option<u64>)>;

fn current(c: &Container, key: &str, parse: fn(&str) -> Result<u64, BadQuantity>) -> Result<Current, BackendError> {
    let resources = c.resources.as_ref();
    let read = |map: Option<&BTreeMap<String, Quantity>>, which: &str| {
        map.and_then(|m| m.get(key))
            .map(|q| parse(&q.0))
            .transpose()
            .map_err(|e| BackendError::Refused(format!("container {} has an unreadable {key} {which}: {e}", c.name)))
    };
    let limit = read(resources.and_then(|r| r.limits.as_ref()), "limit")?;
    let request = read(resources.and_then(|r| r.requests.as_ref()), "request")?;
    Ok((limit.is_some() || request.is_some()).then_some((limit, request)))
}

/// The `resources` patch that takes a container to a plan.
struct Change {
    resources: Value,
    detail: Vec<String>,
    /// The container already has the plan's values.
    already: bool,
}

fn change(c: &Container, plan: &Plan) -> Result<Change, BackendError> {
    type Format = fn(u64) -> String;
    type Parse = fn(&str) -> Result<u64, BadQuantity>;
    let wanted: [(&str, Option<u64>, Parse, Format); 2] = [
        ("cpu", plan.cpu_millis, quantity::cpu_millis, quantity::format_cpu),
        ("memory", plan.memory_bytes, quantity::memory_bytes, quantity::format_memory),
    ];
    let (mut limits, mut requests) = (Map::new(), Map::new());
    let mut out = Change { resources: Value::Null, detail: Vec::new(), already: true };
    for (key, target, parse, format) in wanted {
        let Some(target) = target else { continue };
        let before = match current(c, key, parse)? {
            Some((Some(limit), request)) => {
                limits.insert(key.into(), format(target).into());
                if let Some(request) = request {
                    // Same factor as the limit, so Guaranteed stays Guaranteed.
                    let scaled = if limit == 0 {
                        target
                    } else {
                        (request as f64 * target as f64 / limit as f64).round() as u64
                    };
                    requests.insert(key.into(), format(scaled.min(target)).into());
                }
                limit
            }
            Some((None, Some(request))) => {
                requests.insert(key.into(), format(target).into());
                request
            }
            _ => {
                let name = &c.name;
                return Err(BackendError::Refused(format!("container {name} has no {key} request or limit to resize")));
            }
        };
        out.already &= before == target;
        out.detail.push(format!("{key} {}→{}", format(before), format(target)));
    }
    if out.detail.is_empty() {
        return Err(BackendError::Refused("resize plan sets neither cpu nor memory".into()));
    }
    let mut resources = Map::new();
    if !limits.is_empty() {
        resources.insert("limits".into(), limits.into());
    }
    if !requests.is_empty() {
        resources.insert("requests".into(), requests.into());
    }
    out.resources = resources.into();
    Ok(out)
}

impl KubernetesBackend {
    pub(super) async fn resize(&self, t: &Target, id: &str, plan: &Plan) -> Result<String, BackendError> {
        let pod = self.existing_pod(t).await?;
        let deployment = self.owner_deployment(&t.namespace, &pod).await?;
        let mut pod_ledger = ledger(&pod.metadata)?;
        let mut fence = pod_ledger.fence(id);
        if let Some(d) = &deployment {
            fence = super::combine(fence, ledger(&d.metadata)?.fence(id));
        }
        let plan = match fence {
            Fence::Done => return Ok(format!("adjustment {id} already applied to pod {}/{}", t.namespace, t.pod)),
            Fence::Pending(recorded) => recorded,
            Fence::Absent => plan.clone(),
        };
        let c = container(t, pod.spec.as_ref().map(|s| s.containers.as_slice()))?;
        if self.resize_unsupported.load(Ordering::Relaxed) {
            return self.resize_template(t, id, &plan, deployment, &c.name).await;
        }
        let change = change(c, &plan)?;
        let detail = format!("{} on pod {}/{} (in place)", change.detail.join(", "), t.namespace, t.pod);
        let entry = |state| Entry { id: id.to_owned(), state, plan: plan.clone(), node: None };
        let pods = self.pods(&t.namespace);
        let patch_pod = Request { verb: "patch", resource: "pods", namespace: &t.namespace, name: &t.pod };
        if change.already {
            pod_ledger.record(entry(State::Done));
            write_fenced(&pods, patch_pod, pod.metadata.resource_version.as_deref(), &pod_ledger, None).await?;
            return Ok(detail);
        }
        if pod_ledger.entry(id).is_none() {
            pod_ledger.record(entry(State::Pending));
            write_fenced(&pods, patch_pod, pod.metadata.resource_version.as_deref(), &pod_ledger, None).await?;
        }
        // Absolute values merged by container name: repeating it is harmless, so it
        // needs no precondition of its own; the intent above already holds the fence.
        let body = json!({ "spec": { "containers": [{ "name": c.name, "resources": change.resources }] } });
        let resize = Request { verb: "patch", resource: "pods/resize", ..patch_pod };
        match pods.patch_resize(&t.pod, &PatchParams::default(), &Patch::Strategic(body)).await {
            Ok(_) => {}
            Err(e) if matches!(status_code(&e), Some(404 | 405)) => {
                // The pod existed a moment ago: the subresource is what is missing.
                self.existing_pod(t).await?;
                warn!(namespace = %t.namespace, "pods/resize unsupported; resizing through Deployment templates");
                self.resize_unsupported.store(true, Ordering::Relaxed);
                let detail = self.resize_template(t, id, &plan, deployment, &c.name).await?;
                // The Deployment's fence already says done; this only tidies the pod's.
                if let Err(error) = record_fresh(&pods, patch_pod, entry(State::Done)).await {
                    warn!(%error, "could not mark the pod's resize intent done");
                }
                return Ok(detail);
            }
            Err(e) => return Err(classify(resize, e)),
        }
        record_fresh(&pods, patch_pod, entry(State::Done)).await?;
        Ok(detail)
    }

    /// The fallback: the owning Deployment's template, fence in the same PATCH.
    async fn resize_template(
        &self,
        t: &Target,
        id: &str,
        plan: &Plan,
        deployment: Option<Deployment>,
        container_name: &str,
    ) -> Result<String, BackendError> {
        let d = deployment.ok_or_else(|| {
            BackendError::Refused(format!(
                "the cluster cannot resize pods in place and pod {}/{} has no owning Deployment",
                t.namespace, t.pod
            ))
        })?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let mut d_ledger = ledger(&d.metadata)?;
        if d_ledger.fence(id) == Fence::Done {
            return Ok(format!("adjustment {id} already applied to Deployment {}/{name}", t.namespace));
        }
        let template = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|s| s.containers.as_slice());
        let by_name = Target { container: Some(container_name.to_owned()), ..t.clone() };
        let change = change(container(&by_name, template)?, plan)?;
        d_ledger.record(Entry { id: id.to_owned(), state: State::Done, plan: plan.clone(), node: None });
        let body = json!({ "spec": { "template": { "spec": { "containers": [
            { "name": container_name, "resources": change.resources }
        ] } } } });
        let request = Request { verb: "patch", resource: "deployments", namespace: &t.namespace, name: &name };
        let api = self.deployments(&t.namespace);
        write_fenced(&api, request, d.metadata.resource_version.as_deref(), &d_ledger, Some(body)).await?;
        Ok(format!("{} on Deployment {}/{name} template (rolls its pods)", change.detail.join(", "), t.namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Action;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| kv.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect())
        };
        Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn plan(cpu: Option<u64>, memory: Option<u64>) -> Plan {
        Plan { cpu_millis: cpu, memory_bytes: memory, ..Plan::unchanged(Action::Resize) }
    }

    #[test]
    fn limits_follow_the_plan_and_requests_keep_their_ratio() {
        let c = container(&[("cpu", "1"), ("memory", "512Mi")], &[("cpu", "500m"), ("memory", "512Mi")]);
        let change = change(&c, &plan(Some(1250), Some(589 << 20))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            change.resources,
            json!({ "limits": { "cpu": "1250m", "memory": "589Mi" }, "requests": { "cpu": "625m", "memory": "589Mi" } })
        );
        assert_eq!(change.detail, ["cpu 1000m→1250m", "memory 512Mi→589Mi"]);
        assert!(!change.already);
    }

    #[test]
    fn a_request_only_container_gets_its_request_set_and_none_is_refused() {
        let c = container(&[], &[("cpu", "200m")]);
        let change = change(&c, &plan(Some(300), None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(change.resources, json!({ "requests": { "cpu": "300m" } }));
        assert!(matches!(super::change(&c, &plan(None, Some(1 << 30))), Err(BackendError::Refused(_))));
        let same = super::change(&c, &plan(Some(200), None)).unwrap_or_else(|e| panic!("{e}"));
        assert!(same.already);
    }

    #[test]
    fn allocation_is_the_limit_else_the_request() {
        let c = container(&[("memory", "1Gi")], &[("cpu", "250m"), ("memory", "512Mi")]);
        let r = allocation(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.cpu_millis, r.memory_bytes), (Some(250), Some(1 << 30)));
    }
}
