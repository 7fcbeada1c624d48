//! The OS side of the daemon's inputs: the first SIGTERM or SIGINT resolves
//! the shutdown future, each SIGHUP sends a reload, and a SIGTERM or SIGINT
//! while already stopping is passed on (the daemon says what it still
//! waits for). Installed by the caller (`cli.rs`), so [`run`](super::run)
//! itself never touches process-wide signal state and tests drive it
//! in-process with their own future and channel.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::DaemonError;

/// What a running daemon is told on its control channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Read the settings, conf.d/ and templates/ again (SIGHUP).
    Reload,
    /// Stop, again (a second SIGTERM or SIGINT, named): the daemon is
    /// already stopping, and says what it waits for.
    StopAgain(&'static str),
}

/// The shutdown future (the first SIGTERM or SIGINT) and the control
/// channel (SIGHUP, and the stop signals that follow the first).
pub(crate) fn install()
-> Result<(impl Future<Output = ()>, UnboundedReceiver<Control>), DaemonError> {
    let sig = |k| {
        signal(k).map_err(|e| DaemonError::Setup(format!("cannot install signal handler: {e}")))
    };
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let (tx, rx) = unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut stop = Some(stop_tx);
        loop {
            let name = tokio::select! {
                Some(()) = sighup.recv() => {
                    tracing::info!("SIGHUP: reloading settings, resources and templates");
                    if tx.send(Control::Reload).is_err() {
                        break;
                    }
                    continue;
                }
                Some(()) = sigterm.recv() => "SIGTERM",
                Some(()) = sigint.recv() => "SIGINT",
                else => break,
            };
            match stop.take() {
                Some(s) => {
                    tracing::info!("{name}: stopping");
                    let _ = s.send(());
                }
                None => {
                    if tx.send(Control::StopAgain(name)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    Ok((shutdown, rx))
}
