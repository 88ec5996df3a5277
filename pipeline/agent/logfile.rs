//! Error lines of the application's log file, per second: the seed's "log anomalies".
//!
//! In: a file the application appends to and a pattern for error lines. Out: lines
//! matching the pattern per second since the previous tick. Guarantees: only lines
//! written after the agent started count, each once; rotation (the path names another
//! file now) and truncation (the file shrank) are followed like `tail -F`: what was
//! appended to the old file is read before the new one is read from its start; a
//! missing file leaves the metric out and is reported once; memory stays bounded
//! whatever the file holds (a line is matched on its first 64 KiB). A file truncated
//! and regrown past the old length between two ticks cannot be told from one that
//! grew; its new lines are partly missed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use regex::bytes::Regex;

use super::sampler::{seconds_between, Health, Readings, Source};
use crate::codec::metric_names as m;

/// Which file to follow and what an error line looks like.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub path: PathBuf,
    pub pattern: Regex,
}

/// The default `--log-pattern`.
pub const DEFAULT_PATTERN: &str = "(?i)error|fatal|panic|exception";

/// Longest prefix of a line that is kept for matching.
const MAX_LINE: usize = 64 * 1024;

pub(super) struct LogTail {
    config: LogConfig,
    open: Option<Open>,
    chunk: Vec<u8>,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// Matching lines since the previous sample.
    matched: u64,
    previous: Option<Instant>,
}

struct Open {
    file: File,
    id: (u64, u64),
    offset: u64,
}

impl LogTail {
    /// Opens the file at its end, so lines already in it are not counted.
    pub(super) fn new(config: LogConfig) -> Self {
        let open = File::open(&config.path).and_then(|mut file| {
            let meta = file.metadata()?;
            let offset = file.seek(SeekFrom::End(0))?;
            Ok(Open { file, id: (meta.dev(), meta.ino()), offset })
        });
        Self {
            config,
            open: open.ok(), // a missing file is reported by the first sample
            chunk: vec![0; 64 * 1024],
            partial: Vec::new(),
            matched: 0,
            previous: None,
        }
    }

    pub(super) fn sample(&mut self, now: Instant, health: &mut Health, out: &mut Readings) {
        if let Err(error) = self.poll() {
            health.failed(Source::LogFile, &self.config.path.display(), &error);
            return;
        }
        health.ok(Source::LogFile);
        let matched = std::mem::take(&mut self.matched);
        if let Some(seconds) = self.previous.and_then(|p| seconds_between(p, now)) {
            out.push(m::LOG_ERRORS, matched as f64 / seconds);
        }
        self.previous = Some(now);
    }

    /// Counts the lines appended since the last poll, following rotation and truncation.
    fn poll(&mut self) -> io::Result<()> {
        let named = std::fs::metadata(&self.config.path);
        if let Some(open) = &mut self.open {
            match &named {
                Ok(meta) if (meta.dev(), meta.ino()) == open.id => {
                    if meta.len() < open.offset {
                        // Truncated in place (copytruncate): everything in it is new.
                        open.offset = open.file.seek(SeekFrom::Start(0))?;
                        self.partial.clear();
                    }
                    return self.read_open();
                }
                _ => {
                    // Rotated or removed. Writers keep appending to the old file until
                    // they reopen, so read it to its end first.
                    self.read_open()?;
                    if named.is_err() {
                        return Ok(()); // no new file yet: keep following the old one
                    }
                    let last = std::mem::take(&mut self.partial);
                    self.matched += u64::from(!last.is_empty() && self.config.pattern.is_match(&last));
                    self.open = None;
                }
            }
        }
        named?;
        // Opened after the agent started: every line of this file is new.
        let file = File::open(&self.config.path)?;
        let meta = file.metadata()?;
        self.open = Some(Open { file, id: (meta.dev(), meta.ino()), offset: 0 });
        self.read_open()
    }

    fn read_open(&mut self) -> io::Result<()> {
        let Some(open) = &mut self.open else { return Ok(()) };
        loop {
            let n = open.file.read(&mut self.chunk)?;
            if n == 0 {
                return Ok(());
            }
            open.offset += n as u64;
            self.matched += count_lines(&self.config.pattern, &self.chunk[..n], &mut self.partial);
        }
    }
}

/// Counts the complete lines of `chunk` that match, continuing the line `partial`
/// holds from the previous chunk and leaving the unterminated end in it.
pub(super) fn count_lines(pattern: &Regex, chunk: &[u8], partial: &mut Vec<u8>) -> u64 {
    let mut matched = 0;
    let mut rest = chunk;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let hit = if partial.is_empty() {
            pattern.is_match(&line[..line.len().min(MAX_LINE)])
        } else {
            extend_bounded(partial, line);
            let hit = pattern.is_match(partial);
            partial.clear();
            hit
        };
        matched += u64::from(hit);
        rest = &rest[end + 1..];
    }
    extend_bounded(partial, rest);
    matched
}

fn extend_bounded(partial: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(partial.len());
    partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    fn pattern() -> Regex {
        Regex::new(DEFAULT_PATTERN).unwrap()
    }

    fn append(path: &std::path::Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    /// Samples at whole seconds, so each reading is matching lines per tick.
    struct Probe {
        tail: LogTail,
        health: Health,
        t0: Instant,
        tick: u64,
    }

    impl Probe {
        fn new(path: &std::path::Path) -> Self {
            let tail = LogTail::new(LogConfig { path: path.to_owned(), pattern: pattern() });
            Self { tail, health: Health::default(), t0: Instant::now(), tick: 0 }
        }
        fn sample(&mut self) -> Option<f64> {
            let mut out = Readings::default();
            self.tail.sample(self.t0 + Duration::from_secs(self.tick), &mut self.health, &mut out);
            self.tick += 1;
            out.get(m::LOG_ERRORS)
        }
    }

    #[test]
    fn counts_matching_lines_written_after_start_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "ERROR before the agent started\n");
        let mut p = Probe::new(&path);
        assert_eq!(p.sample(), None, "the first sample has no rate");
        append(&path, "info ok\nwarn: Exception in thread main\nFATAL disk\nPanic!\nall good\n");
        assert_eq!(p.sample(), Some(3.0));
        assert_eq!(p.sample(), Some(0.0), "nothing new: zero, not absent");
        // A line counts once its end is written, not before.
        append(&path, "error: half a li");
        assert_eq!(p.sample(), Some(0.0));
        append(&path, "ne\nok\n");
        assert_eq!(p.sample(), Some(1.0));
        assert_eq!(p.health.warnings(), 0);
    }

    #[test]
    fn follows_rotation_reading_the_old_file_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "start\n");
        let mut p = Probe::new(&path);
        p.sample();
        append(&path, "error one\n");
        let rotated = dir.path().join("app.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        // The application still writes to the renamed file, then reopens the path.
        append(&rotated, "error two\nan unterminated error");
        append(&path, "error three\nfine\nerror four\n");
        assert_eq!(p.sample(), Some(5.0), "two and the tail of the old file, two of the new");
        append(&path, "error five\n");
        append(&rotated, "error in the old file after the switch\n");
        assert_eq!(p.sample(), Some(1.0), "the new file only");
    }

    #[test]
    fn follows_truncation_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "a long line that makes the file longer than what follows\n");
        let mut p = Probe::new(&path);
        p.sample();
        std::fs::write(&path, "error after truncation\n").unwrap();
        assert_eq!(p.sample(), Some(1.0));
    }

    #[test]
    fn missing_file_is_absent_warned_once_and_picked_up_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut p = Probe::new(&path);
        assert_eq!(p.sample(), None);
        assert_eq!(p.sample(), None);
        assert_eq!(p.health.warnings(), 1, "one warning for the outage, not one per tick");
        append(&path, "error at creation\n");
        assert_eq!(p.sample(), None, "the first readable sample is the baseline");
        append(&path, "error after\nerror again\n");
        assert_eq!(p.sample(), Some(2.0));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.sample(), Some(0.0), "removed: the open file is still followed");
        assert_eq!(p.health.warnings(), 1);
    }

    #[test]
    fn long_lines_are_bounded_and_still_matched() {
        let mut partial = Vec::new();
        let long = "x".repeat(3 * MAX_LINE);
        assert_eq!(count_lines(&pattern(), format!("error {long}").as_bytes(), &mut partial), 0);
        assert_eq!(partial.len(), MAX_LINE);
        assert_eq!(count_lines(&pattern(), format!("{long}\nok\n").as_bytes(), &mut partial), 1);
        assert!(partial.is_empty());
        assert_eq!(count_lines(&pattern(), format!("{long}error\n").as_bytes(), &mut partial), 0, "beyond 64 KiB");
    }
}
