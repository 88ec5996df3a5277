//! The Prometheus remote-write protocol 1.0, sender side.
//!
//! In: series with their samples. Out: one HTTP POST per request, protobuf encoded and
//! snappy compressed (block format), with the protocol's headers, and the receiver's
//! answer sorted into what the caller must do: done, retry later, refuse these records,
//! or stop. Prometheus, VictoriaMetrics, Mimir, Thanos and Cortex all take this format.
//!
//! The four messages are declared here by hand with `prost` derives: they are the whole
//! of the protocol's `WriteRequest` we send (metadata and exemplars are not), so
//! generating them from `.proto` files would add a build-time protoc for ten lines.

use std::time::Duration;

use reqwest::{StatusCode, Url};

/// `prometheus.WriteRequest` (field 3, metadata, is not sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples in time order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Protobuf, then snappy's block format (the protocol says block, not framed).
pub fn encode(request: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    let raw = prost::Message::encode_to_vec(request);
    snap::raw::Encoder::new().compress_vec(&raw)
}

/// What the receiver's answer means for the records of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (2xx).
    Accepted,
    /// The receiver or the way to it is unwell (network error, timeout, 5xx, 429):
    /// the same request may succeed later.
    Retry(String),
    /// The receiver refused the data itself (400, 409, 413, 422, ..., or a 500 naming a
    /// TSDB verdict): sending it again cannot help.
    Refused(String),
    /// The receiver refused us, whatever the data (401, 403, 404, 405, 407): the URL or
    /// the credentials are wrong. Refusing the records instead would empty the whole
    /// log into the dead-letter topic over a typo.
    Misconfigured(String),
}

/// Errors of Prometheus' TSDB that refuse a sample whatever the moment.
const TSDB_VERDICTS: [&str; 4] =
    ["too old sample", "out of bounds", "out of order sample", "duplicate sample for timestamp"];

/// Sorts an HTTP status into an [`Outcome`] (2xx handled by the caller).
pub fn classify(status: StatusCode, body: &str) -> Outcome {
    let what = format!("HTTP {status}: {}", body.trim().chars().take(400).collect::<String>());
    match status.as_u16() {
        200..=299 => Outcome::Accepted,
        // Too many requests is the receiver asking to slow down, not a verdict on the data.
        429 => Outcome::Retry(what),
        401 | 403 | 404 | 405 | 407 => Outcome::Misconfigured(what),
        400..=499 => Outcome::Refused(what),
        // Prometheus up to 2.4x answers 500 for some samples its TSDB refuses for good
        // (Debian bookworm's 2.42 does for "too old sample"): those are verdicts on the
        // data, and retrying them would stall the partition forever.
        500 if TSDB_VERDICTS.iter().any(|v| body.contains(v)) => Outcome::Refused(what),
        // 5xx, and 1xx/3xx that a receiver should never answer (redirects are followed).
        _ => Outcome::Retry(what),
    }
}

/// A remote-write endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    client: reqwest::Client,
    url: Url,
}

impl RemoteWrite {
    pub fn new(url: Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("augur-export/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, url })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// POSTs one encoded request once.
    pub async fn send(&self, body: Vec<u8>) -> Outcome {
        let sent = self
            .client
            .post(self.url.clone())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await;
        match sent {
            Err(e) => Outcome::Retry(format!("{}: {e}", self.url)),
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Outcome::Accepted;
                }
                let body = response.text().await.unwrap_or_default();
                classify(status, &body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_protobuf_in_snappy_blocks_that_decode_back() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: "augur_telemetry".into() },
                    Label { name: "instance".into(), value: "web-1".into() },
                ],
                samples: vec![Sample { value: 0.25, timestamp: 1_700_000_000_000 }],
            }],
        };
        let body = encode(&request).unwrap();
        // Block format: no stream identifier chunk (framed streams start with ff 06 00 00 sNaPpY).
        assert_ne!(body.first(), Some(&0xff));
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let back: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        assert_eq!(back, request);
        // Field numbers of the upstream proto: timeseries = 1, labels = 1, samples = 2,
        // sample value = 1 (double, wire type 1), timestamp = 2 (varint).
        assert_eq!(raw[0], (1 << 3) | 2);
        let sample = prost::Message::encode_to_vec(&Sample { value: 1.0, timestamp: 5 });
        assert_eq!(sample[0], (1 << 3) | 1);
        assert_eq!(sample[9], 2 << 3);
    }

    #[test]
    fn answers_are_sorted_into_retry_refuse_and_stop() {
        assert_eq!(classify(StatusCode::NO_CONTENT, ""), Outcome::Accepted);
        assert!(matches!(classify(StatusCode::SERVICE_UNAVAILABLE, ""), Outcome::Retry(_)));
        assert!(matches!(classify(StatusCode::INTERNAL_SERVER_ERROR, ""), Outcome::Retry(_)));
        assert!(matches!(classify(StatusCode::INTERNAL_SERVER_ERROR, "too old sample\n"), Outcome::Refused(_)));
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, "too old sample"), Outcome::Retry(_)));
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, ""), Outcome::Retry(_)));
        let refused = classify(StatusCode::BAD_REQUEST, "out of bounds\n");
        assert_eq!(refused, Outcome::Refused("HTTP 400 Bad Request: out of bounds".into()));
        assert!(matches!(classify(StatusCode::PAYLOAD_TOO_LARGE, ""), Outcome::Refused(_)));
        assert!(matches!(classify(StatusCode::NOT_FOUND, ""), Outcome::Misconfigured(_)));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, ""), Outcome::Misconfigured(_)));
    }

    #[tokio::test]
    async fn a_refused_connection_is_worth_a_retry() {
        // Port 1 on loopback: nothing listens there without root and intent.
        let rw = RemoteWrite::new("http://127.0.0.1:1/api/v1/write".parse().unwrap(), Duration::from_secs(2)).unwrap();
        assert!(matches!(rw.send(Vec::new()).await, Outcome::Retry(_)));
    }
}
