//! SCALE_OUT, MIGRATE and SHED: the changes made to a pod's workload, its node and its
//! place behind Services.
//!
//! In: the target pod and the plan. Out: the Deployment's replicas through its `scale`
//! subresource; the node cordoned and the pod evicted (PodDisruptionBudgets honoured);
//! the pod's [`SERVING_LABEL`](super::SERVING_LABEL). Scale-out and migration fence on
//! the Deployment, which outlives the evicted pod (intent, change, done); shedding fences
//! on the pod, in the same PATCH as the label.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{EvictParams, Patch, PatchParams};
use serde_json::json;

use super::error::{classify, status_code, Request};
use super::fence::{Entry, State};
use super::{gone, ledger, record_fresh, replicas, write_fenced, KubernetesBackend, Target, SERVING_LABEL};
use crate::actuate::backend::{BackendError, Fence};
use crate::policy::plan::Plan;

impl KubernetesBackend {
    /// The Deployment an adjustment of the pod fences on: its owner while the pod
    /// exists, else the one that remembers this adjustment.
    async fn workload(
        &self,
        t: &Target,
        pod: Option<&Pod>,
        id: &str,
        action: &str,
    ) -> Result<Deployment, BackendError> {
        match pod {
            Some(pod) => self.owner_deployment(&t.namespace, pod).await?.ok_or_else(|| {
                BackendError::Refused(format!(
                    "{action} needs a Deployment, and pod {}/{} has no owning Deployment",
                    t.namespace, t.pod
                ))
            }),
            None => self.remembering_deployment(t, id).await?.ok_or_else(|| gone(t)),
        }
    }

    pub(super) async fn scale_out(&self, t: &Target, id: &str, plan: &Plan) -> Result<String, BackendError> {
        let pod = self.pod(t).await?;
        let d = self.workload(t, pod.as_ref(), id, "scale-out").await?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let mut d_ledger = ledger(&d.metadata)?;
        let plan = match d_ledger.fence(id) {
            Fence::Done => return Ok(format!("adjustment {id} already applied to Deployment {}/{name}", t.namespace)),
            Fence::Pending(recorded) => recorded,
            Fence::Absent => plan.clone(),
        };
        let target =
            plan.replicas.ok_or_else(|| BackendError::Refused("scale-out plan names no replica count".into()))?;
        let before = replicas(&d).unwrap_or(0);
        let entry = |state| Entry { id: id.to_owned(), state, plan: plan.clone(), node: None };
        let api = self.deployments(&t.namespace);
        let patch = Request { verb: "patch", resource: "deployments", namespace: &t.namespace, name: &name };
        let detail = format!("replicas {before}→{target} on Deployment {}/{name}", t.namespace);
        if before == target {
            d_ledger.record(entry(State::Done));
            write_fenced(&api, patch, d.metadata.resource_version.as_deref(), &d_ledger, None).await?;
            return Ok(detail);
        }
        if d_ledger.entry(id).is_none() {
            d_ledger.record(entry(State::Pending));
            write_fenced(&api, patch, d.metadata.resource_version.as_deref(), &d_ledger, None).await?;
        }
        // An absolute replica count: repeating it is harmless, so no precondition.
        let scale = Request { verb: "patch", resource: "deployments/scale", ..patch };
        let body = Patch::Merge(json!({ "spec": { "replicas": target } }));
        api.patch_scale(&name, &PatchParams::default(), &body).await.map_err(|e| classify(scale, e))?;
        record_fresh(&api, patch, entry(State::Done)).await?;
        Ok(detail)
    }

    pub(super) async fn migrate(&self, t: &Target, id: &str, plan: &Plan) -> Result<String, BackendError> {
        let pod = self.pod(t).await?;
        let d = self.workload(t, pod.as_ref(), id, "migrate").await?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let mut d_ledger = ledger(&d.metadata)?;
        let (plan, recorded_node) = match d_ledger.entry(id) {
            Some(e) if e.state == State::Done => {
                return Ok(format!("adjustment {id} already applied to Deployment {}/{name}", t.namespace))
            }
            Some(e) => (e.plan.clone(), e.node.clone()),
            None => (plan.clone(), None),
        };
        let pod_node = pod.as_ref().and_then(|p| p.spec.as_ref()).and_then(|s| s.node_name.clone());
        let node = recorded_node.or_else(|| pod_node.clone()).ok_or_else(|| {
            BackendError::Refused(format!("pod {}/{} is not scheduled on a node", t.namespace, t.pod))
        })?;
        let entry = |state| Entry { id: id.to_owned(), state, plan: plan.clone(), node: Some(node.clone()) };
        let api = self.deployments(&t.namespace);
        let patch = Request { verb: "patch", resource: "deployments", namespace: &t.namespace, name: &name };
        if d_ledger.entry(id).is_none() {
            d_ledger.record(entry(State::Pending));
            write_fenced(&api, patch, d.metadata.resource_version.as_deref(), &d_ledger, None).await?;
        }
        // Cordon first, so the replacement the ReplicaSet creates is not scheduled back.
        let cordon = Request { verb: "patch", resource: "nodes", namespace: "", name: &node };
        let unschedulable = Patch::Merge(json!({ "spec": { "unschedulable": true } }));
        self.nodes().patch(&node, &PatchParams::default(), &unschedulable).await.map_err(|e| classify(cordon, e))?;
        let evicted = if pod_node.as_deref() == Some(node.as_str()) {
            let evict = Request { verb: "create", resource: "pods/eviction", namespace: &t.namespace, name: &t.pod };
            match self.pods(&t.namespace).evict(&t.pod, &EvictParams::default()).await {
                Ok(_) => "evicted",
                Err(e) if status_code(&e) == Some(404) => "already gone",
                Err(e) => return Err(classify(evict, e)),
            }
        } else {
            "already gone"
        };
        record_fresh(&api, patch, entry(State::Done)).await?;
        Ok(format!("node {node} cordoned, pod {}/{} {evicted}", t.namespace, t.pod))
    }

    pub(super) async fn shed(&self, t: &Target, id: &str, plan: &Plan) -> Result<String, BackendError> {
        let pod = self.existing_pod(t).await?;
        let mut p_ledger = ledger(&pod.metadata)?;
        let plan = match p_ledger.fence(id) {
            Fence::Done => return Ok(format!("adjustment {id} already applied to pod {}/{}", t.namespace, t.pod)),
            Fence::Pending(recorded) => recorded,
            Fence::Absent => plan.clone(),
        };
        let serving = if plan.shed_fraction > 0.0 { "false" } else { "true" };
        p_ledger.record(Entry { id: id.to_owned(), state: State::Done, plan, node: None });
        let label = json!({ "metadata": { "labels": { SERVING_LABEL: serving } } });
        let request = Request { verb: "patch", resource: "pods", namespace: &t.namespace, name: &t.pod };
        let version = pod.metadata.resource_version.as_deref();
        write_fenced(&self.pods(&t.namespace), request, version, &p_ledger, Some(label)).await?;
        let effect = if serving == "false" { "out of" } else { "back in" };
        Ok(format!("pod {}/{} labelled {SERVING_LABEL}={serving}: {effect} its Services", t.namespace, t.pod))
    }
}
