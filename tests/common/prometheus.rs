//! A real Prometheus server per test, taking remote write, and PromQL over its HTTP API.
//!
//! `scripts/prometheus start` installs Debian's package if `prometheus` is missing (as
//! root; otherwise it fails saying what to install), starts the server on a free
//! loopback port with an empty database in a temporary directory, and leaves a watchdog
//! tied to this process's pid, so the server never outlives the tests. A test that needs
//! Prometheus and cannot have one fails with the reason; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::repo_root;

pub struct Prometheus {
    /// Removed by the watchdog once the test process is gone, or on drop.
    dir: tempfile::TempDir,
    url: String,
    port: u16,
}

fn script(args: &[&str], dir: &Path) -> String {
    let out = Command::new(repo_root().join("scripts/prometheus"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/prometheus {args:?}: {e}"));
    assert!(
        out.status.success(),
        "scripts/prometheus {args:?} failed ({}); the export tests need a real Prometheus 2.33+ \
         (Debian: apt-get install prometheus)",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned()
}

impl Prometheus {
    /// A new server with an empty database.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("augur-test-prometheus-").tempdir().expect("temporary directory");
        let pid = std::process::id().to_string();
        let url = script(&["start", "--watch-pid", &pid], dir.path());
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("scripts/prometheus start printed no URL: {url:?}"));
        Self { dir, url, port }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    /// Stops the server; its data stays for [`Self::restart`].
    pub fn stop(&self) {
        script(&["stop"], self.dir.path());
    }

    /// Starts the server again at the same address, on the same data.
    pub fn restart(&self) {
        let pid = std::process::id().to_string();
        let url = script(&["start", "--port", &self.port.to_string(), "--watch-pid", &pid], self.dir.path());
        assert_eq!(url, self.url, "restarted at another address");
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Evaluates `promql` at `at_s` (seconds since the epoch) with `/api/v1/query`;
    /// returns `data.result`, failing the test on any error.
    pub fn query(&self, promql: &str, at_s: f64) -> Vec<serde_json::Value> {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let response = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql.to_owned()), ("time", format!("{at_s:.3}"))])
            .send()
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let status = response.status();
        let body = response.text().unwrap_or_else(|e| panic!("query {promql}: {e}"));
        assert!(status.is_success(), "query {promql}: HTTP {status}: {body}");
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {promql}: {e}"));
        assert_eq!(v["status"], "success", "query {promql}: {body}");
        match v["data"]["result"].take() {
            serde_json::Value::Array(result) => result,
            other => panic!("query {promql}: result is not an array: {other}"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Best effort: a failing stop must not turn a test failure into a double panic.
        let _ = Command::new(repo_root().join("scripts/prometheus"))
            .args(["stop", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
