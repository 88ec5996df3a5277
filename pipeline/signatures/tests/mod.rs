//! Unit tests of the signature database: validation, files, metric selection,
//! scoring and extraction, and the table on the embedded mock cluster.

mod extract;
mod file;
mod surges;
mod table;

use super::*;
use crate::codec::metric_names as m;
use crate::codec::{FailureSignature, Normalisation};
use crate::window::features;

/// A valid signature of 16 points: memory utilisation ramping up, error rate flat.
pub(super) fn signature(name: &str) -> FailureSignature {
    FailureSignature {
        name: name.into(),
        app_type: "web".into(),
        function: "*".into(),
        failure_kind: "memory_leak".into(),
        metrics: vec![features::MEMORY_UTILIZATION.into(), m::ERROR_RATE.into()],
        normalisation: vec![Normalisation::Level, Normalisation::Level],
        series: vec![(0..16).map(|t| f64::from(500 + 25 * t) / 1000.0).collect(), vec![0.01; 16]],
        interval_ms: 10_000,
        threshold: 0.8,
        lead_ms: 300_000,
        source: "test".into(),
    }
}

#[test]
fn key_is_app_type_function_name() {
    let mut s = signature("leak");
    assert_eq!(key(&s), "web/*/leak");
    s.function = "checkout".into();
    assert_eq!(key(&s), "web/checkout/leak");
}

#[test]
fn validation_errors_name_the_key_and_the_field() {
    assert_eq!(validate(&signature("ok")), Ok(()));
    type Break = fn(&mut FailureSignature);
    let cases: &[(&str, Break)] = &[
        ("name", |s| s.name = "a/b".into()),
        ("name", |s| s.name = " ".into()),
        ("app_type", |s| s.app_type = "web/x".into()),
        ("function", |s| s.function = String::new()),
        ("failure_kind", |s| s.failure_kind = String::new()),
        ("metrics", |s| s.metrics.clear()),
        ("metrics[1]", |s| s.metrics[1] = "cpu_utilisation".into()),
        ("metrics[1]", |s| s.metrics[1] = features::MEMORY_UTILIZATION.into()),
        ("normalisation", |s| {
            s.normalisation.pop();
        }),
        ("series", |s| {
            s.series.pop();
        }),
        ("series[0]", |s| s.series.iter_mut().for_each(|c| c.truncate(MIN_POINTS - 1))),
        ("series[1]", |s| s.series[1].push(0.0)),
        ("series[1][3]", |s| s.series[1][3] = f64::NAN),
        ("series[0][15]", |s| s.series[0][15] = f64::INFINITY),
        ("interval_ms", |s| s.interval_ms = 0),
        ("threshold", |s| s.threshold = 1.0),
        ("threshold", |s| s.threshold = 0.0),
        ("threshold", |s| s.threshold = f64::NAN),
        ("lead_ms", |s| s.lead_ms = -1),
    ];
    for (field, break_it) in cases {
        let mut s = signature("leak");
        break_it(&mut s);
        let e = validate(&s).expect_err(field);
        assert_eq!(e.field, *field, "{e}");
        let text = e.to_string();
        assert!(text.starts_with(&format!("signature {}: {field} ", key(&s))), "{text}");
    }
    // A signature may be as short as the minimum and carry any known metric.
    let mut s = signature("short");
    s.series.iter_mut().for_each(|c| c.truncate(MIN_POINTS));
    s.metrics[1] = m::DISK_BUSY.into();
    assert_eq!(validate(&s), Ok(()));
}

#[test]
fn embedded_starter_library_is_the_models_directory_and_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(starter::DIR);
    let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    on_disk.sort();
    let embedded: Vec<(String, String)> = starter::FILES.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    assert_eq!(
        embedded.iter().map(|e| &e.0).collect::<Vec<_>>(),
        on_disk.iter().map(|e| &e.0).collect::<Vec<_>>(),
        "starter.rs lists other files than {}: update the starter! list",
        dir.display()
    );
    assert!(embedded == on_disk, "an embedded starter file differs from the one on disk");
    let library = starter::library().unwrap();
    let from_disk = load_path(&dir).unwrap();
    assert_eq!(library.len(), from_disk.len());
    assert!(library.iter().zip(&from_disk).all(|(a, b)| a.signature == b.signature));
}

#[test]
fn times_and_durations_on_the_command_line() {
    use super::cli::{parse_duration_ms, parse_time};
    assert_eq!(parse_time("1714521600000"), Ok(1_714_521_600_000));
    assert_eq!(parse_time("2024-05-01T00:00:00Z"), Ok(1_714_521_600_000));
    assert_eq!(parse_time("2024-05-01T00:00:00.250Z"), Ok(1_714_521_600_250));
    assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    assert!(parse_time("").is_err());
    assert_eq!(parse_duration_ms("10m 40s"), Ok(640_000));
    assert!(parse_duration_ms("ten minutes").is_err());
}

#[test]
fn times_relative_to_the_start_of_the_command() {
    use super::cli::parse_time_at;
    use std::time::{Duration, UNIX_EPOCH};
    let now = UNIX_EPOCH + Duration::from_millis(1_714_521_600_000);
    assert_eq!(parse_time_at("now", now), Ok(1_714_521_600_000));
    assert_eq!(parse_time_at("now-24h", now), Ok(1_714_521_600_000 - 86_400_000));
    assert_eq!(parse_time_at("now - 90m", now), Ok(1_714_521_600_000 - 5_400_000));
    assert_eq!(parse_time_at("-1d 2h", now), Ok(1_714_521_600_000 - 93_600_000));
    // Absolute times do not depend on now.
    assert_eq!(parse_time_at("2024-05-01T00:00:00Z", UNIX_EPOCH), Ok(1_714_521_600_000));
    for bad in ["-24", "now+1h", "now-", "-", "nowish"] {
        let error = parse_time_at(bad, now).unwrap_err();
        assert!(error.contains("now-24h"), "{bad}: {error}");
    }
    assert!(parse_time_at("-1000000000000d", now).is_err(), "before the epoch");
}

#[test]
fn extract_defaults_are_the_detectors_window() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
    let parse = |args: &[&str]| Cli::try_parse_from(["augur"].iter().chain(args)).map(|c| c.command);
    let Ok(Command::Extract(a)) = parse(&["extract", "--instance", "web-1", "--until", "2024-05-01T00:00:00Z"]) else {
        panic!("extract did not parse");
    };
    let r = a.request();
    assert_eq!((r.until_ms, r.length_ms, r.step_ms, r.lead_ms), (1_714_521_600_000, 640_000, 10_000, 0));
    assert_eq!((r.baseline_ms, r.lookahead_ms, r.margin), (1_800_000, 3_600_000, 0.05));
    assert_eq!(r.points().unwrap(), super::extract::DEFAULT_POINTS);
    assert_eq!((r.metrics, r.threshold, r.function), (None, None, None));
    let Ok(Command::Extract(a)) = parse(&[
        "extract",
        "--instance",
        "i",
        "--until",
        "5",
        "--metrics",
        "cpu_utilization_ratio,error_rate_ratio",
        "--threshold",
        "0.8",
        "--function",
        "*",
    ]) else {
        panic!("extract did not parse");
    };
    assert_eq!(a.metrics.as_deref(), Some(&[m::CPU_UTILIZATION.to_owned(), m::ERROR_RATE.to_owned()][..]));
    assert_eq!((a.threshold, a.function.as_deref()), (Some(0.8), Some("*")));
    assert!(parse(&["extract", "--instance", "i", "--until", "5", "--threshold", "1.5"]).is_err());
    assert!(parse(&["delete"]).is_err(), "delete needs a key");
    assert!(matches!(parse(&["import"]), Ok(Command::Import(ImportArgs { path: None, .. }))));
}
