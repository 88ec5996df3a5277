//! Invalid command lines are refused up front with one line naming what is wrong.

mod common;

fn refused(args: &[&str]) -> String {
    let out = common::augur().args(args).output().unwrap();
    assert!(!out.status.success(), "augur {args:?} was accepted");
    assert_eq!(out.status.code(), Some(2), "augur {args:?}: usage errors exit 2");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "augur {args:?}: not one line: {stderr}");
    stderr
}

#[test]
fn unknown_subcommand_and_flag_are_named() {
    assert!(refused(&["frobnicate"]).contains("frobnicate"));
    assert!(refused(&["tail", "alerts", "--frob"]).contains("--frob"));
}

#[test]
fn tail_refuses_an_unknown_topic_role_and_a_bad_duration() {
    assert!(refused(&["tail", "nonsense"]).contains("nonsense"));
    assert!(refused(&["tail", "alerts", "--idle-exit", "soon"]).contains("--idle-exit"));
}

#[test]
fn librdkafka_pass_through_must_be_key_value() {
    assert!(refused(&["tail", "alerts", "--librdkafka", "novalue"]).contains("KEY=VALUE"));
}

/// The report's contract fields, which must be numbers.
const CONTRACT: [&str; 13] = [
    "injected",
    "predicted",
    "lead_time_median_s",
    "lead_time_p10_s",
    "holdout",
    "holdout_failed",
    "averted",
    "adjusted_failed",
    "false_alarms_per_100h",
    "adjustments_decided",
    "adjustments_applied",
    "adjustments_refused",
    "duplicate_effects",
];

fn demo_report(flags: &[&str], dir: &std::path::Path, name: &str) -> (serde_json::Value, String) {
    let report = dir.join(name);
    let out = common::augur()
        .args(["demo", "--instances", "12", "--duration", "2h", "--seed", "3", "--report"])
        .arg(&report)
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (r, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn demo_runs_the_closed_loop_on_the_embedded_cluster_reports_and_draws() {
    let dir = tempfile::tempdir().unwrap();
    let charts = dir.path().join("charts");
    let (r, stdout) = demo_report(&["--charts", charts.to_str().unwrap()], dir.path(), "report.json");
    assert_eq!(r["embedded_cluster"], true);
    assert_eq!(r["instances"], 12);
    for field in CONTRACT {
        assert!(r[field].is_number(), "{field} is not a number: {r}");
    }
    let produced = r["records_produced"].as_u64().unwrap();
    assert!(produced > 0);
    assert_eq!(r["records_detected"].as_u64(), Some(produced), "the detector processed every record");
    let starter = augur::signatures::starter::library().unwrap().len();
    assert_eq!(r["signatures"].as_u64(), Some(starter as u64), "the starter library is imported");
    let n = |f: &str| r[f].as_u64().unwrap_or_else(|| panic!("{f} in {r}"));
    assert!(n("injected") > 0 && n("predicted") > 0, "{r}");
    // Every crash is an instance going silent: the liveness detector sees each one.
    assert_eq!(r["crashes_detected_offline"].as_u64(), Some(n("happened")), "{r}");
    // Every adjustment decided ends in exactly one audited outcome.
    let outcomes = ["adjustments_applied", "adjustments_refused", "adjustments_held_out", "adjustments_failed"];
    assert_eq!(n("adjustments_decided"), outcomes.iter().map(|f| n(f)).sum::<u64>() + n("adjustments_duplicate"));
    assert_eq!(n("duplicate_effects"), 0);
    // The mitigation counts add up to the predictions they rest on.
    assert_eq!(n("holdout") + n("adjusted") + n("unadjusted"), n("predicted"), "{r}");
    assert_eq!(n("averted"), n("adjusted") - n("adjusted_failed"));
    assert_eq!(r["failures"].as_array().map(Vec::len), Some(n("injected") as usize));
    // One readable chart per failure kind that was injected.
    let kinds = r["by_kind"].as_object().unwrap();
    let drawn = r["charts"].as_array().unwrap();
    assert_eq!(drawn.len(), kinds.len(), "{r}");
    for path in drawn {
        let svg = std::fs::read_to_string(path.as_str().unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains("anomaly score"), "{path}");
    }
    assert!(stdout.contains("predicted before failure") && stdout.contains("averted"), "{stdout}");
}

#[test]
fn demo_gives_the_same_report_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = demo_report(&[], dir.path(), "a.json");
    let (mut b, _) = demo_report(&[], dir.path(), "b.json");
    for r in [&mut a, &mut b] {
        r.as_object_mut().unwrap().remove("wall_seconds");
    }
    assert_eq!(a, b);
}

#[test]
fn demo_feedback_brings_a_threshold_set_too_high_down_until_its_incidents_are_caught() {
    // Every instance gets an IO stall and none is adjusted, so every incident happens;
    // web's io_stall signature, set to 0.95, catches none of them at first.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("feedback.json");
    let out = common::augur()
        .args(["demo", "--instances", "12", "--duration", "4h", "--seed", "3", "--kinds", "io_stall"])
        .args(["--failure-fraction", "1", "--holdout", "1", "--threshold", "web/*/io_stall=0.95", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let feedback = &r["feedback"];
    assert!(feedback["misses"].as_u64().unwrap() > 0, "{feedback}");
    let tuned = feedback["tuned"].as_array().unwrap();
    let web = tuned
        .iter()
        .find(|t| t["key"] == "threshold/web/*/io_stall")
        .unwrap_or_else(|| panic!("web's io_stall threshold was never tuned: {feedback}"));
    let (floor, ceiling) = (web["floor"].as_f64().unwrap(), web["ceiling"].as_f64().unwrap());
    assert!(web["latest"].as_f64().unwrap() < 0.95, "{web}");
    for step in web["steps"].as_array().unwrap() {
        let v = step[1].as_f64().unwrap();
        assert!((floor..=ceiling).contains(&v), "step {v} outside [{floor}, {ceiling}]: {web}");
    }
    // The detector read the tuned value from the tuned topic and alerted under the
    // signature's own threshold of 0.95.
    assert!(r["caught_under_own_threshold"].as_u64().unwrap() >= 1, "{r}");
}

#[test]
fn demo_names_a_threshold_for_a_signature_that_does_not_exist() {
    let out = common::augur()
        .args(["demo", "--instances", "2", "--duration", "20m", "--threshold", "no_such_kind=0.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_kind") && stderr.contains("memory_leak"), "{stderr}");
    assert!(refused(&["demo", "--threshold", "memory_leak=2"]).contains("--threshold"));
}

#[test]
fn demo_refuses_an_unwritable_report_path_before_running() {
    let out = common::augur()
        .args(["demo", "--instances", "2", "--duration", "20m", "--report", "/nonexistent-dir/report.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-dir/report.json"), "{stderr}");
}

/// Runs augur; returns (exit code, stdout, stderr).
fn run(cmd: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn config_check_lists_every_error_of_a_bad_file_and_passes_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[detect]\nbatch_max = 0\nbogus = 1\n\n[kafka]\nsecurity_protocol = \"tls\"\n\n[actuate]\ndry_run = \"yes\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(common::augur().args(["config", "check"]).arg(&bad));
    assert_eq!(code, Some(1), "{stderr}");
    let b = bad.display();
    for expected in [
        format!("{b}:2: detect.batch_max: invalid value '0'"),
        format!("{b}:3: detect.bogus: unknown key"),
        format!("{b}:6: kafka.security_protocol: invalid value 'tls'"),
        format!("{b}:9: actuate.dry_run: expected true or false"),
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(&expected)), "no {expected:?} in:\n{stderr}");
    }
    assert!(stderr.starts_with("error: 4 errors in "), "{stderr}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "log_format = \"json\"\n[kafka]\ntopic_prefix = \"prod\"\n[detect]\nbatch_max = 10\n")
        .unwrap();
    let (code, stdout, stderr) = run(common::augur().args(["config", "check"]).arg(&good));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim_end(), format!("{}: OK (3 settings)", good.display()));

    let (code, _, stderr) = run(common::augur().args(["config", "check"]).arg(dir.path().join("missing.toml")));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot read deployment file") && stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn the_example_deployment_file_passes_the_check() {
    let example = common::repo_root().join("config/augur.example.toml");
    let (code, stdout, stderr) = run(common::augur().args(["config", "check"]).arg(&example));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(": OK ("), "{stdout}");
}

/// The topic prefix of a run shows in the error for an invalid one, which `tail`
/// reports before it connects anywhere: so each layer's value can be seen.
#[test]
fn a_deployment_setting_yields_to_the_environment_and_the_environment_to_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("augur.toml");
    std::fs::write(&file, "[kafka]\ntopic_prefix = \"from file!\"\n").unwrap();
    let prefix_in = |cmd: &mut std::process::Command| {
        let (code, _, stderr) = run(cmd);
        assert_eq!(code, Some(1), "{stderr}");
        let start = stderr.find("invalid topic prefix").unwrap_or_else(|| panic!("{stderr}"));
        stderr[start..].lines().next().unwrap().to_owned()
    };
    let tail = || {
        let mut c = common::augur();
        c.args(["tail", "alerts"]).env_remove("AUGUR_TOPIC_PREFIX").env_remove("AUGUR_CONFIG");
        c
    };
    assert!(prefix_in(tail().arg("--config").arg(&file)).contains("\"from file!\""));
    assert!(prefix_in(tail().arg(format!("--config={}", file.display()))).contains("\"from file!\""));
    assert!(prefix_in(tail().env("AUGUR_CONFIG", &file)).contains("\"from file!\""), "AUGUR_CONFIG names the file");
    let with_env = prefix_in(tail().arg("--config").arg(&file).env("AUGUR_TOPIC_PREFIX", "from env!"));
    assert!(with_env.contains("\"from env!\""), "{with_env}");
    let with_flag = prefix_in(
        tail().arg("--config").arg(&file).env("AUGUR_TOPIC_PREFIX", "from env!").args(["--topic-prefix", "from flag!"]),
    );
    assert!(with_flag.contains("\"from flag!\""), "{with_flag}");
}
