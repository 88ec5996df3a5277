use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use clap::{Args as _, Command, FromArgMatches as _};

use super::*;

/// The command tree of the binary, as far as these tests need it: a global flag, two
/// Kafka-facing commands, one without Kafka, one with subcommands.
fn cli() -> Command {
    Command::new("augur")
        .arg(
            clap::Arg::new("log_format")
                .long("log-format")
                .global(true)
                .env("AUGUR_LOG_FORMAT")
                .value_parser(["text", "json"]),
        )
        .arg(clap::Arg::new("config").long("config").global(true).env(CONFIG_ENV))
        .subcommand(crate::detect::Args::augment_args(Command::new("detect")))
        .subcommand(crate::actuate::Args::augment_args(Command::new("actuate")))
        .subcommand(crate::agent::Args::augment_args(Command::new("agent")))
        .subcommand(crate::train::ScoreArgs::augment_args(Command::new("score")))
        .subcommand(crate::signatures::Args::augment_args(Command::new("signatures")))
        .subcommand(crate::export::Args::augment_args(Command::new("export")))
        .subcommand(crate::train::Args::augment_args(Command::new("train")))
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("augur.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `layer` with an environment of the test's own, then the command line parsed as the
/// binary would; returns the matches of the innermost command.
fn layered(path: &Path, line: &[&str], env: &[(&str, &str)]) -> Vec<OsString> {
    let env: HashMap<String, OsString> = env.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
    let mut argv = args(line);
    argv.splice(1..1, [OsString::from("--config"), path.as_os_str().to_owned()]);
    layer(argv, &cli(), |k| env.get(k).cloned()).expect("layering succeeds")
}

fn value(argv: &[OsString], command: &str, id: &str) -> Option<String> {
    let matches = cli().try_get_matches_from(argv).expect("the layered command line parses");
    let (name, sub) = matches.subcommand().expect("a command");
    assert_eq!(name, command);
    sub.get_raw(id).and_then(|mut v| v.next_back()).map(|v| v.to_string_lossy().into_owned())
}

const FILE: &str = r#"
log_format = "json"

[kafka]
brokers = "file:9092"
topic_prefix = "fromfile"

[kafka.librdkafka]
"socket.keepalive.enable" = "true"
"linger.ms" = 7

[detect]
group = "detect-file"
batch_max = 100
topic_prefix = "detectfile"
"#;

#[test]
fn the_flag_beats_the_environment_beats_the_file_beats_the_default() {
    let (_dir, path) = file(FILE);
    // File only.
    let argv = layered(&path, &["augur", "detect"], &[]);
    assert_eq!(value(&argv, "detect", "group").as_deref(), Some("detect-file"));
    assert_eq!(value(&argv, "detect", "batch_max").as_deref(), Some("100"));
    assert_eq!(value(&argv, "detect", "brokers").as_deref(), Some("file:9092"));
    // A command's own section overrides [kafka] for it.
    assert_eq!(value(&argv, "detect", "topic_prefix").as_deref(), Some("detectfile"));
    // Nothing in the file: the built-in default.
    assert_eq!(value(&argv, "detect", "points").as_deref(), Some("64"));
    assert!(argv.contains(&OsString::from("--log-format=json")), "{argv:?}");

    // The environment variable is given: the file's value is not inserted, so clap's
    // own reading of the variable decides.
    let argv = layered(&path, &["augur", "detect"], &[("AUGUR_GROUP", "detect-env"), ("AUGUR_BROKERS", "env:1")]);
    assert!(!argv.iter().any(|a| a.to_string_lossy().starts_with("--group")), "{argv:?}");
    assert!(!argv.iter().any(|a| a.to_string_lossy().starts_with("--brokers")), "{argv:?}");
    assert_eq!(value(&argv, "detect", "batch_max").as_deref(), Some("100"), "other keys still apply");

    // The flag is given (both spellings): it stands, with the environment set or not.
    let argv = layered(&path, &["augur", "detect", "--group", "detect-flag", "--batch-max=5"], &[("AUGUR_GROUP", "x")]);
    assert_eq!(value(&argv, "detect", "group").as_deref(), Some("detect-flag"));
    assert_eq!(value(&argv, "detect", "batch_max").as_deref(), Some("5"));
    assert_eq!(value(&argv, "detect", "brokers").as_deref(), Some("file:9092"));
}

#[test]
fn pass_through_maps_add_up_and_the_command_line_wins_per_key() {
    let (_dir, path) = file(FILE);
    let argv = layered(&path, &["augur", "detect", "--librdkafka", "linger.ms=1", "--librdkafka", "acks=all"], &[]);
    let matches = cli().try_get_matches_from(&argv).unwrap();
    let (_, sub) = matches.subcommand().unwrap();
    let args = crate::kafka::KafkaArgs::from_arg_matches(sub).unwrap();
    let config = args.config();
    assert_eq!(config.librdkafka.get("linger.ms").map(String::as_str), Some("1"), "the flag wins");
    assert_eq!(config.librdkafka.get("socket.keepalive.enable").map(String::as_str), Some("true"));
    assert_eq!(config.librdkafka.get("acks").map(String::as_str), Some("all"));
}

#[test]
fn kafka_keys_reach_nested_commands_and_skip_commands_without_kafka() {
    let (_dir, path) = file(FILE);
    let argv = layered(&path, &["augur", "signatures", "list"], &[]);
    let matches = cli().try_get_matches_from(&argv).unwrap();
    let (_, sub) = matches.subcommand().unwrap();
    let (leaf, list) = sub.subcommand().unwrap();
    assert_eq!(leaf, "list");
    assert_eq!(list.get_one::<String>("brokers").map(String::as_str), Some("file:9092"));
    // `score` has no Kafka flags: the [kafka] keys are left out, and it still parses.
    let argv = layered(&path, &["augur", "score"], &[]);
    assert!(!argv.iter().any(|a| a.to_string_lossy().starts_with("--brokers")), "{argv:?}");
}

#[test]
fn without_a_file_or_a_command_nothing_changes() {
    let argv = args(&["augur", "detect", "--group", "g"]);
    assert_eq!(layer(argv.clone(), &cli(), |_| None).unwrap(), argv);
    let (_dir, path) = file(FILE);
    let help = args(&["augur", "--config", path.to_str().unwrap(), "--help"]);
    assert_eq!(layer(help.clone(), &cli(), |_| None).unwrap(), help);
    // AUGUR_CONFIG names the file when --config does not.
    let via_env =
        layer(args(&["augur", "detect"]), &cli(), |k| (k == CONFIG_ENV).then(|| path.clone().into())).unwrap();
    assert!(via_env.contains(&OsString::from("--group=detect-file")), "{via_env:?}");
}

#[test]
fn a_check_reports_every_error_at_once_with_file_line_and_key() {
    let text = r#"log_format = "yaml"
colour = true

[kafka]
security_protocol = "ssl"
sasl_mechanism = "SCRAM-SHA-256"
ssl_ca_file = "/nonexistent/ca.pem"

[kafka.librdkafka]
"linger.ms" = 5
nested = { a = 1 }

[detect]
batch_max = 0
step = "ten seconds"
points = [1, 2]
threads = "4"
no_such_flag = 1
dry-run = true

[actuate]
dry_run = "yes"
max_attempts = 101

[teleport]
x = 1
"#;
    let (_dir, path) = file(text);
    let problems = parse(&path, text, &cli()).expect_err("the file is invalid");
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let at = |line: usize, key: &str, needle: &str| {
        let prefix = format!("{}:{line}: {key}: ", path.display());
        assert!(
            shown.iter().any(|s| s.starts_with(&prefix) && s.contains(needle)),
            "no `{prefix}...{needle}` among:\n{}",
            shown.join("\n")
        );
    };
    at(1, "log_format", "invalid value 'yaml' for '--log-format <log_format>' [possible values: text, json]");
    at(2, "colour", "unknown key");
    at(6, "kafka.sasl_mechanism", "needs --security-protocol sasl_plaintext or sasl_ssl");
    at(7, "kafka.ssl_ca_file", "cannot read /nonexistent/ca.pem");
    at(11, "kafka.librdkafka.nested", "expected a string, number or boolean, found table");
    at(14, "detect.batch_max", "0 is not in 1..=1000000");
    at(15, "detect.step", "ten seconds");
    at(16, "detect.points", "expected a single value, found array");
    at(18, "detect.no_such_flag", "`augur detect` has no flag --no-such-flag");
    at(19, "detect.dry-run", "keys are written with '_': dry_run");
    at(22, "actuate.dry_run", "expected true or false, found string");
    at(23, "actuate.max_attempts", "101 is not in 1..=100");
    at(25, "teleport", "unknown section; sections are kafka, detect, actuate, agent, score, export, train");
    // threads = "4" is a string the flag's parser takes: the file accepts what the
    // command line accepts.
    assert!(!shown.iter().any(|s| s.contains("detect.threads")), "{}", shown.join("\n"));
    assert_eq!(problems.len(), 13, "{}", shown.join("\n"));
    assert!(problems.windows(2).all(|w| w[0].line <= w[1].line), "sorted by line");

    // The error of a command started with the file lists them all as well.
    let argv = args(&["augur", "--config", path.to_str().unwrap(), "detect"]);
    let message = layer(argv, &cli(), |_| None).unwrap_err().to_string();
    assert!(message.starts_with(&format!("13 errors in {}:\n", path.display())), "{message}");
    assert_eq!(message.lines().count(), 14, "{message}");
}

#[test]
fn syntax_errors_and_security_contradictions_across_sections() {
    let (_dir, path) = file("");
    let problems = parse(&path, "[detect]\nbatch_max = = 3\n", &cli()).unwrap_err();
    assert_eq!(problems[0].line, 2, "{problems:?}");
    assert_eq!(problems[0].key, "(document)");

    // A pass-through property that collides with a key, named at the table.
    let text = r#"[kafka]
security_protocol = "sasl_plaintext"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "augur"
sasl_password = "pw"

[kafka.librdkafka]
"sasl.password" = "other"
"#;
    let problems = parse(&path, text, &cli()).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1, "{shown:?}");
    // A command's own section makes the contradiction: named there, the [kafka] part
    // being fine on its own.
    let text = "[kafka]\nsecurity_protocol = \"plaintext\"\n\n[detect]\ngroup = \"g\"\nsasl_username = \"u\"\n";
    let problems = parse(&path, text, &cli()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].line, problems[0].key.as_str()), (6, "detect.sasl_username"), "{problems:?}");
    assert!(problems[0].message.contains("needs --security-protocol sasl_plaintext or sasl_ssl"), "{problems:?}");

    // The password left to AUGUR_KAFKA_SASL_PASSWORD, as the example advises: not the
    // file's error (the command checks the whole at start).
    let without = "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n";
    assert!(parse(&path, without, &cli()).is_ok(), "{:?}", parse(&path, without, &cli()).err());
    assert!(
        shown[0].contains(":7: kafka.librdkafka: --librdkafka sasl.password=... sets what --sasl-password"),
        "{shown:?}"
    );
    assert!(!shown[0].contains("other") && !shown[0].contains("\"pw\""), "no secret in a message: {shown:?}");
}

#[test]
fn a_valid_file_checks_ok_with_its_count() {
    let (_dir, path) = file(FILE);
    let deployment = parse(&path, FILE, &cli()).expect("valid");
    assert_eq!(deployment.len(), 7);
    let verdict = run(Args { command: ConfigCommand::Check { file: path.clone() } }, &cli()).unwrap();
    assert_eq!(verdict, format!("{}: OK (7 settings)", path.display()));
    let missing = run(Args { command: ConfigCommand::Check { file: path.with_extension("nope") } }, &cli());
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}

#[test]
fn the_example_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/augur.example.toml");
    let text = std::fs::read_to_string(&path).expect("config/augur.example.toml");
    let deployment = parse(&path, &text, &cli()).unwrap_or_else(|problems| {
        panic!("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    });
    assert!(deployment.len() > 20, "the example shows most settings: {}", deployment.len());
}

#[test]
fn secrets_of_the_file_do_not_show_in_debug_output() {
    let text = "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n\
                sasl_password = \"hunter2\"\n[kafka.librdkafka]\n\"ssl.keystore.password\" = \"ks-secret\"\n\
                \"linger.ms\" = 5\n";
    let (_dir, path) = file(text);
    let deployment = parse(&path, text, &cli()).expect("valid");
    let shown = format!("{deployment:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("ks-secret"), "{shown}");
    assert!(shown.contains("linger.ms=5") && shown.contains("\"u\""), "{shown}");
}
