use std::collections::BTreeMap;

use super::*;
use crate::policy::file::FunctionPolicy;

fn alert(kind: AlertKind, score: Option<f64>, signature: Option<&str>, confidence: f64) -> Alert {
    Alert {
        id: "web-checkout-0001/signature/web/*/memory_leak/120000".to_owned(),
        instance_id: "web-checkout-0001".to_owned(),
        app_type: "web".to_owned(),
        function: "checkout".to_owned(),
        kind,
        window_start_ms: 60_000,
        window_end_ms: 120_000,
        signature: signature.map(str::to_owned),
        confidence,
        runner_up: None,
        runner_up_confidence: 0.0,
        explanation: Vec::new(),
        anomaly_score: score,
        model_version: None,
        source_partition: 0,
        source_offset: 7,
    }
}

fn web() -> PolicyFile {
    let mut p = PolicyFile::tiers_only("web");
    p.tiers.shed_fraction = 0.2;
    p.functions.insert("checkout".into(), FunctionPolicy { critical: true, expected_instances: Some(4) });
    p.functions.insert("frontend".into(), FunctionPolicy { critical: false, expected_instances: Some(8) });
    let rules: BTreeMap<String, Rule> = [
        ("memory_leak", Rule { memory_buffer: 0.4, cpu_buffer: 0.0, min_confidence: 0.5, ..Rule::default() }),
        ("cpu_saturation", Rule { cpu_buffer: 0.5, scale_out_max: 3, ..Rule::default() }),
        ("latency_creep", Rule { shed_max: 0.3, scale_out_max: 2, ..Rule::default() }),
        ("io_stall", Rule { migrate_max: 0.5, ..Rule::default() }),
        ("*", Rule { cpu_buffer: 0.1, memory_buffer: 0.1, ..Rule::default() }),
    ]
    .into_iter()
    .map(|(k, r)| (k.to_owned(), r))
    .collect();
    p.rules = rules;
    p
}

fn policies() -> Policies {
    Policies::from_files([web()])
}

fn actions(adjustments: &[Adjustment]) -> Vec<Action> {
    adjustments.iter().map(|a| a.action).collect()
}

#[test]
fn tier_one_resizes_by_the_seed_factors_and_nothing_else() {
    let out = policies().decide(&alert(AlertKind::Anomaly, Some(50.0), None, 0.5));
    assert_eq!(actions(&out), [Action::Resize]);
    assert_eq!((out[0].cpu_factor, out[0].memory_factor), (1.10, 1.05));
    assert_eq!(out[0].tier, 1);
    assert_eq!(out[0].id, format!("{}/resize", out[0].alert_id));
    assert_eq!(out[0].event_time_ms, 120_000);
    assert!(out[0].reason.contains("tier 1") && out[0].reason.contains("score 50.0"), "{}", out[0].reason);
}

#[test]
fn tier_zero_and_no_signature_decide_nothing() {
    assert!(policies().decide(&alert(AlertKind::Anomaly, Some(30.0), None, 0.3)).is_empty());
    assert!(policies().decide(&alert(AlertKind::Anomaly, None, None, 0.0)).is_empty());
    assert!(policies().decide(&alert(AlertKind::Anomaly, Some(f64::NAN), None, 0.0)).is_empty());
}

#[test]
fn tier_three_notifies_and_sheds_only_non_critical_functions() {
    let critical = policies().decide(&alert(AlertKind::Anomaly, Some(95.0), None, 0.95));
    assert_eq!(actions(&critical), [Action::Resize, Action::Notify]);
    assert_eq!((critical[0].cpu_factor, critical[0].memory_factor), (1.50, 1.30));
    let mut a = alert(AlertKind::Anomaly, Some(95.0), None, 0.95);
    a.function = "frontend".to_owned();
    let out = policies().decide(&a);
    assert_eq!(actions(&out), [Action::Resize, Action::Shed, Action::Notify]);
    assert_eq!(out[1].shed_fraction, 0.2);
    assert_eq!(out[2].id, format!("{}/notify", a.id));
}

#[test]
fn tier_three_shedding_is_off_unless_the_file_enables_it() {
    let mut p = web();
    p.tiers.shed_fraction = 0.0;
    let mut a = alert(AlertKind::Anomaly, Some(99.0), None, 0.99);
    a.function = "frontend".to_owned();
    assert_eq!(actions(&Policies::from_files([p]).decide(&a)), [Action::Resize, Action::Notify]);
}

#[test]
fn signature_pre_allocation_scales_with_confidence() {
    let out = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/memory_leak"), 0.75));
    assert_eq!(actions(&out), [Action::Resize]);
    assert_eq!(out[0].cpu_factor, 1.0);
    assert!((out[0].memory_factor - 1.3).abs() < 1e-12, "1 + 0.4 × 0.75, got {}", out[0].memory_factor);
    assert_eq!(out[0].tier, 0);
    assert!(out[0].reason.contains("rule \"memory_leak\"") && out[0].reason.contains("0.750"), "{}", out[0].reason);
}

#[test]
fn below_min_confidence_a_rule_does_nothing() {
    assert!(policies().decide(&alert(AlertKind::Signature, None, Some("web/*/memory_leak"), 0.49)).is_empty());
}

#[test]
fn scale_out_rounds_the_scaled_step_up() {
    let out = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/cpu_saturation"), 0.4));
    assert_eq!(actions(&out), [Action::Resize, Action::ScaleOut]);
    assert_eq!(out[1].replicas_delta, 2, "ceil(3 × 0.4)");
    let full = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/cpu_saturation"), 1.0));
    assert_eq!(full[1].replicas_delta, 3);
}

#[test]
fn signature_shedding_skips_critical_functions() {
    let critical = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/latency_creep"), 0.5));
    assert_eq!(actions(&critical), [Action::ScaleOut]);
    let mut a = alert(AlertKind::Signature, None, Some("web/*/latency_creep"), 0.5);
    a.function = "frontend".to_owned();
    let out = policies().decide(&a);
    assert_eq!(actions(&out), [Action::ScaleOut, Action::Shed]);
    assert!((out[1].shed_fraction - 0.15).abs() < 1e-12);
}

#[test]
fn migration_carries_its_fraction_in_shed_fraction() {
    let out = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/io_stall"), 0.8));
    assert_eq!(actions(&out), [Action::Migrate]);
    assert!((out[0].shed_fraction - 0.4).abs() < 1e-12);
    assert_eq!(out[0].id, format!("{}/migrate", out[0].alert_id));
}

#[test]
fn unknown_signatures_fall_back_to_the_star_rule() {
    let out = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/error_burst"), 1.0));
    assert_eq!(actions(&out), [Action::Resize]);
    assert!((out[0].cpu_factor - 1.1).abs() < 1e-12 && (out[0].memory_factor - 1.1).abs() < 1e-12);
    assert!(out[0].reason.contains("rule \"*\""), "{}", out[0].reason);
}

#[test]
fn tier_and_signature_merge_into_one_resize_with_the_larger_factor_each() {
    // Tier 2: cpu 1.25, memory 1.15; memory_leak at 0.9: memory 1.36, cpu 1.0.
    let out = policies().decide(&alert(AlertKind::Signature, Some(80.0), Some("web/*/memory_leak"), 0.9));
    assert_eq!(actions(&out), [Action::Resize]);
    assert_eq!(out[0].cpu_factor, 1.25);
    assert!((out[0].memory_factor - 1.36).abs() < 1e-12);
    assert_eq!(out[0].tier, 2);
    for part in ["tier 2", "memory_leak", "larger factor", "event logged"] {
        assert!(out[0].reason.contains(part), "{part:?} missing in {}", out[0].reason);
    }
}

#[test]
fn offline_and_recovered_alerts_decide_nothing() {
    for kind in [AlertKind::Offline, AlertKind::Recovered] {
        assert!(policies().decide(&alert(kind, Some(99.0), Some("web/*/memory_leak"), 1.0)).is_empty());
    }
}

#[test]
fn anomaly_alerts_ignore_the_runner_up_signature() {
    // Anomaly alerts carry the best signature as runner-up only; they act by tier alone.
    let mut a = alert(AlertKind::Anomaly, Some(50.0), None, 0.5);
    a.runner_up = Some("web/*/cpu_saturation".into());
    assert_eq!(actions(&policies().decide(&a)), [Action::Resize]);
}

#[test]
fn out_of_range_confidence_is_held_and_nan_is_none() {
    let hi = policies().decide(&alert(AlertKind::Signature, None, Some("web/*/cpu_saturation"), 7.0));
    assert_eq!(hi[1].replicas_delta, 3);
    assert!(policies().decide(&alert(AlertKind::Signature, None, Some("web/*/cpu_saturation"), f64::NAN)).is_empty());
    assert!(policies().decide(&alert(AlertKind::Signature, None, Some("web/*/cpu_saturation"), -1.0)).is_empty());
}

#[test]
fn app_types_without_a_file_get_the_tiers_only() {
    let mut a = alert(AlertKind::Signature, Some(75.0), Some("batch/*/memory_leak"), 1.0);
    a.app_type = "batch".to_owned();
    let out = policies().decide(&a);
    assert_eq!(actions(&out), [Action::Resize]);
    assert_eq!((out[0].cpu_factor, out[0].memory_factor), (1.25, 1.15));
    assert!(!out[0].dry_run);
}

#[test]
fn dry_run_comes_from_the_file() {
    let mut p = web();
    p.dry_run = true;
    let out = Policies::from_files([p]).decide(&alert(AlertKind::Anomaly, Some(95.0), None, 0.95));
    assert!(!out.is_empty() && out.iter().all(|a| a.dry_run));
}

#[test]
fn the_same_alert_decides_the_same_bytes() {
    let a = alert(AlertKind::Signature, Some(93.0), Some("web/*/latency_creep"), 0.61);
    let codec = crate::codec::Codec::<Adjustment>::new();
    let encode =
        |adjs: Vec<Adjustment>| -> Vec<Vec<u8>> { adjs.iter().map(|x| codec.encode(x).expect("encode")).collect() };
    let first = encode(policies().decide(&a));
    assert!(!first.is_empty());
    assert_eq!(first, encode(policies().decide(&a.clone())));
    let ids: Vec<String> = policies().decide(&a).into_iter().map(|x| x.id).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "one id per action: {ids:?}");
    let unique = ids.clone();
    assert_eq!(ids, unique);
}
