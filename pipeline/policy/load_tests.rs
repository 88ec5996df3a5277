use std::path::Path;

use super::*;

const GOOD: &str = r#"
app_type = "web"

[guardrails]
cpu_floor = "250m"
cpu_cap = "8"
memory_cap = "8Gi"

[functions.frontend]
critical = false

[rules.memory_leak]
memory_buffer = 0.4
"#;

fn invalid(text: &str) -> (usize, String, String, String) {
    match parse(Path::new("policies/web.toml"), text) {
        Err(e @ PolicyError::Invalid { .. }) => {
            let shown = e.to_string();
            let PolicyError::Invalid { line, field, message, .. } = e else { unreachable!() };
            (line, field, message, shown)
        }
        other => panic!("expected an invalid-field error, got {other:?}"),
    }
}

#[test]
fn a_good_file_parses_with_its_units() {
    let p = parse(Path::new("web.toml"), GOOD).expect("parses");
    assert_eq!(p.app_type, "web");
    assert_eq!(p.guardrails.cpu_floor.0, 250);
    assert_eq!(p.guardrails.cpu_cap.0, 8000);
    assert_eq!(p.guardrails.memory_cap.0, 8 << 30);
    assert!(!p.function("frontend").critical);
    assert_eq!(p.rules["memory_leak"].memory_buffer, 0.4);
}

#[test]
fn an_unknown_field_names_file_line_and_field() {
    let text = GOOD.replace("memory_buffer = 0.4", "memory_bufer = 0.4");
    let (line, field, message, shown) = invalid(&text);
    assert_eq!(line, 13);
    assert!(field.contains("rules.memory_leak"), "{field}");
    assert!(message.contains("unknown field `memory_bufer`"), "{message}");
    assert!(shown.starts_with("policies/web.toml:13: "), "{shown}");
}

#[test]
fn a_wrong_type_names_file_line_and_field() {
    let text = GOOD.replace("critical = false", "critical = \"no\"");
    let (line, field, message, shown) = invalid(&text);
    assert_eq!((line, field.as_str()), (10, "functions.frontend.critical"));
    assert!(message.contains("invalid type"), "{message}");
    assert!(shown.starts_with("policies/web.toml:10: functions.frontend.critical: "), "{shown}");
}

#[test]
fn a_bad_quantity_names_file_line_and_field() {
    let text = GOOD.replace("cpu_cap = \"8\"", "cpu_cap = \"8 cores\"");
    let (line, field, message, _) = invalid(&text);
    assert_eq!((line, field.as_str()), (6, "guardrails.cpu_cap"));
    assert!(message.contains("not a CPU quantity"), "{message}");
}

#[test]
fn an_out_of_range_value_names_file_line_and_field() {
    let text = GOOD.replace("memory_buffer = 0.4", "memory_buffer = -0.4");
    let (line, field, message, shown) = invalid(&text);
    assert_eq!((line, field.as_str()), (13, "rules.memory_leak.memory_buffer"));
    assert!(message.contains("-0.4 is out of range"), "{message}");
    assert!(shown.starts_with("policies/web.toml:13: rules.memory_leak.memory_buffer: "), "{shown}");
}

#[test]
fn a_cap_below_its_floor_names_the_cap() {
    let text = GOOD.replace("cpu_cap = \"8\"", "cpu_cap = \"200m\"");
    let (line, field, message, _) = invalid(&text);
    assert_eq!((line, field.as_str()), (6, "guardrails.cpu_cap"));
    assert_eq!(message, "200m is below cpu_floor 250m");
}

#[test]
fn a_fraction_past_one_is_refused() {
    let text = format!("{GOOD}\n[tiers]\nshed_fraction = 1.5\n");
    let (line, field, _, _) = invalid(&text);
    assert_eq!((line, field.as_str()), (16, "tiers.shed_fraction"));
}

#[test]
fn a_missing_app_type_and_a_syntax_error_are_reported() {
    let (_, field, message, _) = invalid("dry_run = true\n");
    assert!(message.contains("app_type"), "{field}: {message}");
    let (line, _, _, _) = invalid("app_type = \"web\"\n[guardrails\n");
    assert_eq!(line, 2);
}

#[test]
fn duplicate_app_types_across_files_name_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.toml"), GOOD).expect("write");
    std::fs::write(dir.path().join("b.toml"), format!("# copy\n{GOOD}")).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a policy").expect("write");
    let err = Policies::load(&[dir.path().to_owned()]).expect_err("duplicate");
    let shown = err.to_string();
    assert!(matches!(err, PolicyError::DuplicateAppType { line: 3, .. }), "{shown}");
    assert!(shown.contains("b.toml:3: app_type: \"web\" is already defined in") && shown.contains("a.toml"), "{shown}");
}

#[test]
fn files_and_directories_load_and_empty_ones_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = Policies::load(&[dir.path().to_owned()]).expect_err("empty");
    assert!(matches!(err, PolicyError::Empty { .. }), "{err}");
    let file = dir.path().join("web.toml");
    std::fs::write(&file, GOOD).expect("write");
    let p = Policies::load(std::slice::from_ref(&file)).expect("loads");
    assert_eq!(p.app_types().collect::<Vec<_>>(), ["web"]);
    assert_eq!(p.source("web"), Some(file.as_path()));
    let missing = Policies::load(&[dir.path().join("nope.toml")]).expect_err("missing");
    assert!(matches!(missing, PolicyError::Read { .. }) && missing.to_string().contains("nope.toml"), "{missing}");
}

#[test]
fn the_shipped_policies_load_for_every_simulated_app_type() {
    // `shipped()` reads $AUGUR_POLICIES when set; the test expects the tree's own files.
    let p = Policies::shipped().expect("shipped policies load (is AUGUR_POLICIES set elsewhere?)");
    assert_eq!(p.app_types().collect::<Vec<_>>(), ["cache", "database", "web", "worker"]);
    let functions = [
        ("web", &["checkout", "search", "frontend"][..]),
        ("database", &["primary", "replica"]),
        ("cache", &["session"]),
        ("worker", &["batch", "ingest"]),
    ];
    for (app, fs) in functions {
        let policy = p.get(app).expect("app type");
        for f in fs {
            assert!(policy.functions.contains_key(*f), "{app}/{f} missing");
        }
        for sig in ["memory_leak", "cpu_saturation", "latency_creep", "error_burst", "io_stall", "*"] {
            assert!(policy.rules.contains_key(sig), "{app}: no rule for {sig}");
        }
    }
    let web = p.get("web").expect("web");
    assert!(web.function("checkout").critical && !web.function("frontend").critical);
}

#[test]
fn a_shipped_decision_passes_the_shipped_guardrails() {
    use crate::codec::{Action, Alert, AlertKind};
    use crate::policy::plan::{Resources, Verdict};
    use crate::policy::{FleetLimits, Guardrails};
    let p = Policies::shipped().expect("shipped policies load");
    let alert = Alert {
        id: "web-frontend-0000/signature/web/*/latency_creep/600000".into(),
        instance_id: "web-frontend-0000".into(),
        app_type: "web".into(),
        function: "frontend".into(),
        kind: AlertKind::Signature,
        window_start_ms: 300_000,
        window_end_ms: 600_000,
        signature: Some("web/*/latency_creep".into()),
        confidence: 0.8,
        runner_up: None,
        runner_up_confidence: 0.0,
        explanation: Vec::new(),
        anomaly_score: Some(95.0),
        model_version: None,
        source_partition: 0,
        source_offset: 0,
    };
    let adjustments = p.decide(&alert);
    let kinds: Vec<Action> = adjustments.iter().map(|a| a.action).collect();
    assert_eq!(kinds, [Action::Resize, Action::ScaleOut, Action::Shed, Action::Notify]);
    let mut g = Guardrails::new(&p, FleetLimits::default());
    // The simulator's web frontend: 2 cores, 1 GiB, one replica.
    let current = Resources { cpu_millis: Some(2000), memory_bytes: Some(1 << 30), replicas: Some(1) };
    for a in &adjustments {
        match g.check(a, &current) {
            Verdict::Allow(plan) => g.remember(a, &plan),
            Verdict::Refuse(r) => panic!("{}: refused: {r}", a.id),
        }
    }
    // A second alert on the same instance a minute later meets the instance cooldown.
    let later = Alert {
        id: "web-frontend-0000/anomaly/tier-3/660000".into(),
        kind: AlertKind::Anomaly,
        signature: None,
        window_end_ms: 660_000,
        ..alert
    };
    let again = p.decide(&later);
    assert!(matches!(g.check(&again[0], &current), Verdict::Refuse(r) if r.starts_with("instance cooldown")));
}

#[test]
fn memory_takes_bytes_or_units_and_refuses_negatives_by_field() {
    let text = GOOD.replace("memory_cap = \"8Gi\"", "memory_cap = 1073741824");
    assert_eq!(parse(Path::new("web.toml"), &text).expect("parses").guardrails.memory_cap.0, 1 << 30);
    let (line, field, message, _) = invalid(&GOOD.replace("memory_cap = \"8Gi\"", "memory_cap = -1"));
    assert_eq!((line, field.as_str()), (7, "guardrails.memory_cap"));
    assert!(message.contains("negative"), "{message}");
}
