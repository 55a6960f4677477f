//! One shutdown mechanism for every service: a cancellation token cancelled on
//! SIGTERM or Ctrl-C. Tasks take the token as a parameter and stop fetching
//! when it fires; in tests the token is cancelled directly.

pub use tokio_util::sync::{CancellationToken, DropGuard};

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        }
        fired.cancel();
    });
    token
}
