//! Whether the brokers let a client in: a client configuration in, a verdict out.
//!
//! librdkafka treats refused credentials and failed TLS handshakes as passing trouble
//! and retries for ever, logging each attempt; a command would sit there looking alive.
//! [`check_access`] asks once for metadata and sorts what comes back into granted,
//! refused (with librdkafka's reason, which never carries a password) or no answer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Why the brokers turned the client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// SASL authentication failed: wrong username, password or mechanism.
    Authentication,
    /// The TLS handshake failed: untrusted broker certificate, or a client
    /// certificate the broker does not accept.
    Tls,
}

/// Collects the errors librdkafka reports while the access check runs.
struct AccessContext {
    refusal: Mutex<Option<(Refusal, String)>>,
}

impl AccessContext {
    fn refuse(&self, refusal: Refusal, reason: &str) {
        if let Ok(mut slot) = self.refusal.lock() {
            slot.get_or_insert((refusal, reason.to_owned()));
        }
    }
}

impl ClientContext for AccessContext {
    /// A broker that requires a client certificate and got none (or one it does not
    /// trust) completes the TLS 1.3 handshake and then sends an alert: librdkafka sees
    /// a failed receive, reports it as a transport failure only once every broker is
    /// down, and logs it at once. The log line is where the refusal shows in time.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL" && (log_message.contains("SSL alert") || log_message.contains("SSL handshake failed")) {
            self.refuse(Refusal::Tls, log_message);
        }
        match level {
            RDKafkaLogLevel::Debug => tracing::debug!(fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice => tracing::info!(fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(fac, "librdkafka: {log_message}"),
            _ => tracing::error!(fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let refusal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => Refusal::Authentication,
            Some(RDKafkaErrorCode::SSL) => Refusal::Tls,
            _ => {
                tracing::debug!(%error, reason, "Kafka access check");
                return;
            }
        };
        self.refuse(refusal, reason);
    }
}

impl ConsumerContext for AccessContext {}

/// What [`check_access`] found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The brokers answered a metadata request: credentials and TLS are accepted.
    Granted,
    /// The brokers refused the client; the reason is librdkafka's (it never carries the
    /// password).
    Refused(Refusal, String),
    /// No answer within the time given (brokers down or slow): the command goes on and
    /// its clients keep retrying, as they would without a check.
    Unknown,
}

/// Asks the brokers for their metadata with `config` and reports whether they let the
/// client in. librdkafka treats refused credentials as a passing trouble and retries
/// for ever; this is where they become an error at start. Blocking, at most `timeout`.
pub fn check_access(config: &ClientConfig, timeout: Duration) -> Result<Access, KafkaError> {
    let context = AccessContext { refusal: Mutex::new(None) };
    let consumer: BaseConsumer<AccessContext> = config.create_with_context(context)?;
    let deadline = Instant::now() + timeout;
    loop {
        // Short requests, so a refusal reported in between is seen within a moment.
        let step = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(250));
        match consumer.fetch_metadata(None, step) {
            Ok(_) => return Ok(Access::Granted),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) => {
                return Ok(Access::Refused(Refusal::Authentication, e.to_string()))
            }
            Err(_) => {}
        }
        // Errors reach the context through the consumer's queue.
        let _ = consumer.poll(Duration::ZERO);
        if let Some((refusal, reason)) = consumer.context().refusal.lock().ok().and_then(|s| s.clone()) {
            return Ok(Access::Refused(refusal, reason));
        }
        if Instant::now() >= deadline {
            return Ok(Access::Unknown);
        }
    }
}
