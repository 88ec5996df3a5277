//! Turns SIGTERM and SIGINT into a cancellation every long-running stage watches.
//!
//! The first signal cancels the token: stages finish their batch, flush or abort, and
//! return. A second signal exits at once with status 130, for an operator who will not
//! wait.

use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn on_signals() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let cancel = token.clone();
    // The listeners are made once and kept: a listener made after a signal arrived
    // can report that same signal again, which would turn one SIGTERM into two.
    let listeners = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = listeners else {
            // Without signal handlers (never on Linux), fall back to Ctrl-C only.
            let _ = tokio::signal::ctrl_c().await;
            cancel.cancel();
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested; a second signal exits immediately");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}
