//! The deployment manifests under `k8s/`, checked without a cluster.
//!
//! In: every YAML file under `k8s/base`, `k8s/overlays` and `k8s/optional`, and the
//! `augur <command> --help` of the built binary. Out: a failure naming the file, the
//! document and the field path of anything Kubernetes (or Strimzi, KEDA, kustomize)
//! would not accept: an unknown field, a wrong type, a missing required field, a file
//! a kustomization lists but that does not exist, a manifest no kustomization lists, a
//! patch that no longer yields a valid object, or a container flag or environment
//! variable the `augur` command does not have. Core kinds are parsed into the typed
//! structs of `k8s-openapi`; kinds it does not know are parsed into small structs below
//! that deny unknown fields. `kubectl` and `kustomize` are not needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use k8s_openapi::api::{apps, batch, core, networking, rbac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s")
}

/// Every `.yaml` file under the three manifest roots, sorted.
fn manifest_files() -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for root in ["base", "overlays", "optional"] {
        walk(&k8s_dir().join(root), &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// The documents of a YAML file, in order.
fn documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_multiple::<Value>(&text).with_context(|| format!("{}: not valid YAML", path.display()))
}

/// Deserializes `doc` as `T`; an unknown field or a type error is an error naming its path.
fn typed<T: DeserializeOwned>(doc: &Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let parsed = {
        // serde_ignored prints an Option level as `?`: noise in a manifest's field path.
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
        let de = serde_ignored::Deserializer::new(doc.clone(), &mut note);
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| format!("at {}: {}", e.path(), e.inner()))?
    };
    if !unknown.is_empty() {
        return Err(format!("unknown field(s): {}", unknown.join(", ")));
    }
    Ok(parsed)
}

// Kinds k8s-openapi does not know: only the fields these manifests may use. The
// structs are read by serde only, hence the dead-code allowances.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ObjectMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Strimzi `kafka.strimzi.io/v1beta2` KafkaTopic.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KafkaTopic {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: KafkaTopicSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KafkaTopicSpec {
    #[serde(default)]
    topic_name: Option<String>,
    partitions: u32,
    replicas: u16,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// KEDA `keda.sh/v1alpha1` ScaledObject.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaledObject {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: ScaledObjectSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaledObjectSpec {
    scale_target_ref: ScaleTargetRef,
    #[serde(default)]
    min_replica_count: Option<u32>,
    #[serde(default)]
    max_replica_count: Option<u32>,
    #[serde(default)]
    cooldown_period: Option<u32>,
    #[serde(default)]
    polling_interval: Option<u32>,
    triggers: Vec<ScaleTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaleTargetRef {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaleTrigger {
    #[serde(rename = "type")]
    kind: String,
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    authentication_ref: Option<NameRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct NameRef {
    name: String,
}

/// KEDA `keda.sh/v1alpha1` TriggerAuthentication.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct TriggerAuthentication {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: TriggerAuthenticationSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct TriggerAuthenticationSpec {
    secret_target_ref: Vec<SecretTargetRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SecretTargetRef {
    parameter: String,
    name: String,
    key: String,
}

/// The subset of kustomize's `kustomize.config.k8s.io/v1beta1` Kustomization in use.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    labels: Vec<KustomizeLabels>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
    #[serde(default)]
    patches: Vec<KustomizePatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KustomizeLabels {
    pairs: BTreeMap<String, String>,
    #[serde(default)]
    include_selectors: bool,
    #[serde(default)]
    include_templates: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KustomizeImage {
    name: String,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    new_tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizePatch {
    path: String,
}

/// Checks one document by its kind; returns the typed workload, if it is one.
fn check_document(doc: &Value) -> Result<Option<Workload>, String> {
    let kind = doc.get("kind").and_then(Value::as_str).ok_or("no `kind`")?;
    match kind {
        "Namespace" => typed::<core::v1::Namespace>(doc).map(|_| None),
        "ServiceAccount" => typed::<core::v1::ServiceAccount>(doc).map(|_| None),
        "Secret" => typed::<core::v1::Secret>(doc).map(|_| None),
        "Service" => typed::<core::v1::Service>(doc).map(|_| None),
        "PersistentVolumeClaim" => typed::<core::v1::PersistentVolumeClaim>(doc).map(|_| None),
        "NetworkPolicy" => typed::<networking::v1::NetworkPolicy>(doc).map(|_| None),
        "Deployment" => {
            let d = typed::<apps::v1::Deployment>(doc)?;
            Ok(d.spec.map(|s| Workload::from_pod(s.template.spec)))
        }
        "DaemonSet" => {
            let d = typed::<apps::v1::DaemonSet>(doc)?;
            Ok(d.spec.map(|s| Workload::from_pod(s.template.spec)))
        }
        "CronJob" => {
            let c = typed::<batch::v1::CronJob>(doc)?;
            Ok(c.spec.and_then(|s| s.job_template.spec).map(|j| Workload::from_pod(j.template.spec)))
        }
        "ClusterRole" => typed::<rbac::v1::ClusterRole>(doc).map(|_| None),
        "ClusterRoleBinding" => typed::<rbac::v1::ClusterRoleBinding>(doc).map(|_| None),
        "KafkaTopic" => typed::<KafkaTopic>(doc).map(|_| None),
        "ScaledObject" => typed::<ScaledObject>(doc).map(|_| None),
        "TriggerAuthentication" => typed::<TriggerAuthentication>(doc).map(|_| None),
        "Kustomization" => typed::<Kustomization>(doc).map(|_| None),
        other => Err(format!("kind {other} has no check: add one to tests/k8s.rs")),
    }
}

/// The containers of a workload's pod template.
struct Workload {
    containers: Vec<core::v1::Container>,
}

impl Workload {
    fn from_pod(pod: Option<core::v1::PodSpec>) -> Self {
        Self { containers: pod.map(|p| p.containers).unwrap_or_default() }
    }
}

/// RFC 7386 JSON merge patch: what kustomize's strategic merge does for the maps-only
/// patches used here (no lists are patched). Written out because it is ten lines.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn kustomizations() -> anyhow::Result<Vec<(PathBuf, Kustomization)>> {
    let mut out = Vec::new();
    for path in manifest_files()? {
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            let doc = documents(&path)?.into_iter().next().context("empty kustomization")?;
            let k = typed::<Kustomization>(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            out.push((path, k));
        }
    }
    Ok(out)
}

#[test]
fn every_manifest_parses_into_its_typed_object_without_unknown_fields() -> anyhow::Result<()> {
    let files = manifest_files()?;
    assert!(files.len() >= 15, "expected the base, overlay and optional manifests, found {files:?}");
    let mut failures = Vec::new();
    let mut kinds = BTreeSet::new();
    for path in &files {
        let docs = documents(path)?;
        if docs.is_empty() {
            failures.push(format!("{}: no document", path.display()));
        }
        for (i, doc) in docs.iter().enumerate() {
            if is_patch(path)? {
                continue; // checked merged into its target below
            }
            kinds.insert(doc.get("kind").and_then(Value::as_str).unwrap_or("").to_owned());
            if let Err(e) = check_document(doc) {
                failures.push(format!("{} document {i}: {e}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "invalid manifests:\n{}", failures.join("\n"));
    for expected in ["DaemonSet", "Deployment", "CronJob", "KafkaTopic", "NetworkPolicy", "Secret", "ScaledObject"] {
        assert!(kinds.contains(expected), "no {expected} among the manifests: {kinds:?}");
    }
    Ok(())
}

/// Whether some kustomization lists `path` under `patches:`.
fn is_patch(path: &Path) -> anyhow::Result<bool> {
    for (k_path, k) in kustomizations()? {
        let dir = k_path.parent().context("kustomization without a folder")?;
        if k.patches.iter().any(|p| dir.join(&p.path) == path) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every document of the files a kustomization pulls in, recursively (no patches).
fn resources_of(dir: &Path, out: &mut Vec<(PathBuf, Value)>) -> anyhow::Result<()> {
    let k_path = dir.join("kustomization.yaml");
    let doc = documents(&k_path)?.into_iter().next().context("empty kustomization")?;
    let k = typed::<Kustomization>(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", k_path.display()))?;
    for r in &k.resources {
        let p = dir.join(r);
        if p.is_dir() {
            resources_of(&p, out)?;
        } else {
            for d in documents(&p)? {
                out.push((p.clone(), d));
            }
        }
    }
    Ok(())
}

#[test]
fn overlay_patches_yield_valid_objects() -> anyhow::Result<()> {
    let mut patched = 0;
    for (k_path, k) in kustomizations()? {
        let dir = k_path.parent().context("kustomization without a folder")?;
        if k.patches.is_empty() {
            continue;
        }
        let mut resources = Vec::new();
        resources_of(dir, &mut resources)?;
        for p in &k.patches {
            let patch_path = dir.join(&p.path);
            for patch in documents(&patch_path)? {
                let key = |v: &Value| (v.get("kind").cloned(), v.pointer("/metadata/name").cloned());
                let (_, target) = resources
                    .iter_mut()
                    .find(|(_, r)| key(r) == key(&patch))
                    .with_context(|| format!("{}: patch matches no resource", patch_path.display()))?;
                merge_patch(target, &patch);
                check_document(target).map_err(|e| anyhow::anyhow!("{} applied: {e}", patch_path.display()))?;
                patched += 1;
            }
        }
    }
    assert!(patched > 0, "the example overlay patches nothing");
    Ok(())
}

#[test]
fn kustomizations_list_existing_files_and_every_manifest() -> anyhow::Result<()> {
    let mut listed = BTreeSet::new();
    let mut missing = Vec::new();
    for (k_path, k) in kustomizations()? {
        let dir = k_path.parent().context("kustomization without a folder")?;
        listed.insert(k_path.clone());
        for r in k.resources.iter().chain(k.patches.iter().map(|p| &p.path)) {
            let p = dir.join(r);
            if p.is_dir() {
                if !p.join("kustomization.yaml").is_file() {
                    missing.push(format!("{}: {r} is a folder without kustomization.yaml", k_path.display()));
                }
            } else if p.is_file() {
                listed.insert(p.canonicalize()?);
            } else {
                missing.push(format!("{}: {r} does not exist", k_path.display()));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    let listed: BTreeSet<PathBuf> = listed.iter().map(|p| p.canonicalize()).collect::<Result<_, _>>()?;
    let unlisted: Vec<_> = manifest_files()?
        .into_iter()
        .filter(|f| f.canonicalize().map(|c| !listed.contains(&c)).unwrap_or(true))
        .collect();
    assert!(unlisted.is_empty(), "manifests no kustomization lists: {unlisted:?}");
    Ok(())
}

fn help(command: &str) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_augur")).args([command, "--help"]).output()?;
    if !out.status.success() {
        bail!("augur {command} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn container_flags_and_env_exist_in_the_augur_command() -> anyhow::Result<()> {
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in manifest_files()? {
        for doc in documents(&path)? {
            let Ok(Some(workload)) = check_document(&doc) else { continue };
            for c in workload.containers {
                let args = c.args.unwrap_or_default();
                let command =
                    args.first().with_context(|| format!("{}: container {} has no args", path.display(), c.name))?;
                let help = help(command)?;
                let words: BTreeSet<&str> = help.split_whitespace().collect();
                let env: BTreeMap<String, bool> =
                    c.env.unwrap_or_default().into_iter().map(|e| (e.name, false)).collect();
                let mut env = env;
                for arg in &args[1..] {
                    let flag = arg.split('=').next().unwrap_or(arg);
                    if !flag.starts_with("--") || !words.contains(flag) {
                        failures.push(format!("{}: augur {command} has no flag {flag}", path.display()));
                    }
                    checked += 1;
                    // augur refuses a pass-through property that one of its own
                    // settings, given here by env, sets too.
                    if let Some(property) = arg.strip_prefix("--librdkafka=").and_then(|kv| kv.split('=').next()) {
                        for s in augur::kafka::security::SETTINGS {
                            if s.properties.contains(&property) && env.contains_key(s.env) {
                                failures.push(format!(
                                    "{}: {arg} and env {} both set {property}",
                                    path.display(),
                                    s.env
                                ));
                            }
                        }
                    }
                    // $(VAR) is expanded by Kubernetes from the container's env.
                    for var in arg.split("$(").skip(1).filter_map(|s| s.split(')').next()) {
                        match env.get_mut(var) {
                            Some(used) => *used = true,
                            None => failures.push(format!("{}: {arg} uses $({var}), not in env", path.display())),
                        }
                    }
                }
                // An env var no arg uses must be one augur reads itself.
                for (name, used) in env {
                    // A secret's value is hidden: `[env: NAME]` instead of `[env: NAME=...]`.
                    let read = help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"));
                    if !used && !read {
                        failures.push(format!("{}: augur {command} reads no env {name}", path.display()));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 20, "only {checked} flags and env vars checked");
    Ok(())
}

/// The actuator's ClusterRole grants exactly what its kubernetes backend uses: every
/// (API group, resource, verb) of `augur::actuate::kubernetes::RBAC`, and nothing more.
#[test]
fn the_actuator_role_grants_exactly_the_verbs_its_backend_uses() -> anyhow::Result<()> {
    let path = k8s_dir().join("base/actuate/rbac.yaml");
    let mut granted = BTreeSet::new();
    let mut roles = 0;
    for doc in documents(&path)? {
        if doc.get("kind").and_then(Value::as_str) != Some("ClusterRole") {
            continue;
        }
        roles += 1;
        let role: rbac::v1::ClusterRole = typed(&doc).map_err(anyhow::Error::msg)?;
        for rule in role.rules.unwrap_or_default() {
            for group in rule.api_groups.clone().unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        anyhow::ensure!(verb != "*" && resource != "*", "{}: wildcard in {rule:?}", path.display());
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    anyhow::ensure!(roles == 1, "{}: expected one ClusterRole, found {roles}", path.display());
    let used: BTreeSet<(String, String, String)> = augur::actuate::kubernetes::RBAC
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&used).collect();
    anyhow::ensure!(missing.is_empty(), "the backend uses verbs the ClusterRole does not grant: {missing:?}");
    anyhow::ensure!(extra.is_empty(), "the ClusterRole grants verbs the backend never uses: {extra:?}");
    Ok(())
}

#[test]
fn the_check_rejects_unknown_fields_and_wrong_types() {
    let deployment = |container: Value| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [container]}}}
        })
    };
    assert!(check_document(&deployment(serde_json::json!({"name": "c", "args": ["detect"]}))).is_ok());
    let err = check_document(&deployment(serde_json::json!({"name": "c", "argz": ["detect"]})))
        .err()
        .expect("an unknown field must fail");
    assert!(err.contains("spec.template.spec.containers.0.argz"), "{err}");
    let err = check_document(&deployment(serde_json::json!({"name": "c", "args": "detect"})))
        .err()
        .expect("a string for a list must fail");
    assert!(err.contains("containers[0].args"), "{err}");
    let topic = serde_json::json!({
        "apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic", "metadata": {"name": "t"},
        "spec": {"partitions": 1, "replicas": 1, "retention": "1d"}
    });
    assert!(check_document(&topic).is_err(), "an unknown KafkaTopic field must fail");
}
