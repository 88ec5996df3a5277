//! Decision: one alert in, its adjustments out.
//!
//! In: an [`Alert`] and the policy of its application type. Out: zero or more
//! [`Adjustment`]s, in a fixed order (resize, scale-out, shed, migrate, notify).
//! Guarantee: a pure function of the alert and the policies: the same alert gives the
//! same adjustments byte for byte, with ids `{alert_id}/{action}` and event time the
//! alert's window end, so a replayed alert decides exactly what it decided before.
//!
//! How the parts combine:
//! - the anomaly score's tier (rounded, see [`tiers::tier_of_score`]) gives the seed's
//!   CPU and memory factors, a notification at tier 3, and at tier 3 a shed of the
//!   file's `tiers.shed_fraction` for non-critical functions when that is above 0;
//! - a matched signature's rule, scaled by the confidence `c` (held within 0..1; `NaN`
//!   counts as 0), gives pre-allocation factors `1 + buffer × c`, a scale-out of
//!   `ceil(scale_out_max × c)` replicas, a shed of `shed_max × c` (non-critical
//!   functions only) and a migration of `migrate_max × c` of the non-critical work;
//!   nothing below the rule's `min_confidence`;
//! - when both give a resize, they merge into one RESIZE with the larger factor per
//!   resource (the two answer the same threat; applying both would compound them), and
//!   when both give a shed, the larger fraction;
//! - `offline` and `recovered` alerts give nothing: an instance that stopped reporting
//!   cannot be resized on evidence, and one that came back needs nothing.

use crate::codec::{Action, Adjustment, Alert, AlertKind};

use super::file::{PolicyFile, Rule};
use super::tiers;
use super::Policies;

impl Policies {
    /// The adjustments one alert calls for; see the module docs for how.
    pub fn decide(&self, alert: &Alert) -> Vec<Adjustment> {
        self.decide_shifted(alert, 0.0)
    }

    /// [`Self::decide`] with the tier boundaries of the alert's application type moved
    /// up by `shift` points (down if negative), as the feedback loop tuned them: the
    /// tier is that of `score − shift`.
    pub fn decide_shifted(&self, alert: &Alert, shift: f64) -> Vec<Adjustment> {
        if matches!(alert.kind, AlertKind::Offline | AlertKind::Recovered) {
            return Vec::new();
        }
        let policy = self.policy_or_default(&alert.app_type);
        decide(&policy, alert, shift)
    }
}

/// What one source (the tier or the signature rule) asks for.
#[derive(Debug)]
struct Ask {
    cpu: f64,
    memory: f64,
    replicas: i32,
    shed: f64,
    migrate: f64,
}

impl Ask {
    /// Asks for no change: factors of 1, nothing else.
    const NOTHING: Self = Self { cpu: 1.0, memory: 1.0, replicas: 0, shed: 0.0, migrate: 0.0 };
}

fn decide(policy: &PolicyFile, alert: &Alert, shift: f64) -> Vec<Adjustment> {
    let critical = policy.function(&alert.function).critical;
    let score = alert.anomaly_score.filter(|s| !s.is_nan());
    let tier = score.and_then(|s| tiers::tier_of_score(s - shift)).unwrap_or(0);
    let t = tiers::response(tier);
    let confidence = if alert.confidence.is_nan() { 0.0 } else { alert.confidence.clamp(0.0, 1.0) };

    let tier_ask = Ask {
        cpu: t.cpu_factor,
        memory: t.memory_factor,
        shed: if t.consider_shedding && !critical { policy.tiers.shed_fraction } else { 0.0 },
        ..Ask::NOTHING
    };
    let tier_reason = score.map(|s| match shift {
        0.0 => format!("tier {tier} (score {s:.1} in {})", tiers::range(tier)),
        _ => format!("tier {tier} (score {s:.1}, boundaries tuned by {shift:+.0}, {} before)", tiers::range(tier)),
    });

    let matched = match (alert.kind, &alert.signature) {
        (AlertKind::Signature, Some(sig)) => policy.rule(sig).map(|(key, rule)| (sig.as_str(), key, rule)),
        _ => None,
    };
    let (rule_ask, rule_reason) = match matched {
        Some((sig, key, rule)) if confidence > 0.0 && confidence >= rule.min_confidence => (
            scaled(rule, confidence, critical),
            Some(format!("signature {sig} (rule {key:?}, confidence {confidence:.3})")),
        ),
        _ => (Ask::NOTHING, None),
    };
    if t.log {
        tracing::info!(
            alert = %alert.id,
            tier,
            score = score.unwrap_or(0.0),
            signature = alert.signature.as_deref().unwrap_or("-"),
            "anomaly tier logged"
        );
    }

    let because = |tier_part: bool, rule_part: bool| -> String {
        let parts: Vec<&str> = [
            tier_part.then_some(tier_reason.as_deref()).flatten(),
            rule_part.then_some(rule_reason.as_deref()).flatten(),
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join("; ")
    };
    let make = |action: Action, name: &str, detail: String, from: String| Adjustment {
        id: format!("{}/{name}", alert.id),
        alert_id: alert.id.clone(),
        instance_id: alert.instance_id.clone(),
        app_type: alert.app_type.clone(),
        function: alert.function.clone(),
        action,
        cpu_factor: 1.0,
        memory_factor: 1.0,
        replicas_delta: 0,
        shed_fraction: 0.0,
        tier: i32::from(tier),
        reason: format!("{detail}, from {from}"),
        dry_run: policy.dry_run,
        event_time_ms: alert.window_end_ms,
    };

    let mut out = Vec::new();
    let cpu = tier_ask.cpu.max(rule_ask.cpu);
    let memory = tier_ask.memory.max(rule_ask.memory);
    if cpu > 1.0 || memory > 1.0 {
        let from_tier = tier_ask.cpu > 1.0 || tier_ask.memory > 1.0;
        let from_rule = rule_ask.cpu > 1.0 || rule_ask.memory > 1.0;
        let merged = if from_tier && from_rule { " (larger factor per resource of tier and signature)" } else { "" };
        let log = if t.log { ", event logged" } else { "" };
        out.push(Adjustment {
            cpu_factor: cpu,
            memory_factor: memory,
            ..make(
                Action::Resize,
                "resize",
                format!("resize cpu ×{cpu:.3}, memory ×{memory:.3}{merged}{log}"),
                because(from_tier, from_rule),
            )
        });
    }
    if rule_ask.replicas > 0 {
        let n = rule_ask.replicas;
        out.push(Adjustment {
            replicas_delta: n,
            ..make(Action::ScaleOut, "scale-out", format!("scale out by {n} replicas"), because(false, true))
        });
    }
    let shed = tier_ask.shed.max(rule_ask.shed);
    if shed > 0.0 {
        let from = because(tier_ask.shed > 0.0, rule_ask.shed > 0.0);
        out.push(Adjustment {
            shed_fraction: shed,
            ..make(Action::Shed, "shed", format!("shed {shed:.3} of new requests (non-critical function)"), from)
        });
    }
    if rule_ask.migrate > 0.0 {
        let m = rule_ask.migrate;
        out.push(Adjustment {
            shed_fraction: m,
            ..make(Action::Migrate, "migrate", format!("migrate {m:.3} of non-critical work"), because(false, true))
        });
    }
    if t.notify {
        out.push(make(Action::Notify, "notify", "notify operations".to_owned(), because(true, rule_reason.is_some())));
    }
    out
}

/// A rule's ask at a confidence `c` in (0, 1].
fn scaled(rule: &Rule, c: f64, critical: bool) -> Ask {
    Ask {
        cpu: 1.0 + rule.cpu_buffer * c,
        memory: 1.0 + rule.memory_buffer * c,
        // ceil: any confidence that passed the rule's floor adds at least one replica.
        replicas: (f64::from(rule.scale_out_max) * c).ceil() as i32,
        shed: if critical { 0.0 } else { rule.shed_max * c },
        migrate: rule.migrate_max * c,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
