//! The `webhook` backend and the critical tier's notifications: adjustments and alerts
//! POSTed as JSON to a URL the platform team runs.
//!
//! In: an adjustment and its plan. Out: one POST per attempt with the header
//! `Idempotency-Key: <adjustment id>`, so a receiver that honours the key makes one
//! effect of any number of deliveries (the actuator delivers again only after a crash
//! between the effect and its audit). The receiver holds the fence: `observe` knows
//! no resources and no fence, and the guardrails work from the adjustment's factors.
//! Answers are sorted as the exporter sorts remote-write answers: 5xx, 429 and network
//! errors are retried, 401/403/404/405/407 stop the actuator (wrong URL or
//! credentials), other 4xx refuse this adjustment; 409 means the same key is still
//! being handled and is retried.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::json;

use crate::actuate::backend::{Backend, BackendError, Fence, Observed};
use crate::codec::Adjustment;
use crate::export::remote_write::{classify, Outcome};
use crate::policy::plan::{Plan, Resources};

/// What the JSON body carries, besides the adjustment and its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `{"adjustment": {...}, "plan": {...}}` for a controller of the team's own.
    Adjustment,
    /// Alertmanager's `POST /api/v2/alerts` body (a list of alerts with labels,
    /// annotations and `startsAt`), which on-call tools take as it is.
    Alertmanager,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: Url,
    payload: Payload,
    name: &'static str,
}

impl Webhook {
    /// `name` is what actuation records call the backend (`webhook`, `notify`).
    pub fn new(url: Url, payload: Payload, name: &'static str, timeout: Duration) -> Result<Self, BackendError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BackendError::Fatal(format!("{url}: only http and https URLs are supported")));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("augur-actuate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BackendError::Fatal(format!("HTTP client: {e}")))?;
        Ok(Self { client, url, payload, name })
    }

    fn body(&self, adjustment: &Adjustment, plan: &Plan) -> serde_json::Value {
        match self.payload {
            Payload::Adjustment => json!({ "adjustment": adjustment, "plan": plan }),
            Payload::Alertmanager => alertmanager(adjustment),
        }
    }
}

/// One Alertmanager alert for a critical-tier adjustment: labels identify the instance
/// (not the adjustment, so repeated notifications group), annotations say why.
pub fn alertmanager(adjustment: &Adjustment) -> serde_json::Value {
    let starts = chrono::DateTime::from_timestamp_millis(adjustment.event_time_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    json!([{
        "labels": {
            "alertname": "AugurFailurePredicted",
            "severity": "critical",
            "instance": adjustment.instance_id,
            "app_type": adjustment.app_type,
            "function": adjustment.function,
        },
        "annotations": {
            "summary": format!("{} is predicted to fail: {}", adjustment.instance_id, adjustment.reason),
            "adjustment_id": adjustment.id,
            "alert_id": adjustment.alert_id,
            "tier": adjustment.tier.to_string(),
        },
        "startsAt": starts,
    }])
}

impl Backend for Webhook {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn observe(&self, _: &Adjustment) -> Result<Observed, BackendError> {
        Ok(Observed { resources: Resources::default(), fence: Fence::Absent })
    }

    async fn apply(&self, adjustment: &Adjustment, plan: &Plan) -> Result<String, BackendError> {
        let sent = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", &adjustment.id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body(adjustment, plan).to_string())
            .send()
            .await;
        let response = sent.map_err(|e| BackendError::Transient(format!("POST {}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(format!("POST {}: {status}", self.url));
        }
        let body = response.text().await.unwrap_or_default();
        if status == StatusCode::CONFLICT {
            return Err(BackendError::Transient(format!(
                "POST {}: {status}: the key is still being handled",
                self.url
            )));
        }
        Err(match classify(status, &body) {
            Outcome::Accepted => return Ok(format!("POST {}: {status}", self.url)),
            Outcome::Retry(what) => BackendError::Transient(format!("POST {}: {what}", self.url)),
            Outcome::Refused(what) => BackendError::Refused(format!("POST {}: {what}", self.url)),
            Outcome::Misconfigured(what) => BackendError::Fatal(format!("POST {}: {what}", self.url)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Action;

    #[test]
    fn alertmanager_payload_names_the_instance_and_the_reason() {
        let a = Adjustment {
            id: "web-0001/anomaly/tier-3/60000/notify".into(),
            alert_id: "web-0001/anomaly/tier-3/60000".into(),
            instance_id: "web-0001".into(),
            app_type: "web".into(),
            function: "checkout".into(),
            action: Action::Notify,
            cpu_factor: 1.0,
            memory_factor: 1.0,
            replicas_delta: 0,
            shed_fraction: 0.0,
            tier: 3,
            reason: "anomaly score 95 (tier 91-100)".into(),
            dry_run: false,
            event_time_ms: 60_000,
        };
        let v = alertmanager(&a);
        assert_eq!(v[0]["labels"]["instance"], "web-0001");
        assert_eq!(v[0]["labels"]["severity"], "critical");
        assert_eq!(v[0]["startsAt"], "1970-01-01T00:01:00.000Z");
        assert!(v[0]["annotations"]["summary"].as_str().unwrap().contains("score 95"));
    }

    #[test]
    fn only_http_urls_are_taken() {
        let e = Webhook::new(Url::parse("ftp://x/").unwrap(), Payload::Adjustment, "webhook", Duration::from_secs(1));
        assert!(matches!(e, Err(BackendError::Fatal(m)) if m.contains("only http")));
    }
}
