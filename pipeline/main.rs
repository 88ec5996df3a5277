//! The `augur` command: parses the command line, sets up logging and hands over to
//! the library stage it names.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Predicts failures of application instances from their telemetry and adjusts their
/// resources before they fail.
#[derive(Debug, Parser)]
#[command(name = "augur", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AUGUR_LOG_FORMAT")]
    log_format: LogFormat,
    /// Deployment file (TOML) with the settings of every command; a flag or an AUGUR_*
    /// variable overrides the file's setting. See config/augur.example.toml.
    #[arg(long, global = true, env = "AUGUR_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole loop in one process on a simulated fleet (embedded cluster by default).
    Demo(augur::demo::Args),
    /// Sample this machine or container and publish its telemetry.
    Agent(Box<augur::agent::Args>),
    /// Match telemetry windows against failure signatures and publish alerts, exactly once.
    Detect(augur::detect::Args),
    /// Apply adjustments through a backend (kubernetes, webhook, sim, log), exactly once, audited.
    Actuate(Box<augur::actuate::Args>),
    /// Simulate a fleet of instances with injected failures and publish its telemetry.
    Simulate(augur::simulate::Args),
    /// Write telemetry (and alerts) to a time-series database by Prometheus remote write.
    Export(augur::export::Args),
    /// Print the records of a topic as JSON lines.
    Tail(augur::tail::Args),
    /// Manage the failure-signature database: import, list, delete, extract.
    Signatures(augur::signatures::Args),
    /// Train LSTM anomaly models on normal telemetry (simulator or CSV), one per application type.
    Train(Box<augur::train::Args>),
    /// Score recorded telemetry (CSV) with an LSTM anomaly model.
    Score(augur::train::ScoreArgs),
    /// Measure an anomaly detector on public labelled data (NAB, SMD).
    Evaluate(augur::evaluate::Args),
    /// Deployment files: `augur config check FILE` reports every error at once.
    Config(augur::config::Args),
}

fn main() -> ExitCode {
    // The deployment file's settings become flags before clap sees the command line.
    let args = match augur::config::layer(std::env::args_os().collect(), &Cli::command(), |k| std::env::var_os(k)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line that names what is wrong; the usage is one --help away.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    // Colour only for people: a pipe or a file gets plain text that grep can read.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let runtime = match cli.command {
        // The agent runs beside the workload it watches: one thread keeps its footprint small.
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .context("starting the async runtime")?;

    runtime.block_on(async move {
        let shutdown = augur::shutdown::on_signals();
        match cli.command {
            Command::Demo(args) => {
                let report = augur::demo::run(args, shutdown).await?;
                print!("{report}");
            }
            Command::Agent(args) => {
                augur::agent::run(*args, shutdown).await?;
            }
            Command::Detect(args) => {
                augur::detect::run(args, shutdown).await?;
            }
            Command::Actuate(args) => {
                augur::actuate::run(*args, shutdown).await?;
            }
            Command::Export(args) => {
                augur::export::run(args, shutdown).await?;
            }
            Command::Simulate(args) => {
                let summary = augur::simulate::run(args, shutdown).await?;
                // The last line of stdout is the summary, for scripts.
                println!("{}", serde_json::to_string(&summary)?);
            }
            Command::Tail(args) => {
                let summary = augur::tail::run(args, shutdown, &mut std::io::stdout().lock()).await?;
                tracing::info!(printed = summary.printed, undecodable = summary.undecodable, "tail stopped");
            }
            Command::Signatures(args) => {
                augur::signatures::run(args, shutdown, &mut std::io::stdout().lock()).await?;
            }
            Command::Train(args) => {
                // One JSON line per model, as it is written, for scripts.
                let mut line = |trained: &augur::train::Trained| match serde_json::to_string(trained) {
                    Ok(json) => println!("{json}"),
                    Err(error) => tracing::error!(%error, "a trained model's summary does not serialise"),
                };
                augur::train::run(*args, shutdown, &mut line).await?;
            }
            Command::Score(args) => {
                let summary = augur::train::score::run(args, shutdown).await?;
                println!("{}", serde_json::to_string(&summary)?);
            }
            Command::Config(args) => {
                println!("{}", augur::config::run(args, &Cli::command())?);
            }
            Command::Evaluate(args) => {
                // CPU-bound and synchronous: it runs on its own scoped threads.
                augur::evaluate::run(args, &mut std::io::stdout().lock())?;
            }
        }
        Ok(())
    })
}
