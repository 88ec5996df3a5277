//! Fixtures shared by the integration tests: one real Apache Kafka broker per test
//! run, unique names, and the `augur` binary.
//!
//! The broker comes from `KAFKA_BOOTSTRAP` when set; otherwise `scripts/kafka start`
//! fetches Apache Kafka from Maven Central (cached) and starts a KRaft broker on
//! loopback, watched by this process's pid so it stops when the tests end. A test that
//! needs a broker and cannot have one fails with the reason; it never skips. The
//! security tests get a second broker of their own with a SASL/SCRAM listener
//! ([`scram_broker`], always started here: `KAFKA_BOOTSTRAP` does not apply to it).

#![allow(dead_code)] // each test binary uses its own subset

pub mod fake_kube;
pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use rand::distr::{Alphanumeric, SampleString};
use rdkafka::config::ClientConfig;
use rdkafka::message::OwnedMessage;

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The bootstrap address of the run's broker, starting it on first use.
pub fn bootstrap() -> &'static str {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP.get_or_init(|| {
        if let Ok(given) = std::env::var("KAFKA_BOOTSTRAP") {
            if !given.trim().is_empty() {
                return given;
            }
        }
        let dir = std::env::temp_dir().join(format!("augur-test-kafka-{}", std::process::id()));
        start_broker(&dir, &[]).pop().expect("scripts/kafka start prints the bootstrap address last")
    })
}

/// A broker of its own with a SASL_PLAINTEXT listener that takes SCRAM-SHA-256 and
/// SCRAM-SHA-512 for one user, for the security tests: the other tests' broker stays
/// as it is.
pub struct ScramBroker {
    /// The SASL_PLAINTEXT listener.
    pub sasl: String,
    /// The PLAINTEXT listener of the same broker, for setting things up.
    pub plaintext: String,
    pub username: &'static str,
    pub password: &'static str,
}

/// The run's SCRAM broker, started on first use.
pub fn scram_broker() -> &'static ScramBroker {
    static BROKER: OnceLock<ScramBroker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let (username, password) = ("augur-test", "scram-pw-7f3a9c");
        let dir = std::env::temp_dir().join(format!("augur-test-kafka-scram-{}", std::process::id()));
        let lines = start_broker(&dir, &["--scram", &format!("{username}:{password}")]);
        let sasl = lines
            .iter()
            .find_map(|l| l.strip_prefix("SASL_PLAINTEXT="))
            .unwrap_or_else(|| panic!("scripts/kafka start --scram printed no SASL_PLAINTEXT address: {lines:?}"))
            .to_owned();
        let plaintext = lines.last().cloned().unwrap_or_default();
        ScramBroker { sasl, plaintext, username, password }
    })
}

/// A broker of its own with a TLS listener that requires a client certificate, for the
/// security tests, and the certificates to reach it (all in `certs`):
/// - `ca.pem`: the authority that signed the broker's and the client's certificates;
/// - `client.crt`, `client.key`: a certificate the broker accepts;
/// - `stranger.crt`, `stranger.key`: one signed by another authority (`other-ca.pem`).
pub struct TlsBroker {
    /// The SSL listener.
    pub ssl: String,
    pub certs: PathBuf,
}

/// The run's TLS broker, started on first use with certificates made for it.
pub fn tls_broker() -> &'static TlsBroker {
    static BROKER: OnceLock<TlsBroker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("augur-test-kafka-tls-{}", std::process::id()));
        // Inside the run directory: the broker's watchdog removes both together.
        let certs = dir.join("certs");
        write_certificates(&certs).unwrap_or_else(|e| panic!("cannot make test certificates in {certs:?}: {e}"));
        let lines = start_broker(&dir, &["--tls", certs.to_str().expect("a UTF-8 temp dir")]);
        let ssl = lines
            .iter()
            .find_map(|l| l.strip_prefix("SSL="))
            .unwrap_or_else(|| panic!("scripts/kafka start --tls printed no SSL address: {lines:?}"))
            .to_owned();
        TlsBroker { ssl, certs }
    })
}

/// A certificate authority, the broker's certificate for 127.0.0.1, a client's, and a
/// stranger's from another authority: PEM files the broker and librdkafka read.
fn write_certificates(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(dir)?;
    let authority = |name: &str| -> Result<_, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        Ok((params.self_signed(&key)?, key))
    };
    let (ca, ca_key) = authority("augur test authority")?;
    let (other, other_key) = authority("another authority")?;
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text);
    let issue = |names: Vec<String>, common: &str, by: &rcgen::Certificate, by_key: &KeyPair, base: &str| {
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, common);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, by, by_key)?;
        write(&format!("{base}.crt"), cert.pem())?;
        write(&format!("{base}.key"), key.serialize_pem())?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    write("ca.pem", ca.pem())?;
    write("other-ca.pem", other.pem())?;
    issue(vec!["127.0.0.1".into(), "localhost".into()], "127.0.0.1", &ca, &ca_key, "broker")?;
    issue(vec![], "augur-client", &ca, &ca_key, "client")?;
    issue(vec![], "stranger", &other, &other_key, "stranger")?;
    Ok(())
}

/// Runs `scripts/kafka start` for a broker in `dir` watched by this process; returns the
/// lines it printed, the bootstrap address last. Fails the test with the reason when
/// the broker cannot start.
fn start_broker(dir: &Path, extra: &[&str]) -> Vec<String> {
    let out = Command::new(repo_root().join("scripts/kafka"))
        .args(["start", "--dir"])
        .arg(dir)
        .args(["--watch-pid", &std::process::id().to_string()])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/kafka start (a real Apache Kafka broker is required; set KAFKA_BOOTSTRAP to use another): {e}"));
    assert!(
        out.status.success(),
        "scripts/kafka start {extra:?} failed ({}); the integration tests need a real Apache Kafka broker. \
         Set KAFKA_BOOTSTRAP=HOST:PORT to use a running one.",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = stdout.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
    assert!(
        lines.last().is_some_and(|a| a.contains(':')),
        "scripts/kafka start printed no bootstrap address: {stdout:?}"
    );
    lines
}

/// A name no other test (or earlier run) uses: topics, groups, transactional ids.
pub fn unique(prefix: &str) -> String {
    let suffix = Alphanumeric.sample_string(&mut rand::rng(), 10).to_lowercase();
    format!("{prefix}-{suffix}")
}

/// The `augur` binary built for this test run.
pub fn augur() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_augur"));
    c.env("RUST_LOG", "info,rdkafka=warn");
    c
}

/// Runs a command to completion, failing the test with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads every committed record of `topic` that exists now (up to each partition's
/// high watermark, past the markers of transactions), in partition order.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    let mut out = Vec::new();
    augur::kafka::reader::read_to_end(&config, topic, augur::kafka::reader::Start::Beginning, |m| out.push(m.detach()))
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"));
    out
}

/// A Python interpreter with the given PyPI packages, in a virtual environment cached
/// under `~/.cache/augur` (created on first use).
pub fn python_with(packages: &[&str]) -> PathBuf {
    let cache = std::env::var_os("AUGUR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/augur"));
    let venv = cache.join("venv-tests");
    let python = venv.join("bin/python");
    if !python.exists() {
        run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    let missing = !Command::new(&python)
        .arg("-c")
        .arg(packages.iter().map(|p| format!("import {p}")).collect::<Vec<_>>().join(";"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if missing {
        run_ok(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(packages));
    }
    python
}

/// Runs `augur simulate --speed max` into `<prefix>.telemetry` of `bootstrap` with the
/// given further flags; returns its JSON summary (its last line of output).
pub fn simulate(bootstrap: &str, prefix: &str, flags: &[&str]) -> serde_json::Value {
    let out = run_ok(
        augur().args(["simulate", "--brokers", bootstrap, "--topic-prefix", prefix, "--speed", "max"]).args(flags),
    );
    let stdout = String::from_utf8(out.stdout).expect("simulate prints UTF-8");
    serde_json::from_str(stdout.lines().last().expect("simulate prints a summary")).expect("the summary is JSON")
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Status and body of `GET http://addr/path`; `None` while nothing answers there.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::get(format!("http://{addr}{path}")).ok()?;
    Some((r.status().as_u16(), r.text().ok()?))
}

/// The samples of a `/metrics` scrape at `addr` (series → value); empty while the
/// command does not answer yet.
pub fn scrape(addr: &str) -> std::collections::BTreeMap<String, f64> {
    let Some((200, body)) = http_get(addr, "/metrics") else { return Default::default() };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}
