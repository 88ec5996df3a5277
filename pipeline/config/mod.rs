//! Deployment files: one TOML file per deployment in, the command line it stands for out.
//!
//! In: the file named by `--config FILE` (or `AUGUR_CONFIG`) and the command line. Out:
//! the command line with the file's settings for the running command inserted as flags
//! wherever neither the flag nor its environment variable is given, so every setting
//! comes from the flag, else the `AUGUR_*` environment, else the file, else the built-in
//! default. Guarantee: the file is checked whole before anything runs, and every unknown
//! section or key, wrong type, out-of-range value and unreadable file is reported at
//! once as `FILE:LINE: key: message`, judged by the very parsers of the flags the keys
//! stand for (so the file cannot accept what the command line refuses, or the reverse).
//!
//! The keys are the long flags with `_` for `-`: `[detect] batch_max = 5000` is
//! `augur detect --batch-max 5000`. `[kafka]` holds the flags every Kafka-facing command
//! shares (brokers, TLS, SASL) and `[kafka.librdkafka]` the pass-through client
//! properties; a command's own section may override a `[kafka]` key for that command.
//! Keys outside any section are the global flags (`log_format`). Relative paths are
//! relative to the working directory, as on the command line.

mod check;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use clap::Command;

pub use check::{parse, Deployment, Entry};

/// The section every Kafka-facing command reads besides its own.
pub const KAFKA_SECTION: &str = "kafka";
/// The environment variable that names the deployment file when `--config` does not.
pub const CONFIG_ENV: &str = "AUGUR_CONFIG";

/// `augur config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a deployment file: every unknown key, wrong type, out-of-range value and
    /// unreadable file, all at once, as FILE:LINE: key: message.
    Check {
        /// The deployment file (TOML); see config/augur.example.toml.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// One thing wrong in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// Dotted: `detect.batch_max`, `kafka.librdkafka."linger.ms"`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.path.display(), self.line, self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read deployment file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} in {}:\n{}", count(problems.len()), path.display(), lines(problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

fn lines(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Reads and checks a deployment file against the command tree `cli`.
pub fn load(path: &Path, cli: &Command) -> Result<Deployment, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(path, &text, cli).map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
}

/// `augur config check FILE`: the one-line verdict when the file is valid.
pub fn run(args: Args, cli: &Command) -> Result<String, ConfigError> {
    match args.command {
        ConfigCommand::Check { file } => {
            let deployment = load(&file, cli)?;
            Ok(format!("{}: OK ({} settings)", file.display(), deployment.len()))
        }
    }
}

/// The command line `args` (program name first) with the settings of the deployment
/// file inserted for the command it runs; unchanged when no file is named (neither
/// `--config` nor `AUGUR_CONFIG`), for `augur config ...`, and when no command is named
/// (`--help`). `env` looks up environment variables (the process's, or a test's).
///
/// A setting is inserted only when neither its flag nor its environment variable is
/// given. Map-valued flags (`librdkafka`, `label`) are the exception: the file's entries
/// go first and the command line's are added after them, so per key the flag wins.
pub fn layer(
    args: Vec<OsString>,
    cli: &Command,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    let Some(path) = config_path(&args).or_else(|| env(CONFIG_ENV).map(PathBuf::from)) else {
        return Ok(args);
    };
    let Some((names, at)) = find_command(&args, cli) else { return Ok(args) };
    if names.first().map(String::as_str) == Some("config") {
        return Ok(args);
    }
    let deployment = load(&path, cli)?;
    let mut command = cli;
    for name in &names {
        // find_command found each of these names in this very tree.
        let Some(sub) = command.find_subcommand(name) else { return Ok(args) };
        command = sub;
    }
    let section = if names.len() == 1 { names.first().map(String::as_str) } else { None };

    let mut inserted: Vec<OsString> = Vec::new();
    for entry in deployment.entries_for(section) {
        let arg = match entry.global {
            true => cli.get_arguments().find(|a| a.get_long() == Some(entry.long.as_str())),
            false => command.get_arguments().find(|a| a.get_long() == Some(entry.long.as_str())),
        };
        // A [kafka] key for a command that does not talk to Kafka.
        let Some(arg) = arg else { continue };
        if !entry.merge {
            let by_env = arg.get_env().and_then(OsStr::to_str).is_some_and(|name| env(name).is_some());
            if by_env || given(&args, arg) {
                continue;
            }
        }
        inserted.extend(entry.flags());
    }
    let mut out = args;
    out.splice(at..at, inserted);
    Ok(out)
}

/// `--config FILE` or `--config=FILE` anywhere before `--`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The names of the (sub)commands `args` runs, outermost first, and the index just past
/// the innermost one, where inserted flags go. `None` when no command is named.
fn find_command(args: &[OsString], cli: &Command) -> Option<(Vec<String>, usize)> {
    let mut command = cli;
    let mut names = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let token = args[i].to_string_lossy();
        if token == "--" {
            break;
        }
        if let Some(flag) = token.strip_prefix("--") {
            let takes_value = !flag.contains('=')
                && [command, cli]
                    .iter()
                    .flat_map(|c| c.get_arguments())
                    .find(|a| a.get_long() == Some(flag))
                    .is_some_and(|a| a.get_action().takes_values());
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        if token.starts_with('-') {
            i += 1;
            continue;
        }
        let sub = command.find_subcommand(token.as_ref())?;
        names.push(sub.get_name().to_owned());
        if !sub.has_subcommands() {
            return Some((names, i + 1));
        }
        command = sub;
        i += 1;
    }
    None
}

/// Whether the command line gives `arg` (`--long`, `--long=...` or `-s`) before `--`.
fn given(args: &[OsString], arg: &clap::Arg) -> bool {
    let long = arg.get_long().map(|l| format!("--{l}"));
    let short = arg.get_short().map(|s| format!("-{s}"));
    args.iter().skip(1).map(|a| a.to_string_lossy()).take_while(|a| a != "--").any(|a| {
        long.as_deref().is_some_and(|l| a == l || a.strip_prefix(l).is_some_and(|rest| rest.starts_with('=')))
            || short.as_deref().is_some_and(|s| a.starts_with(s) && !a.starts_with("--"))
    })
}

#[cfg(test)]
mod tests;
