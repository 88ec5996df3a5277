//! The application's own view of its health, from its Prometheus endpoint: request
//! rate, error rate and p99 latency.
//!
//! In: the text exposition format from an HTTP endpoint, scraped once per tick. Out:
//! requests per second and errors per request from the increase of counters between
//! two scrapes, and the 99th percentile of request duration from the increase of a
//! histogram's buckets (as PromQL's `histogram_quantile(0.99, rate(..._bucket))`), so
//! the figures describe the last interval, not the process's lifetime. Guarantees: the
//! first scrape yields no rates; a failed scrape is reported once and leaves the
//! metrics out, and the next good scrape measures from the last good one; a counter
//! that goes down (the application restarted) counts from zero, as PromQL does.
//!
//! Why not the prometheus-parse crate: it splits label values at `,` and `=` (so
//! `path="/a,b"` breaks a line), recognises histograms only after a `# TYPE` line, and
//! builds owned strings and maps for every series of the endpoint on every scrape.
//! Only a few metric names matter here; lines of other names are skipped after a
//! prefix comparison, and the matching ones are read in place.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use regex::Regex;
use reqwest::Url;

use super::sampler::{seconds_between, Health, Readings, Source};
use crate::codec::metric_names as m;

/// Which series of the endpoint to read.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    pub url: Url,
    /// Counter of requests served, summed over its series.
    pub requests: String,
    /// Counter of failed requests.
    pub errors: ErrorSeries,
    /// Base name of the request-duration histogram, in seconds.
    pub latency: String,
}

/// How failed requests are counted.
#[derive(Debug, Clone)]
pub enum ErrorSeries {
    /// The requests counter's series whose `code`, `status` or `status_code` label is 5xx.
    ServerErrors,
    /// The series a selector picks.
    Selector(Selector),
}

/// A series selector, `NAME` or `NAME{label="v",label=~"regex",...}`, as in PromQL
/// (`=`, `!=`, `=~`, `!~`; regular expressions match whole values).
#[derive(Debug, Clone)]
pub struct Selector {
    name: String,
    matchers: Vec<(String, Match)>,
}

#[derive(Debug, Clone)]
enum Match {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl Selector {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a series with these raw labels is selected.
    fn matches(&self, raw_labels: &str) -> bool {
        self.matchers.iter().all(|(label, m)| {
            // An absent label matches as the empty string, as in PromQL.
            let value = labels(raw_labels).find(|(k, _)| *k == label.as_str()).map(|(_, v)| v).unwrap_or_default();
            match m {
                Match::Equal(v) => value == v.as_str(),
                Match::NotEqual(v) => value != v.as_str(),
                Match::Regex(r) => r.is_match(&value),
                Match::NotRegex(r) => !r.is_match(&value),
            }
        })
    }
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, rest) = match s.find('{') {
            Some(i) => (s[..i].trim(), Some(&s[i + 1..])),
            None => (s, None),
        };
        let name = parse_metric_name(name)?;
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let inner = rest.trim_end().strip_suffix('}').ok_or("missing closing '}'")?;
            let mut rest = inner.trim();
            while !rest.is_empty() {
                let op_at = rest.find(['=', '!']).ok_or_else(|| format!("expected label=\"value\" in {rest:?}"))?;
                let label = rest[..op_at].trim();
                if !is_label_name(label) {
                    return Err(format!("invalid label name {label:?}"));
                }
                let after = &rest[op_at..];
                let (op, after) = ["=~", "!~", "!=", "="]
                    .iter()
                    .find_map(|op| after.strip_prefix(op).map(|a| (*op, a)))
                    .ok_or_else(|| format!("expected =, !=, =~ or !~ after {label}"))?;
                let after = after.trim_start();
                let end = quoted_end(after).ok_or_else(|| format!("the value of {label} must be in double quotes"))?;
                let value = unescape(&after[1..end]).into_owned();
                let anchored = || {
                    Regex::new(&format!("^(?:{value})$"))
                        .map_err(|e| format!("invalid regex for {label}: {}", one_line(&e)))
                };
                let m = match op {
                    "=" => Match::Equal(value.clone()),
                    "!=" => Match::NotEqual(value.clone()),
                    "=~" => Match::Regex(anchored()?),
                    _ => Match::NotRegex(anchored()?),
                };
                matchers.push((label.to_owned(), m));
                rest = after[end + 1..].trim_start();
                rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
            }
        }
        Ok(Self { name, matchers })
    }
}

/// The last line of an error message (the regex crate's span many lines).
pub(super) fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    last.trim().trim_start_matches("error: ").to_owned()
}

/// A valid Prometheus metric name, for flags naming one.
pub fn parse_metric_name(s: &str) -> Result<String, String> {
    let ok = s
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || "_:".contains(c) || (i > 0 && c.is_ascii_digit()));
    if ok && !s.is_empty() {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"))
    }
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().enumerate().all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()))
}

/// Counter totals of one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Totals {
    /// Whether the requests counter was present at all.
    pub requests_seen: bool,
    pub requests: f64,
    pub errors: f64,
    /// Cumulative bucket counts summed over every series, by upper bound, ascending.
    pub buckets: Vec<(f64, f64)>,
}

impl Totals {
    /// Reads the counters of `config` out of an exposition-format body.
    pub(super) fn read(&mut self, body: &str, config: &PrometheusConfig, bucket_name: &str) {
        self.requests_seen = false;
        self.requests = 0.0;
        self.errors = 0.0;
        self.buckets.clear();
        let errors_name = match &config.errors {
            ErrorSeries::Selector(s) => s.name(),
            ErrorSeries::ServerErrors => "",
        };
        for line in body.lines() {
            let line = line.trim_start();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
            let name = &line[..name_end];
            if name != config.requests && name != errors_name && name != bucket_name {
                continue; // the common case: a cheap comparison, nothing parsed
            }
            let Some((raw_labels, value)) = split_sample(&line[name_end..]) else { continue };
            if value.is_nan() {
                continue;
            }
            if name == config.requests {
                self.requests_seen = true;
                self.requests += value;
                if matches!(config.errors, ErrorSeries::ServerErrors) && is_server_error(raw_labels) {
                    self.errors += value;
                }
            }
            if let ErrorSeries::Selector(s) = &config.errors {
                if name == s.name() && s.matches(raw_labels) {
                    self.errors += value;
                }
            }
            if name == bucket_name {
                let le = labels(raw_labels).find(|(k, _)| *k == "le").and_then(|(_, v)| parse_value(&v));
                if let Some(le) = le {
                    match self.buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, count)) => *count += value,
                        None => self.buckets.push((le, value)),
                    }
                }
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

fn is_server_error(raw_labels: &str) -> bool {
    labels(raw_labels)
        .any(|(k, v)| matches!(k, "code" | "status" | "status_code") && v.len() == 3 && v.starts_with('5'))
}

/// Splits what follows a metric name into raw label text and value.
fn split_sample(rest: &str) -> Option<(&str, f64)> {
    let (raw_labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let close = closing_brace(inner)?;
            (&inner[..close], &inner[close + 1..])
        }
        None => ("", rest),
    };
    Some((raw_labels, parse_value(rest.split_ascii_whitespace().next()?)?))
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    s.parse().ok()
}

/// The index of the `}` that closes a label set, skipping quoted values.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The index of the quote that closes the quoted string `s` starts with.
fn quoted_end(s: &str) -> Option<usize> {
    let body = s.strip_prefix('"')?;
    let mut escaped = false;
    for (i, b) in body.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The `name="value"` pairs of raw label text; malformed text ends the iteration.
fn labels(raw: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let end = quoted_end(after)?;
        let value = unescape(&after[1..end]);
        rest = &after[end + 1..];
        Some((name.trim(), value))
    })
}

/// The `q` quantile of a histogram given as cumulative counts by ascending upper
/// bound, interpolated linearly within a bucket as PromQL's `histogram_quantile`
/// does; a quantile in the `+Inf` bucket is the largest finite bound.
pub(super) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_bound, total) = buckets.last()?;
    if last_bound != f64::INFINITY || total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, count)| count >= rank)?;
    if i == buckets.len() - 1 {
        return Some(buckets[i - 1].0);
    }
    let (upper, count) = buckets[i];
    let (lower, below) = match i {
        0 if upper <= 0.0 => return Some(upper),
        0 => (0.0, 0.0),
        _ => buckets[i - 1],
    };
    Some(lower + (upper - lower) * (rank - below) / (count - below))
}

/// Increase of a counter; a decrease means the process restarted and counts from zero.
fn increase(before: f64, now: f64) -> f64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Rates over the interval between two scrapes `seconds` apart.
pub(super) fn rates(before: &Totals, now: &Totals, seconds: f64, scratch: &mut Vec<(f64, f64)>, out: &mut Readings) {
    if before.requests_seen && now.requests_seen {
        let requests = increase(before.requests, now.requests);
        out.push(m::REQUEST_RATE, requests / seconds);
        // With no requests there were no failed ones.
        let ratio = if requests > 0.0 { increase(before.errors, now.errors) / requests } else { 0.0 };
        out.push(m::ERROR_RATE, ratio.clamp(0.0, 1.0));
    }
    let same_layout =
        before.buckets.len() == now.buckets.len() && before.buckets.iter().zip(&now.buckets).all(|(a, b)| a.0 == b.0);
    if !same_layout {
        return; // buckets appeared or changed: measure from the next scrape
    }
    let restarted = match (before.buckets.last(), now.buckets.last()) {
        (Some(a), Some(b)) => b.1 < a.1,
        _ => false,
    };
    scratch.clear();
    let mut running = 0.0f64;
    for (a, b) in before.buckets.iter().zip(&now.buckets) {
        let delta = if restarted { b.1 } else { (b.1 - a.1).max(0.0) };
        // Cumulative counts never fall; summing series scraped at slightly different
        // moments can make them, so keep them monotonic as PromQL does.
        running = running.max(delta);
        scratch.push((b.0, running));
    }
    if let Some(p99) = quantile(0.99, scratch) {
        out.push(m::LATENCY_P99, p99);
    }
}

/// Scrapes the endpoint and keeps the previous totals.
pub(super) struct Scraper {
    client: reqwest::Client,
    config: PrometheusConfig,
    bucket_name: String,
    body: Vec<u8>,
    previous: Option<(Instant, Totals)>,
    current: Totals,
    scratch: Vec<(f64, f64)>,
}

/// A body larger than this is refused: a metrics page that big is a misconfiguration,
/// and the agent must stay small.
const MAX_BODY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the body exceeds {MAX_BODY} bytes")]
    TooLarge,
    #[error("the body is not UTF-8")]
    NotUtf8,
}

impl Scraper {
    pub(super) fn new(config: PrometheusConfig, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(1).build()?;
        Ok(Self {
            client,
            bucket_name: format!("{}_bucket", config.latency),
            config,
            body: Vec::with_capacity(64 * 1024),
            previous: None,
            current: Totals::default(),
            scratch: Vec::new(),
        })
    }

    pub(super) async fn sample(&mut self, now: Instant, health: &mut Health, out: &mut Readings) {
        if let Err(error) = self.fetch().await {
            health.failed(Source::Prometheus, &self.config.url, &error);
            return;
        }
        let Ok(body) = std::str::from_utf8(&self.body) else {
            health.failed(Source::Prometheus, &self.config.url, &ScrapeError::NotUtf8);
            return;
        };
        health.ok(Source::Prometheus);
        self.current.read(body, &self.config, &self.bucket_name);
        if let Some((then, before)) = &mut self.previous {
            if let Some(seconds) = seconds_between(*then, now) {
                rates(before, &self.current, seconds, &mut self.scratch, out);
            }
            // Swap rather than clone: both keep their bucket vectors' capacity.
            std::mem::swap(before, &mut self.current);
            *then = now;
        } else {
            self.previous = Some((now, std::mem::take(&mut self.current)));
        }
    }

    async fn fetch(&mut self) -> Result<(), ScrapeError> {
        self.body.clear();
        let mut response = self
            .client
            .get(self.config.url.clone())
            // The classic text format: never protobuf, whatever the endpoint prefers.
            .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
            .send()
            .await?
            .error_for_status()?;
        while let Some(chunk) = response.chunk().await? {
            if self.body.len() + chunk.len() > MAX_BODY {
                return Err(ScrapeError::TooLarge);
            }
            self.body.extend_from_slice(&chunk);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
