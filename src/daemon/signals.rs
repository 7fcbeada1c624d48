//! The OS side of the daemon's inputs: SIGTERM and SIGINT resolve the
//! shutdown future, each SIGHUP sends a reload. Installed by the caller
//! (`cli.rs`), so [`run`](super::run) itself never touches process-wide
//! signal state and tests drive it in-process with their own future and
//! channel.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::DaemonError;

/// The shutdown future (SIGTERM, SIGINT) and the reload channel (SIGHUP).
pub(crate) fn install() -> Result<(impl Future<Output = ()>, UnboundedReceiver<()>), DaemonError> {
    let sig = |k| {
        signal(k).map_err(|e| DaemonError::Setup(format!("cannot install signal handler: {e}")))
    };
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while sighup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading settings, resources and templates");
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
            _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        }
    };
    Ok((shutdown, rx))
}
