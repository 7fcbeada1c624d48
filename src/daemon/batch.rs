//! Running a planned batch: [`apply`](crate::apply::apply) on a task of
//! its own, with an O(1) clone of the mirror, reporting back on a channel.
//!
//! A batch's installs travel on the same channel as its end, so each
//! arrives before it. This module must never touch the daemon's state: what
//! a batch has to say comes back as a [`BatchMsg`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::apply::{self, Failure, Options, Outcome, Step};
use crate::owed::Owed;
use crate::resource::Resource;
use crate::store::Snapshot;
use crate::templates::TemplateSet;

/// What running batches tell the daemon.
pub(crate) enum BatchMsg {
    /// A resource's own steps are done (it was installed, unchanged, or
    /// failed); the batch goes on (others, reloads).
    Installed(Outcome),
    /// The batch ended.
    Done(BatchDone),
}

/// A batch's report: the names it held busy (its whole reload group) and
/// the outcome of each resource it applied.
pub(crate) struct BatchDone {
    pub group: String,
    pub held: Vec<String>,
    pub outcomes: Vec<Outcome>,
}

/// What every batch shares: the data and the way back.
#[derive(Clone)]
pub(crate) struct Context {
    pub mirror: Snapshot,
    pub templates: Arc<TemplateSet>,
    pub opts: Options,
    pub owed: Owed,
    pub tx: UnboundedSender<BatchMsg>,
}

/// The hook that sends each install on the batches' channel.
pub(crate) fn install_hook(tx: UnboundedSender<BatchMsg>) -> apply::InstallHook {
    apply::InstallHook(Arc::new(move |o: &Outcome| {
        let _ = tx.send(BatchMsg::Installed(o.clone()));
    }))
}

/// Starts one batch of `resources` for reload `group`, holding `held`.
pub(crate) fn spawn(group: String, held: Vec<String>, resources: Vec<Resource>, cx: Context) {
    tokio::spawn(async move {
        let names: Vec<(String, PathBuf)> = resources
            .iter()
            .map(|r| (r.name.clone(), r.dest.clone()))
            .collect();
        let revision = cx.mirror.revision();
        let Context {
            mirror,
            templates,
            opts,
            owed,
            tx,
        } = cx;
        // On this task, not one of its own: the installs and the end are
        // then sent in the same turn when nothing comes between them, and
        // the daemon handles them as one (one status.json write).
        let work = CatchPanic(Box::pin(async move {
            let refs: Vec<&Resource> = resources.iter().collect();
            apply::apply(&refs, &mirror, &templates, &opts, &owed).await
        }));
        let outcomes = match work.await {
            Ok(o) => o,
            // Never expected; if it happens the daemon records the
            // failure and retries rather than losing the resources.
            Err(e) => names
                .into_iter()
                .map(|(name, dest)| internal_error(name, dest, revision, &e))
                .collect(),
        };
        let _ = tx.send(BatchMsg::Done(BatchDone {
            group,
            held,
            outcomes,
        }));
    });
}

/// A future whose panic comes back as an error (the panic's message)
/// instead of unwinding through the task that awaits it.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string()))),
        }
    }
}

fn internal_error(
    name: String,
    dest: PathBuf,
    revision: i64,
    e: &dyn std::fmt::Display,
) -> Outcome {
    Outcome {
        name,
        dest,
        revision,
        sha256: None,
        changed: None,
        diff: None,
        result: Err(Failure {
            step: Step::Render,
            message: format!("internal error: {e}"),
        }),
        render_time: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::CatchPanic;

    /// A batch that panics comes back as an error naming the panic, and
    /// the task that awaited it carries on.
    #[tokio::test]
    async fn a_panic_in_a_batch_is_an_error_not_an_unwind() {
        let panicked = CatchPanic(Box::pin(async {
            tokio::task::yield_now().await;
            if std::env::var_os("PATH").is_some() {
                panic!("boom in a batch");
            }
            7
        }))
        .await;
        assert_eq!(panicked, Err("boom in a batch".to_string()));
        let fine = CatchPanic(Box::pin(async { 7 })).await;
        assert_eq!(fine, Ok(7));
    }
}
