//! The policy file of one application type, as written in `policies/<app_type>.toml`.
//!
//! In: TOML text. Out: a [`PolicyFile`] with every omitted setting at its documented
//! default. Guarantee: unknown fields are refused (`deny_unknown_fields`), and
//! [`PolicyFile::validate`] names the field of every setting out of its range, so a
//! typo never silently turns a guardrail off.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The signature-rule key that applies when no rule names the matched signature.
pub const FALLBACK_RULE: &str = "*";

/// One application type's policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The application type (`web`, `database`, …) as telemetry and alerts name it.
    pub app_type: String,
    /// Decide and audit only; the actuator changes nothing for this application type.
    #[serde(default)]
    pub dry_run: bool,
    /// Options of the anomaly tiers.
    #[serde(default)]
    pub tiers: TierOptions,
    /// Bounds on every action for this application type.
    #[serde(default)]
    pub guardrails: GuardrailSettings,
    /// Per function: is it critical, how many instances it usually runs.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionPolicy>,
    /// Per signature name (`memory_leak`, …, or `"*"` for any other): what a match does.
    #[serde(default)]
    pub rules: BTreeMap<String, Rule>,
}

impl PolicyFile {
    /// The policy of an application type that has no file: the tiers only, default guardrails.
    pub fn tiers_only(app_type: &str) -> Self {
        Self {
            app_type: app_type.to_owned(),
            dry_run: false,
            tiers: TierOptions::default(),
            guardrails: GuardrailSettings::default(),
            functions: BTreeMap::new(),
            rules: BTreeMap::new(),
        }
    }

    /// The rule for a matched signature: its own, else `"*"`, else none. Alerts carry
    /// the signature's key (`web/*/memory_leak`); rules are looked up by the whole key
    /// first, then by its last segment, the signature's name, then by the name up to
    /// its first `-`: a variant of a kind (`cpu_saturation-fast`, or the default name
    /// `extract` gives, `memory_leak-web-checkout-0001`) acts as its kind does unless a
    /// rule names it. Kind names use `_`, never `-`.
    pub fn rule(&self, signature: &str) -> Option<(&str, &Rule)> {
        let name = signature.rsplit('/').next().unwrap_or(signature);
        let kind = name.split('-').next().unwrap_or(name);
        [signature, name, kind, FALLBACK_RULE]
            .into_iter()
            .find_map(|k| self.rules.get_key_value(k).map(|(k, r)| (k.as_str(), r)))
    }

    /// A function's policy; a function the file does not list is critical (never shed)
    /// with an unknown instance count, which is the safe reading of silence.
    pub fn function(&self, function: &str) -> FunctionPolicy {
        self.functions.get(function).cloned().unwrap_or_default()
    }

    /// Every range check, as (field path, message); empty when the file is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        let mut check = |ok: bool, path: String, msg: String| {
            if !ok {
                bad.push((path, msg));
            }
        };
        check(!self.app_type.trim().is_empty(), "app_type".into(), "must not be empty".into());
        let t = &self.tiers;
        check(fraction(t.shed_fraction), "tiers.shed_fraction".into(), range_msg(t.shed_fraction, "0..=1"));
        let g = &self.guardrails;
        check(g.cpu_floor.0 > 0, "guardrails.cpu_floor".into(), "must be above 0".into());
        check(g.memory_floor.0 > 0, "guardrails.memory_floor".into(), "must be above 0".into());
        check(
            g.cpu_cap.0 >= g.cpu_floor.0,
            "guardrails.cpu_cap".into(),
            format!("{} is below cpu_floor {}", g.cpu_cap, g.cpu_floor),
        );
        check(
            g.memory_cap.0 >= g.memory_floor.0,
            "guardrails.memory_cap".into(),
            format!("{} is below memory_floor {}", g.memory_cap, g.memory_floor),
        );
        for (name, v) in [("max_cpu_factor", g.max_cpu_factor), ("max_memory_factor", g.max_memory_factor)] {
            check(v.is_finite() && v >= 1.0, format!("guardrails.{name}"), range_msg(v, "1 or more"));
        }
        for (name, v) in [("max_shed_fraction", g.max_shed_fraction), ("max_migrate_fraction", g.max_migrate_fraction)]
        {
            check(fraction(v), format!("guardrails.{name}"), range_msg(v, "0..=1"));
        }
        check(g.max_replicas >= 1, "guardrails.max_replicas".into(), "must be 1 or more".into());
        check(
            g.max_workload_percent > 0.0 && g.max_workload_percent <= 100.0,
            "guardrails.max_workload_percent".into(),
            range_msg(g.max_workload_percent, "above 0 and at most 100"),
        );
        for (name, f) in &self.functions {
            if let Some(n) = f.expected_instances {
                check(n >= 1, format!("functions.{name}.expected_instances"), "must be 1 or more".into());
            }
        }
        for (name, r) in &self.rules {
            for (field, v) in [("cpu_buffer", r.cpu_buffer), ("memory_buffer", r.memory_buffer)] {
                // A buffer below 0 would shrink a threatened instance; above 10 is a typo.
                check(
                    v.is_finite() && (0.0..=10.0).contains(&v),
                    format!("rules.{name}.{field}"),
                    range_msg(v, "0..=10"),
                );
            }
            for (field, v) in
                [("shed_max", r.shed_max), ("migrate_max", r.migrate_max), ("min_confidence", r.min_confidence)]
            {
                check(fraction(v), format!("rules.{name}.{field}"), range_msg(v, "0..=1"));
            }
        }
        bad
    }
}

fn fraction(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

fn range_msg(v: f64, range: &str) -> String {
    format!("{v} is out of range: must be {range}")
}

/// Options of the anomaly tiers (their factors are the seed's and fixed).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TierOptions {
    /// Tier 3 (91–100) suspends this fraction 0..1 of new requests of non-critical
    /// functions; 0 (the default) leaves shedding off, as the seed only "considers" it.
    #[serde(default)]
    pub shed_fraction: f64,
}

/// One function of the application type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionPolicy {
    /// A critical function never sheds traffic; unlisted functions are critical.
    #[serde(default = "default_critical")]
    pub critical: bool,
    /// Instances the function usually runs, for the workload share guardrail when the
    /// backend does not know the replica count.
    #[serde(default)]
    pub expected_instances: Option<u32>,
}

impl Default for FunctionPolicy {
    fn default() -> Self {
        Self { critical: default_critical(), expected_instances: None }
    }
}

/// Safe by default: shedding needs an explicit `critical = false`.
const fn default_critical() -> bool {
    true
}

/// What a signature match does, each part scaled by the match's confidence `c` (0..1).
/// All parts default to 0: a rule does only what it names.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Below this confidence the rule does nothing.
    #[serde(default)]
    pub min_confidence: f64,
    /// Resource pre-allocation: CPU factor `1 + cpu_buffer × c`.
    #[serde(default)]
    pub cpu_buffer: f64,
    /// Resource pre-allocation: memory factor `1 + memory_buffer × c`.
    #[serde(default)]
    pub memory_buffer: f64,
    /// Scale-out for predicted load: `replicas_delta = ceil(scale_out_max × c)`.
    #[serde(default)]
    pub scale_out_max: u32,
    /// Traffic shedding, non-critical functions only: `shed_fraction = shed_max × c`.
    #[serde(default)]
    pub shed_max: f64,
    /// Selective migration of non-critical work: fraction moved `migrate_max × c`.
    #[serde(default)]
    pub migrate_max: f64,
}

/// Bounds on every action of one application type. Defaults are generous enough for
/// the simulated fleet's largest profile (8 cores, 16 GiB) and tight enough that a
/// runaway loop cannot take a node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSettings {
    /// Lowest CPU allocation a resize may set ("250m", "2").
    #[serde(default = "default_cpu_floor")]
    pub cpu_floor: Cpu,
    /// Highest CPU allocation a resize may set.
    #[serde(default = "default_cpu_cap")]
    pub cpu_cap: Cpu,
    /// Lowest memory allocation a resize may set ("512Mi", "8Gi", or bytes).
    #[serde(default = "default_memory_floor")]
    pub memory_floor: Memory,
    /// Highest memory allocation a resize may set.
    #[serde(default = "default_memory_cap")]
    pub memory_cap: Memory,
    /// Largest CPU factor of one resize; larger ones are clamped to it.
    #[serde(default = "default_max_factor")]
    pub max_cpu_factor: f64,
    /// Largest memory factor of one resize; larger ones are clamped to it.
    #[serde(default = "default_max_factor")]
    pub max_memory_factor: f64,
    /// Most replicas a scale-out may reach.
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Largest fraction of new requests one shed may turn away.
    #[serde(default = "default_max_shed_fraction")]
    pub max_shed_fraction: f64,
    /// Largest fraction of non-critical work one migration may move.
    #[serde(default = "default_max_migrate_fraction")]
    pub max_migrate_fraction: f64,
    /// No second action on one instance within this many seconds (of event time) of
    /// another decided from a different alert, unless the later is of a higher tier.
    #[serde(default = "default_instance_cooldown_s")]
    pub instance_cooldown_s: u64,
    /// No second action on one workload (app type + function) within this many seconds.
    #[serde(default = "default_workload_cooldown_s")]
    pub workload_cooldown_s: u64,
    /// At most this percentage of a workload's instances acted on within one instance
    /// cooldown (at least one instance is always allowed).
    #[serde(default = "default_max_workload_percent")]
    pub max_workload_percent: f64,
}

impl Default for GuardrailSettings {
    fn default() -> Self {
        Self {
            cpu_floor: default_cpu_floor(),
            cpu_cap: default_cpu_cap(),
            memory_floor: default_memory_floor(),
            memory_cap: default_memory_cap(),
            max_cpu_factor: default_max_factor(),
            max_memory_factor: default_max_factor(),
            max_replicas: default_max_replicas(),
            max_shed_fraction: default_max_shed_fraction(),
            max_migrate_fraction: default_max_migrate_fraction(),
            instance_cooldown_s: default_instance_cooldown_s(),
            workload_cooldown_s: default_workload_cooldown_s(),
            max_workload_percent: default_max_workload_percent(),
        }
    }
}

/// 100m: the simulator's smallest CPU limit, below which a process barely runs.
const fn default_cpu_floor() -> Cpu {
    Cpu(100)
}
/// 16 cores: twice the largest simulated profile (database primary, 8 cores).
const fn default_cpu_cap() -> Cpu {
    Cpu(16_000)
}
/// 64 MiB: the simulator's smallest memory limit.
const fn default_memory_floor() -> Memory {
    Memory(64 << 20)
}
/// 32 GiB: twice the largest simulated profile (database, 16 GiB).
const fn default_memory_cap() -> Memory {
    Memory(32 << 30)
}
/// 2: twice the allocation in one step is already more than the seed's top tier (×1.5).
const fn default_max_factor() -> f64 {
    2.0
}
/// 10 replicas: a scale-out may add capacity, not run away with the cluster.
const fn default_max_replicas() -> u32 {
    10
}
/// Half of the requests at most: the service keeps serving.
const fn default_max_shed_fraction() -> f64 {
    0.5
}
/// Most non-critical work may move; critical work never does.
const fn default_max_migrate_fraction() -> f64 {
    0.8
}
/// 5 minutes: long enough to see whether the last change helped before the next.
const fn default_instance_cooldown_s() -> u64 {
    300
}
/// 1 minute: one change per workload at a time while the fleet settles.
const fn default_workload_cooldown_s() -> u64 {
    60
}
/// A quarter of a workload at once, the usual rolling-update surge.
const fn default_max_workload_percent() -> f64 {
    25.0
}

/// A CPU quantity in millicores, written as Kubernetes writes it: "250m", "2", "1.5".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpu(pub u64);

/// A memory quantity in bytes: "512Mi", "8Gi", "1G", "1500k", or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_bytes(self.0, f)
    }
}

/// Bytes in the largest binary unit that divides them: 536870912 → "512Mi".
pub fn fmt_bytes(bytes: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return write!(f, "{}{unit}", bytes >> shift);
        }
    }
    write!(f, "{bytes}")
}

/// Parses "250m" / "2" / "0.5" into millicores. Hand-written: the Kubernetes quantity
/// crates parse into their own big-decimal types and bring a client along; this needs
/// two suffixes.
pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = match s.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (s, 1000.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a CPU quantity like \"250m\" or \"2\""))?;
    let millis = v * scale;
    if !millis.is_finite() || millis < 0.0 || millis > u64::MAX as f64 {
        return Err(format!("{s:?} is not a CPU quantity like \"250m\" or \"2\""));
    }
    Ok(millis.round() as u64)
}

/// Parses a memory quantity with Kubernetes' suffixes (binary Ki..Ei, decimal k..E).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a memory quantity like \"512Mi\" or \"8Gi\"");
    let units: [(&str, f64); 12] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, scale) = units.iter().find_map(|(u, m)| s.strip_suffix(u).map(|n| (n, *m))).unwrap_or((s, 1.0));
    let v: f64 = num.parse().map_err(|_| bad())?;
    let bytes = v * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cpu;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CPU quantity string like \"250m\" or \"2\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Cpu, E> {
                parse_cpu(s).map(Cpu).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory quantity like \"512Mi\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Memory, E> {
                parse_memory(s).map(Memory).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                Ok(Memory(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                u64::try_from(v).map(Memory).map_err(|_| E::custom(format!("{v} bytes is negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert!(parse_cpu("2 cores").is_err());
        assert!(parse_cpu("-1").is_err());
        assert!(parse_cpu("").is_err());
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("8Gi"), Ok(8 << 30));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1500k"), Ok(1_500_000));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert!(parse_memory("8 GB").is_err());
        assert!(parse_memory("-1Gi").is_err());
        assert_eq!(Memory(512 << 20).to_string(), "512Mi");
        assert_eq!(Memory(1000).to_string(), "1000");
        assert_eq!(Cpu(250).to_string(), "250m");
    }

    #[test]
    fn rules_are_found_by_key_then_name_then_fallback() {
        let mut p = PolicyFile::tiers_only("web");
        assert!(p.rule("web/*/memory_leak").is_none());
        p.rules.insert("*".into(), Rule { cpu_buffer: 0.1, ..Rule::default() });
        p.rules.insert("memory_leak".into(), Rule { memory_buffer: 0.3, ..Rule::default() });
        assert_eq!(p.rule("web/*/memory_leak").map(|r| r.0), Some("memory_leak"));
        assert_eq!(p.rule("memory_leak").map(|r| r.0), Some("memory_leak"));
        assert_eq!(p.rule("web/*/io_stall").map(|r| r.0), Some("*"));
        p.rules.insert("web/*/io_stall".into(), Rule::default());
        assert_eq!(p.rule("web/*/io_stall").map(|r| r.0), Some("web/*/io_stall"));
        // A variant of a kind takes its kind's rule, unless a rule names it.
        assert_eq!(p.rule("web/*/memory_leak-fast").map(|r| r.0), Some("memory_leak"));
        assert_eq!(p.rule("web/*/memory_leak-web-checkout-0001").map(|r| r.0), Some("memory_leak"));
        p.rules.insert("memory_leak-fast".into(), Rule::default());
        assert_eq!(p.rule("web/*/memory_leak-fast").map(|r| r.0), Some("memory_leak-fast"));
        assert_eq!(p.rule("web/*/io_stall-fast").map(|r| r.0), Some("*"));
    }

    #[test]
    fn unlisted_functions_are_critical() {
        let p = PolicyFile::tiers_only("web");
        assert!(p.function("checkout").critical);
        assert_eq!(p.function("checkout").expected_instances, None);
    }
}
