//! The key mirror: the backend's data events applied to one in-memory
//! snapshot, and which resources each one touches.
//!
//! Nothing renders before the first complete view has arrived
//! ([`Mirror::view`] is `None` until then, and again after a new watch was
//! started). A change costs an O(log n) update and an O(depth) dependency
//! look-up; a new snapshot is compared with the mirror under the watched
//! roots only. This module must never schedule, render or report: it says
//! what changed and leaves the rest to the event loop.

use std::collections::BTreeSet;

use crate::backend::SnapshotReason;
use crate::deps::Deps;
use crate::resource::Resource;
use crate::store::{Change, Snapshot};

/// The resources a data event touches.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// Indices of the touched resources (every one: `all`).
    pub resources: BTreeSet<usize>,
    /// The first complete view: every resource renders.
    pub all: bool,
    /// Render at once, without waiting out the coalescing window (a
    /// resync found something the watch missed).
    pub now: bool,
    /// Keys a resync found the watch had missed.
    pub missed: usize,
}

#[derive(Default)]
pub(crate) struct Mirror {
    view: Option<Snapshot>,
    deps: Deps,
    /// The watched roots (a new snapshot is compared under these).
    roots: Vec<String>,
    /// The newest revision any view has had (kept when the view is
    /// dropped: a backend that replaces another goes on from it).
    newest: i64,
}

impl Mirror {
    /// The resources after a (re)load: who depends on what.
    pub(crate) fn configure(&mut self, resources: &[Resource], roots: Vec<String>) {
        self.deps = Deps::new(resources);
        self.roots = roots;
    }

    /// The complete view, once there is one.
    pub(crate) fn view(&self) -> Option<&Snapshot> {
        self.view.as_ref()
    }

    /// Forgets the view (a new watch starts with a new first snapshot).
    pub(crate) fn drop_view(&mut self) {
        self.view = None;
    }

    /// The newest revision delivered so far, this view or an earlier one.
    pub(crate) fn newest(&self) -> i64 {
        self.newest
    }

    /// Keys changed at `revision`; `None` before the first view (the
    /// snapshot to come includes them).
    pub(crate) fn changes(&mut self, revision: i64, changes: Vec<Change>) -> Option<Touched> {
        let mirror = self.view.as_mut()?;
        let mut touched = Touched::default();
        for c in changes {
            // A put of the value a key already holds touches its resources
            // too: etcd moved the key's mod revision, so `fleet` and
            // `fleet wait` expect their files to reflect it. Their render
            // comes out unchanged (no install, no reload) and records the
            // revision.
            self.deps.affected(c.key(), &mut touched.resources);
            mirror.apply(c);
        }
        if revision > mirror.revision() {
            mirror.set_revision(revision);
        }
        self.newest = self.newest.max(mirror.revision());
        Some(touched)
    }

    /// A complete view replaces the mirror: the first one touches every
    /// resource, a later one those under the keys that differ.
    pub(crate) fn snapshot(&mut self, snapshot: Snapshot, reason: SnapshotReason) -> Touched {
        self.newest = self.newest.max(snapshot.revision());
        let Some(old) = self.view.take() else {
            tracing::info!(
                revision = snapshot.revision(),
                keys = snapshot.len(),
                "initial snapshot"
            );
            self.view = Some(snapshot);
            return Touched {
                all: true,
                ..Touched::default()
            };
        };
        let diff = old.diff_under(&snapshot, &self.roots);
        let resync = reason == SnapshotReason::Resync;
        if resync && !diff.is_empty() {
            tracing::warn!(
                revision = snapshot.revision(),
                differing = diff.len(),
                first = %diff[0],
                "RESYNC FOUND {} KEY(S) THE WATCH MISSED; re-rendering what depends on them",
                diff.len()
            );
        } else if !resync {
            tracing::info!(
                revision = snapshot.revision(),
                changed = diff.len(),
                ?reason,
                "new snapshot"
            );
        }
        let mut touched = Touched {
            now: resync,
            missed: if resync { diff.len() } else { 0 },
            ..Touched::default()
        };
        for k in &diff {
            self.deps.affected(k, &mut touched.resources);
        }
        self.view = Some(snapshot);
        touched
    }
}
