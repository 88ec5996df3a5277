//! A long-running command's view of itself over HTTP, for Prometheus and Kubernetes.
//!
//! In: a [`prometheus_client`] registry the stage filled with its own metrics, a
//! [`Readiness`] flag the stage raises and lowers, an address and the shutdown token.
//! Out: `GET /metrics` (OpenMetrics text, which Prometheus scrapes as is), `GET /healthz`
//! (200 while the process serves at all: a liveness probe) and `GET /readyz` (200 while
//! the stage says it does its work, 503 otherwise: a readiness probe). The address is
//! bound before [`serve`] returns, so a taken port is an error at start-up, not a
//! silent absence of metrics later. Metrics are never labelled by instance id.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Whether the stage currently does its work; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot listen on {addr} for /metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Served {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Binds `addr` and serves the three endpoints until `shutdown`; returns the bound
/// address (the real port when `addr` asked for port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ObserveError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ObserveError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ObserveError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Served { registry: Arc::new(registry), readiness });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(error) = served {
            tracing::warn!(%error, "the /metrics server stopped");
        }
    });
    Ok((bound, task))
}

/// [`serve`] for a command whose `--metrics-addr` is optional: registers the stage's
/// metrics and serves them when `addr` is given, and logs where. Called before the stage
/// connects anywhere, so a taken port fails the command at once.
pub async fn serve_if(
    addr: Option<SocketAddr>,
    register: impl FnOnce(&mut Registry),
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<(), ObserveError> {
    let Some(addr) = addr else { return Ok(()) };
    let mut registry = Registry::default();
    register(&mut registry);
    let (addr, _server) = serve(addr, registry, readiness.clone(), shutdown.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(())
}

async fn metrics(State(s): State<Served>) -> impl IntoResponse {
    let mut body = String::with_capacity(2048);
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        // Writing into a String fails only on a broken metric implementation.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("{e}\n")),
    }
}

async fn readyz(State(s): State<Served>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{addr}{path}")).await.expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_until_shutdown() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("augur_test_things", "Things seen", counter.clone());
        counter.inc_by(3);
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let (addr, task) =
            serve("127.0.0.1:0".parse().unwrap(), registry, readiness.clone(), shutdown.clone()).await.unwrap();

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("augur_test_things_total 3"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        readiness.set(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);

        // A second server cannot take the same address: an error, not a silent no-op.
        let taken = serve(addr, Registry::default(), Readiness::default(), shutdown.clone()).await;
        assert!(matches!(taken, Err(ObserveError::Bind { .. })));

        shutdown.cancel();
        task.await.unwrap();
    }
}
