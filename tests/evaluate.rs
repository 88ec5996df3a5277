//! End-to-end checks of `augur evaluate` on the real public data in ../shared/data: the
//! NAB harness must reproduce NAB's published per-file scores for its Windowed Gaussian
//! detector, and the SMD harness must produce coherent metrics on a real machine.

use std::path::PathBuf;

use anyhow::{ensure, Context};
use augur::evaluate::{detector, nab, smd};

fn data(name: &str) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(name);
    ensure!(
        dir.is_dir(),
        "{} is missing: these tests need the public benchmark data in ../shared/data (see its README.md)",
        dir.display()
    );
    Ok(dir)
}

/// NAB's own scores file for Windowed Gaussian (results/windowedGaussian/
/// windowedGaussian_standard_scores.csv, threshold 1.0): file, score, TP rows, FP rows.
const PUBLISHED_STANDARD: [(&str, f64, usize, usize); 2] = [
    ("realTraffic/speed_7578.csv", 3.47059145681, 11, 1),
    ("realAdExchange/exchange-3_cpc_results.csv", 2.50266326119, 5, 1),
];

#[test]
fn nab_windowed_gaussian_reproduces_published_per_file_scores() -> anyhow::Result<()> {
    let dir = data("nab")?;
    let files: Vec<String> = PUBLISHED_STANDARD.iter().map(|(f, ..)| f.to_string()).collect();
    let corpus = nab::NabCorpus::load(&dir, &files)?;
    let wg = detector::find("windowed-gaussian")?;
    // At NAB's published threshold for this detector.
    let report = nab::evaluate(&corpus, &dir, wg, 42, Some(1.0), 2)?;
    let standard = &report.profiles[0];
    assert_eq!(standard.profile.name, "standard");
    for (file, score, _, fp_rows) in PUBLISHED_STANDARD {
        let (_, got) = standard.per_file.iter().find(|(f, _)| f == file).context("file scored")?;
        assert!((got.score - score).abs() < 1e-9, "{file}: {} vs NAB's {score}", got.score);
        assert_eq!(got.false_positive_rows, fp_rows, "{file}");
    }
    // Optimised over these two files, the normalised score is a proper NAB score.
    let optimised = nab::evaluate(&corpus, &dir, wg, 42, None, 2)?;
    for p in &optimised.profiles {
        assert!(p.score > 0.0 && p.score <= 100.0, "{}: {}", p.profile.name, p.score);
        assert!(p.raw >= standard.raw - 1e-9 || p.profile.name != "standard", "optimiser lost to a fixed threshold");
        assert_eq!(p.null, -(report.windows as f64) * p.profile.fn_, "null detector misses every window");
    }
    Ok(())
}

#[test]
fn smd_zscore_metrics_are_coherent_on_a_real_machine() -> anyhow::Result<()> {
    let dir = data("smd")?;
    let machines = smd::load(&dir, &["machine-3-3".to_string()])?;
    let zscore = detector::find("zscore")?;
    let report = smd::evaluate(&machines, &dir, zscore, 42, 0.995, 1)?;
    let m = &report.machines[0];
    assert_eq!(m.test_rows, machines[0].labels.len());
    let events = m.at_oracle_threshold.counts.events;
    ensure!(events > 0, "machine-3-3 has labelled events");
    // The oracle maximises point-wise F1, so no other threshold beats it.
    assert!(m.at_oracle_threshold.point.f1 >= m.at_train_threshold.point.f1);
    // Point adjustment never lowers recall; a detected event's delay lies inside it.
    for r in [&m.at_train_threshold, &m.at_oracle_threshold] {
        assert!(r.point_adjusted.recall >= r.point.recall);
        assert!(r.point.f1 > 0.0 && r.point.f1 <= 1.0, "{:?}", r.point);
    }
    // A z-score baseline finds something on SMD, far from perfect point-wise.
    assert!(m.at_oracle_threshold.point.f1 > 0.1 && m.at_oracle_threshold.point.f1 < 0.99);
    assert_eq!(report.pooled.at_oracle_threshold.counts, m.at_oracle_threshold.counts);
    Ok(())
}
