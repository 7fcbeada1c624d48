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
        let work = tokio::spawn(async move {
            let refs: Vec<&Resource> = resources.iter().collect();
            apply::apply(&refs, &mirror, &templates, &opts, &owed).await
        });
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
