//! Turns SIGTERM and SIGINT into a cancellation every long-running stage watches.
//!
//! The first signal cancels the token: stages finish their batch, flush or abort, and
//! return. A second signal exits at once with status 130, for an operator who will not
//! wait.

use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; a second signal exits immediately");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers (never on Linux), fall back to Ctrl-C only.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
