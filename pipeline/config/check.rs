//! Checking a deployment file: its text in, every setting as the flags it stands for
//! out, or every problem at once.
//!
//! Each key is looked up among the long flags of its section's command and its value
//! is run through that flag's own parser (with the environment switched off, so only
//! the file is judged); files the flags name as inputs must be readable; the Kafka
//! security settings are checked together as [`crate::kafka::KafkaSecurity::check`]
//! does at start. Line numbers come from the spans of toml's document parser, as the
//! policy loader's do.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::builder::ValueHint;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, Command, FromArgMatches};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{Problem, KAFKA_SECTION};
use crate::kafka::security::is_sensitive;
use crate::kafka::{KafkaArgs, SecurityError};
use crate::policy::load::line_of;

/// One setting of the file, as the flag it stands for. `Debug` shows the values of
/// secrets (passwords, sensitive pass-through properties) as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is written: `detect.batch_max`.
    pub key: String,
    pub line: usize,
    /// The long flag, without dashes.
    pub long: String,
    /// The values, one `--long=value` each; empty for a switch.
    pub values: Vec<String>,
    /// A flag without a value (`dry_run = true`); `on` says whether it is given.
    pub switch: Option<bool>,
    /// A `KEY=VALUE` map (`librdkafka`, `label`): merged with the command line's.
    pub merge: bool,
    /// A global flag (outside any section).
    pub global: bool,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self
            .values
            .iter()
            .map(|v| {
                let secret = self.long.contains("password")
                    || (self.merge && v.split_once('=').is_some_and(|(k, _)| is_sensitive(k)));
                if secret {
                    "***"
                } else {
                    v.as_str()
                }
            })
            .collect();
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("line", &self.line)
            .field("long", &self.long)
            .field("values", &shown)
            .field("switch", &self.switch)
            .field("merge", &self.merge)
            .field("global", &self.global)
            .finish()
    }
}

impl Entry {
    /// The flags this setting stands for.
    pub fn flags(&self) -> Vec<OsString> {
        match self.switch {
            Some(true) => vec![format!("--{}", self.long).into()],
            Some(false) => Vec::new(),
            None => self.values.iter().map(|v| format!("--{}={v}", self.long).into()).collect(),
        }
    }
}

/// A checked deployment file: its settings by section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    global: Vec<Entry>,
    kafka: Vec<Entry>,
    commands: BTreeMap<String, Vec<Entry>>,
}

impl Deployment {
    /// The number of settings.
    pub fn len(&self) -> usize {
        self.global.len() + self.kafka.len() + self.commands.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The settings for `command` (a top-level command's name; `None` for nested
    /// commands, which take `[kafka]` and the global keys only), in the order their
    /// flags go: global, `[kafka]` (less what the command's own section overrides), the
    /// command's own. Map-valued keys are never overridden: their entries add up.
    pub fn entries_for(&self, command: Option<&str>) -> Vec<&Entry> {
        let own: &[Entry] = command.and_then(|c| self.commands.get(c)).map_or(&[], Vec::as_slice);
        let overridden = |e: &Entry| !e.merge && own.iter().any(|o| o.long == e.long);
        self.global.iter().chain(self.kafka.iter().filter(|e| !overridden(e))).chain(own).collect()
    }
}

/// The command that the `[kafka]` section's keys are the flags of.
fn kafka_command() -> Command {
    <KafkaArgs as clap::Args>::augment_args(Command::new(KAFKA_SECTION))
}

/// Parses and checks a deployment file's text; `cli` is the whole command tree.
pub fn parse(path: &Path, text: &str, cli: &Command) -> Result<Deployment, Vec<Problem>> {
    let mut c = Checker { path, text, problems: Vec::new() };
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            c.problem(line, "(document)", e.message().trim_end());
        }
        return Err(c.problems);
    }

    let mut deployment = Deployment::default();
    let kafka = kafka_command();
    // [kafka] first, wherever it is written: the command sections are checked with it.
    for (key, value) in root.get_ref() {
        if let (KAFKA_SECTION, DeValue::Table(table)) = (key.get_ref().as_ref(), value.get_ref()) {
            let line = c.line(key, value);
            deployment.kafka = c.section(KAFKA_SECTION, table, &kafka, false);
            let entries: Vec<&Entry> = deployment.kafka.iter().collect();
            c.security(KAFKA_SECTION, line, &entries);
        }
    }
    for (key, value) in root.get_ref() {
        let (name, line) = (key.get_ref().as_ref(), c.line(key, value));
        match value.get_ref() {
            DeValue::Table(_) if name == KAFKA_SECTION => {}
            DeValue::Table(table) => match cli.find_subcommand(name) {
                Some(sub) if sub.has_subcommands() => {
                    c.problem(line, name, "a command with subcommands: give its flags on the command line")
                }
                Some(sub) => {
                    let entries = c.section(name, table, sub, false);
                    let is_kafka = |e: &Entry| kafka.get_arguments().any(|a| a.get_long() == Some(e.long.as_str()));
                    if entries.iter().any(is_kafka) {
                        // What this command ends up with: [kafka], then its own.
                        let overridden = |e: &Entry| !e.merge && entries.iter().any(|o| o.long == e.long);
                        let merged: Vec<&Entry> = deployment
                            .kafka
                            .iter()
                            .filter(|e| !overridden(e))
                            .chain(entries.iter().filter(|e| is_kafka(e)))
                            .collect();
                        c.security(name, line, &merged);
                    }
                    deployment.commands.insert(sub.get_name().to_owned(), entries);
                }
                None => {
                    let known: Vec<&str> = std::iter::once(KAFKA_SECTION)
                        .chain(cli.get_subcommands().filter(|s| !s.has_subcommands()).map(Command::get_name))
                        .collect();
                    c.problem(line, name, &format!("unknown section; sections are {}", known.join(", ")))
                }
            },
            _ if name == "config" => c.problem(line, name, "a deployment file cannot name another one"),
            _ => {
                if let Some(entry) = c.setting("", key, value, cli, true) {
                    deployment.global.push(entry);
                }
            }
        }
    }
    if c.problems.is_empty() {
        Ok(deployment)
    } else {
        // Stable: problems of one line keep the order they were found in.
        c.problems.sort_by_key(|p| p.line);
        c.problems.dedup();
        Err(c.problems)
    }
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, line: usize, key: &str, message: &str) {
        self.problems.push(Problem {
            path: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message: message.to_owned(),
        });
    }

    fn line(&self, key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>) -> usize {
        // Tables made implicitly by a dotted header may carry an empty key span.
        let span = if key.span().is_empty() { value.span() } else { key.span() };
        line_of(self.text, span.start)
    }

    /// The settings of one section, each checked on its own, then together (flags
    /// that exclude each other).
    fn section(&mut self, name: &str, table: &DeTable<'_>, command: &Command, global: bool) -> Vec<Entry> {
        let entries: Vec<Entry> = table.iter().filter_map(|(k, v)| self.setting(name, k, v, command, global)).collect();
        let flags: Vec<OsString> = entries.iter().flat_map(Entry::flags).collect();
        if let Err((ErrorKind::ArgumentConflict, message)) = try_flags(command, &flags) {
            let line = entries.first().map_or(1, |e| e.line);
            self.problem(line, name, &message);
        }
        entries
    }

    /// One key: its flag, its value(s) as that flag's parser takes them, its files.
    fn setting(
        &mut self,
        section: &str,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        command: &Command,
        global: bool,
    ) -> Option<Entry> {
        let name = key.get_ref().as_ref();
        let full = if section.is_empty() { name.to_owned() } else { format!("{section}.{name}") };
        let line = self.line(key, value);
        let long = name.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !a.is_positional() && (!global || a.is_global_set()))
            .filter(|a| {
                !matches!(
                    a.get_action(),
                    ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
                )
            });
        let Some(arg) = arg else {
            let message = if name.contains('-') {
                format!("unknown key; keys are written with '_': {}", name.replace('-', "_"))
            } else if global {
                "unknown key; outside a section only the global flags (log_format)".to_owned()
            } else {
                format!("unknown key: `augur {}` has no flag --{long}", command.get_name())
            };
            self.problem(line, &full, &message);
            return None;
        };

        let mut entry = Entry {
            key: full.clone(),
            line,
            long: long.clone(),
            values: Vec::new(),
            switch: None,
            merge: false,
            global,
        };
        let value_line = line_of(self.text, value.span().start);
        match (arg.get_action(), value.get_ref()) {
            (ArgAction::SetTrue, DeValue::Boolean(b)) => entry.switch = Some(*b),
            (ArgAction::SetTrue, v) => {
                self.problem(value_line, &full, &format!("expected true or false, found {}", v.type_str()));
                return None;
            }
            (ArgAction::Append, DeValue::Array(items)) => {
                for item in items {
                    match scalar(item.get_ref()) {
                        Some(s) => entry.values.push(s),
                        None => {
                            let at = line_of(self.text, item.span().start);
                            self.problem(
                                at,
                                &full,
                                &format!("expected a list of values, found {} in it", item.get_ref().type_str()),
                            );
                            return None;
                        }
                    }
                }
            }
            (ArgAction::Append, DeValue::Table(map)) if takes_key_value(arg) => {
                entry.merge = true;
                for (k, v) in map {
                    match scalar(v.get_ref()) {
                        Some(s) => entry.values.push(format!("{}={s}", k.get_ref())),
                        None => {
                            let at = self.line(k, v);
                            let message =
                                format!("expected a string, number or boolean, found {}", v.get_ref().type_str());
                            self.problem(at, &format!("{full}.{}", quoted(k.get_ref())), &message);
                            return None;
                        }
                    }
                }
            }
            (_, v) => match scalar(v) {
                Some(s) => entry.values.push(s),
                None => {
                    let expected = if takes_key_value(arg) { "a table of KEY = value" } else { "a single value" };
                    self.problem(value_line, &full, &format!("expected {expected}, found {}", v.type_str()));
                    return None;
                }
            },
        }
        if let Err((kind, message)) = try_flags(command, &entry.flags()) {
            if !ignorable(kind) {
                self.problem(value_line, &full, &message);
                return None;
            }
        }
        for v in &entry.values {
            if let Err(message) = readable(arg.get_value_hint(), Path::new(v)) {
                self.problem(value_line, &full, &message);
                return None;
            }
        }
        Some(entry)
    }

    /// The Kafka security settings a section leaves the command with, checked together
    /// for what the file itself gets wrong: contradictions with a protocol it names,
    /// pass-through properties that collide with a key. A setting the file leaves out is
    /// not its error; the command checks the whole at start.
    fn security(&mut self, section: &str, section_line: usize, entries: &[&Entry]) {
        let flags: Vec<OsString> = entries.iter().flat_map(|e| e.flags()).collect();
        let kafka = quiet(kafka_command());
        // Values that do not parse were reported with their key already.
        let Ok(matches) = kafka.try_get_matches_from(&flags) else { return };
        let Ok(args) = KafkaArgs::from_arg_matches(&matches) else { return };
        let config = args.config();
        let protocol_written =
            config.security.security_protocol.is_some() || config.librdkafka.contains_key("security.protocol");
        for error in config.security.check(&config.librdkafka) {
            let long = match &error {
                // The files are checked with their keys, by the same rules.
                SecurityError::Unreadable { .. } | SecurityError::NotAFile { .. } => continue,
                // What is missing may come from the environment (a password from a
                // Secret, above all) or the command line: only a start can tell.
                SecurityError::Needs { .. } => continue,
                SecurityError::NeedsProtocol { .. } if !protocol_written => continue,
                SecurityError::Conflict { .. } => "librdkafka",
                other => other.setting().flag,
            };
            let at = entries.iter().rev().find(|e| e.long == long);
            let (line, key) =
                at.map_or((section_line, format!("{section}.{}", long.replace('-', "_"))), |e| (e.line, e.key.clone()));
            self.problem(line, &key, &error.to_string());
        }
    }
}

/// A command that judges values only: no environment, nothing required.
fn quiet(command: Command) -> Command {
    command.no_binary_name(true).mut_args(|a| a.env(None::<&'static str>).required(false))
}

/// Parses `flags` with `command`'s own parsers; the error's kind and its message.
fn try_flags(command: &Command, flags: &[OsString]) -> Result<(), (ErrorKind, String)> {
    match quiet(command.clone()).try_get_matches_from(flags) {
        Ok(_) => Ok(()),
        Err(e) => {
            // The message and its details (possible values, a tip), not the usage after them.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let message = message.join(" ");
            Err((e.kind(), message.strip_prefix("error: ").unwrap_or(&message).to_owned()))
        }
    }
}

/// Errors about what is missing, not about what is written: another key, the command
/// line or the environment may well give it.
fn ignorable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

fn takes_key_value(arg: &Arg) -> bool {
    arg.get_value_names().is_some_and(|names| names.iter().any(|n| n.as_str() == "KEY=VALUE"))
}

/// A TOML scalar as the command line would spell it.
fn scalar(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(d) => Some(d.to_string()),
        DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// A key as written in a dotted path: quoted when it holds dots or other characters
/// a bare TOML key cannot.
fn quoted(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Files and directories a flag reads must be there and readable now, not at the first
/// use hours into a run.
fn readable(hint: ValueHint, path: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    match hint {
        ValueHint::FilePath => {
            let file = std::fs::File::open(path).map_err(fail)?;
            if !file.metadata().map_err(fail)?.is_file() {
                return Err(format!("{} is not a file", path.display()));
            }
        }
        ValueHint::DirPath => {
            std::fs::read_dir(path).map_err(fail)?;
        }
        _ => {}
    }
    Ok(())
}
