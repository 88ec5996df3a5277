//! `augur evaluate`: measures an anomaly detector on public labelled data, the
//! Numenta Anomaly Benchmark ([`nab`]) and the Server Machine Dataset ([`smd`]).
//!
//! In: a benchmark folder and the name of a detector from [`detector::DETECTORS`].
//! Out: a table on stdout (NAB: the normalised score per profile beside NAB's published
//! figure where there is one; SMD: point-wise, event-wise, delay and point-adjusted
//! metrics per machine and pooled) and, with `--report`, the same and the per-file or
//! per-machine detail as JSON. Guarantees: the same flags give the same numbers (seeded
//! detectors, order-independent parallelism); data folders, files and flags are checked
//! before any detector runs, and bad input is named by file, line and column.

pub mod baselines;
pub mod detector;
pub mod lstm;
pub mod nab;
pub mod series;
pub mod smd;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use detector::{DetectorError, DetectorSpec, Registration, SeriesDetector, DETECTORS};
pub use series::{LoadError, Series};

/// Flags of `augur evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub benchmark: Benchmark,
}

/// The benchmarks `augur evaluate` runs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Benchmark {
    /// Numenta Anomaly Benchmark: fit on each file's probationary 15%, score all rows,
    /// NAB's sweep and standard / low-FP / low-FN profiles.
    Nab(NabArgs),
    /// Server Machine Dataset: fit on train, score test; point-wise, event-wise, delay
    /// and point-adjusted metrics.
    Smd(SmdArgs),
}

/// Flags of `augur evaluate nab`.
#[derive(Debug, Clone, clap::Args)]
pub struct NabArgs {
    /// NAB folder (holding data/ and labels/), relative to the current directory.
    #[arg(long, value_name = "DIR", default_value = "../shared/data/nab")]
    pub data: PathBuf,
    /// Only this file, as named in the labels (e.g. realTweets/Twitter_volume_AAPL.csv);
    /// repeat for several. Default: every labelled file. Normalisation then covers just these.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
    /// Score every profile at this threshold instead of NAB's optimised one (e.g. to
    /// compare with a threshold NAB published in its config/thresholds.json).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of `augur evaluate smd`.
#[derive(Debug, Clone, clap::Args)]
pub struct SmdArgs {
    /// SMD folder (one machine-*/ folder per machine), relative to the current directory.
    #[arg(long, value_name = "DIR", default_value = "../shared/data/smd")]
    pub data: PathBuf,
    /// Only this machine (e.g. machine-1-6); repeat for several. Default: every machine.
    #[arg(long = "machine", value_name = "NAME")]
    pub machines: Vec<String>,
    /// The label-free threshold: flag test rows scoring above this quantile of the
    /// detector's scores on the train split (0 < Q <= 1).
    #[arg(long, value_name = "Q", default_value_t = 0.995, value_parser = parse_quantile)]
    pub train_quantile: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags both benchmarks take.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Detector to evaluate, by its registered name (windowed-gaussian, zscore, random,
    /// constant, and any added to the registry; an unknown name lists them all).
    #[arg(long, value_name = "NAME", default_value = "windowed-gaussian", value_parser = parse_detector)]
    pub detector: String,
    /// Also write the results, with per-file or per-machine detail, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Seed of every random draw a detector makes.
    #[arg(long, value_name = "S", default_value_t = 42)]
    pub seed: u64,
    /// Series scored at once (default: the machine's cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

fn parse_detector(name: &str) -> Result<String, detector::UnknownDetector> {
    detector::find(name).map(|r| r.name.to_owned())
}

fn parse_quantile(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(q) if q > 0.0 && q <= 1.0 => Ok(q),
        _ => Err(format!("{text:?} is not a quantile in (0, 1]")),
    }
}

/// Why an evaluation could not finish.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("{what} folder {given} (resolved to {resolved}) does not exist; pass --data DIR")]
    MissingData { what: &'static str, given: PathBuf, resolved: PathBuf },
    #[error("--report {path}: the folder it goes in does not exist")]
    ReportFolder { path: PathBuf },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("detector {detector} failed on {series}: {source}")]
    Detector {
        detector: String,
        series: String,
        #[source]
        source: DetectorError,
    },
    #[error(transparent)]
    UnknownDetector(#[from] detector::UnknownDetector),
    #[error(transparent)]
    Contract(#[from] detector::ContractViolation),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("printing the results: {0}")]
    Print(#[source] std::io::Error),
}

/// Runs the benchmark `args` names and prints its table to `out`.
pub fn run(args: Args, out: &mut impl Write) -> Result<(), EvaluateError> {
    match args.benchmark {
        Benchmark::Nab(a) => {
            let (data, threads) = prepare("NAB", &a.data, &a.common)?;
            let corpus = nab::NabCorpus::load(&data, &a.files)?;
            let registration = detector::find(&a.common.detector)?;
            let report = nab::evaluate(&corpus, &data, registration, a.common.seed, a.threshold, threads)?;
            print_nab(&report, out).map_err(EvaluateError::Print)?;
            write_report(a.common.report.as_deref(), &report)
        }
        Benchmark::Smd(a) => {
            let (data, threads) = prepare("SMD", &a.data, &a.common)?;
            let machines = smd::load(&data, &a.machines)?;
            let registration = detector::find(&a.common.detector)?;
            let report = smd::evaluate(&machines, &data, registration, a.common.seed, a.train_quantile, threads)?;
            print_smd(&report, out).map_err(EvaluateError::Print)?;
            write_report(a.common.report.as_deref(), &report)
        }
    }
}

/// Checks the data folder and the report's folder before any work; returns the data
/// folder and the thread count.
fn prepare(what: &'static str, data: &Path, common: &CommonArgs) -> Result<(PathBuf, usize), EvaluateError> {
    if !data.is_dir() {
        let resolved = std::env::current_dir().map(|d| d.join(data)).unwrap_or_else(|_| data.to_owned());
        return Err(EvaluateError::MissingData { what, given: data.to_owned(), resolved });
    }
    if let Some(report) = &common.report {
        let parent = report.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(EvaluateError::ReportFolder { path: report.clone() });
        }
    }
    let threads =
        common.threads.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok((data.to_owned(), threads))
}

fn write_report(path: Option<&Path>, report: &impl serde::Serialize) -> Result<(), EvaluateError> {
    let Some(path) = path else { return Ok(()) };
    let write = |source| EvaluateError::Write { path: path.to_owned(), source };
    let json = serde_json::to_vec_pretty(report).map_err(|e| write(e.into()))?;
    std::fs::write(path, json).map_err(write)
}

/// NAB's published normalised scores (standard, low FP, low FN) for the detectors that
/// have a counterpart here, from NAB's `results/final_results.json`.
pub fn published_nab(detector: &str) -> Option<(&'static str, [f64; 3])> {
    match detector {
        "windowed-gaussian" => Some(("windowedGaussian", [39.65, 20.87, 47.41])),
        "random" => Some(("random", [16.83, 5.76, 25.88])),
        "constant" => Some(("null", [0.0, 0.0, 0.0])),
        _ => None,
    }
}

fn print_nab(r: &nab::NabReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "NAB: {} on {} files ({} rows, {} windows), seed {}, {}",
        r.detector,
        r.files,
        r.rows,
        r.windows,
        r.seed,
        if r.threshold_optimised { "thresholds optimised per profile over the corpus" } else { "fixed threshold" }
    )?;
    // NAB's figures are for its whole corpus (58 files); a subset compares with nothing.
    let published = published_nab(&r.detector).filter(|_| r.files == 58 && r.threshold_optimised);
    writeln!(
        out,
        "{:<20} {:>7} {:>10} {:>10} {:>9} {:>8} {:>9} {:>8}  {}",
        "profile",
        "score",
        "threshold",
        "raw",
        "null",
        "perfect",
        "detected",
        "FP rows",
        published.map_or(String::new(), |(name, _)| format!("published ({name})"))
    )?;
    for (i, p) in r.profiles.iter().enumerate() {
        writeln!(
            out,
            "{:<20} {:>7.2} {:>10} {:>10.3} {:>9.3} {:>8.1} {:>9} {:>8}  {}",
            p.profile.name,
            p.score,
            format_threshold(p.threshold),
            p.raw,
            p.null,
            p.perfect,
            format!("{}/{}", p.windows_detected, r.windows),
            p.false_positive_rows,
            published.map_or(String::new(), |(_, s)| format!("{:.2}", s[i]))
        )?;
    }
    Ok(())
}

/// Six decimals, or all of them when six would round a threshold just below 1 up to 1.
fn format_threshold(t: f64) -> String {
    let short = format!("{t:.6}");
    if short.parse::<f64>().is_ok_and(|s| s != t && s == 1.0) {
        format!("{t}")
    } else {
        short
    }
}

fn print_smd(r: &smd::SmdReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "SMD: {} on {} machines, seed {}. Thresholds: 'train q{}' flags test rows above that quantile of the \
         train scores (no test labels); 'oracle' is the best point-wise F1 on the test labels (optimistic).",
        r.detector,
        r.machines.len(),
        r.seed,
        r.train_quantile
    )?;
    writeln!(
        out,
        "{:<12} {:<13} {:>10} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>7} | {:>9} | {:>6}",
        "machine", "threshold", "value", "pt P", "pt R", "pt F1", "ev P", "ev R", "ev F1", "events", "delay", "PA F1"
    )?;
    let row = |out: &mut dyn Write, machine: &str, label: &str, t: Option<f64>, m: &smd::metrics::Metrics| {
        writeln!(
            out,
            "{:<12} {:<13} {:>10} | {:>6.3} {:>6.3} {:>6.3} | {:>6.3} {:>6.3} {:>6.3} {:>7} | {:>9} | {:>6.3}",
            machine,
            label,
            t.map_or("-".into(), |t| format!("{t:.6}")),
            m.point.precision,
            m.point.recall,
            m.point.f1,
            m.event.precision,
            m.event.recall,
            m.event.f1,
            format!("{}/{}", m.counts.events_detected, m.counts.events),
            m.mean_delay_rows.map_or("-".into(), |d| format!("{d:.1} min")),
            m.point_adjusted.f1
        )
    };
    let train_label = format!("train q{}", r.train_quantile);
    for m in &r.machines {
        row(out, &m.machine, &train_label, m.train_threshold, &m.at_train_threshold)?;
        row(out, "", "oracle", m.oracle_threshold, &m.at_oracle_threshold)?;
    }
    row(out, "pooled", &train_label, None, &r.pooled.at_train_threshold)?;
    row(out, "", "oracle", None, &r.pooled.at_oracle_threshold)?;
    writeln!(out, "delay: rows (1 row = 1 minute) from an event's start to its first flag, over detected events")
}

/// Maps `f` over `items` on up to `threads` scoped threads, keeping the items' order.
fn parallel_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break mine };
                        mine.push((i, f(item)));
                    }
                })
            })
            .collect();
        // A panicking detector is a bug in it: let the panic surface with its message.
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_order_on_any_thread_count() {
        let items: Vec<u32> = (0..37).collect();
        for threads in [1, 2, 5, 64] {
            assert_eq!(parallel_map(&items, threads, |v| v * 2), items.iter().map(|v| v * 2).collect::<Vec<_>>());
        }
        assert!(parallel_map(&Vec::<u32>::new(), 2, |v| *v).is_empty());
    }

    #[test]
    fn missing_data_folder_is_named_with_its_resolved_path() {
        let common = CommonArgs { detector: "zscore".into(), report: None, seed: 1, threads: Some(1) };
        let err = prepare("NAB", Path::new("no/such/folder"), &common).expect_err("missing folder").to_string();
        assert!(err.contains("no/such/folder") && err.contains("--data"), "{err}");
    }
}
