//! The log lines of a batch's outcomes: one line per resource that changed
//! or failed, and quiet while a failure only repeats itself.
//!
//! A resource that keeps failing the same way (a name that does not
//! resolve, a key still missing, a reload still refused) is retried with
//! backoff; each retry is not news. The first failure is an ERROR line; a
//! retry that fails at the same step, revision and message is at debug,
//! with an ERROR reminder every [`REMIND_EVERY`] (an [`Outage`], as the
//! backend's own outages are said); a different failure is an ERROR line
//! again; the first success after failures is one INFO line ("healthy
//! again"). status.json, /metrics and the fleet report record
//! every attempt whatever the log says.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::apply::{Action, Outcome};
use crate::backend::{Outage, Say};

use super::observer::Next;

/// How often a failure that only repeats itself is said again at ERROR.
pub(crate) const REMIND_EVERY: Duration = Duration::from_secs(600);

/// The failures logged, per resource.
#[derive(Default)]
pub(crate) struct OutcomeLog {
    failing: HashMap<String, Failing>,
}

/// A resource failing since its first ERROR line.
struct Failing {
    /// Step, revision and message of the last failure said at ERROR.
    said: (String, i64, String),
    /// When to say it (once, then a reminder every [`REMIND_EVERY`]), how
    /// long and how many attempts it has lasted.
    outage: Outage,
}

impl OutcomeLog {
    /// Logs `outcomes` (what happens `next` to each failure).
    pub(crate) fn log(&mut self, outcomes: &[Outcome], next: &BTreeMap<&str, Next>) {
        for o in outcomes {
            let ms = o.render_time.as_secs_f64() * 1000.0;
            let f = match &o.result {
                Ok(action) => {
                    if let Some(mut was) = self.failing.remove(&o.name) {
                        let lasted = was.outage.lasted().as_secs();
                        tracing::info!(
                            resource = %o.name, revision = o.revision,
                            "{}: healthy again at revision {} (failing for {lasted}s, {} failed attempt(s))",
                            o.name, o.revision, was.outage.over()
                        );
                    }
                    match action {
                        Action::Unchanged => tracing::debug!(
                            resource = %o.name, revision = o.revision,
                            "{}: rendered revision {}: unchanged ({ms:.1}ms)", o.name, o.revision
                        ),
                        // Logged by `apply` as it happened, before the reloads.
                        Action::Installed => {}
                        Action::WouldChange => tracing::info!(
                            resource = %o.name, revision = o.revision,
                            "{}: rendered revision {}: {} would change ({})",
                            o.name, o.revision, o.dest.display(), o.changed.as_deref().unwrap_or("")
                        ),
                    }
                    continue;
                }
                Err(f) => f,
            };
            let then = match next.get(o.name.as_str()) {
                Some(Next::Parked(why)) => why.clone(),
                Some(Next::Retry(d)) => format!("retrying in {:.1}s", d.as_secs_f64()),
                None => "retrying in 0.0s".to_string(),
            };
            let message = crate::logging::one_line(&f.message);
            let key = (f.step.to_string(), o.revision, message.to_string());
            let failing = self
                .failing
                .entry(o.name.clone())
                .or_insert_with(|| Failing {
                    said: key.clone(),
                    outage: Outage::reminding_every(REMIND_EVERY),
                });
            if failing.said != key {
                failing.said = key;
                failing.outage.restate();
            }
            let still = match failing.outage.failed() {
                Say::First => String::new(),
                Say::Again(lasted) => format!(" (still failing: {lasted})"),
                Say::Quiet => {
                    tracing::debug!(
                        resource = %o.name, revision = o.revision, step = %f.step,
                        "{}: {} failed again at revision {} (the same error); {then}",
                        o.name, f.step, o.revision
                    );
                    continue;
                }
            };
            tracing::error!(
                resource = %o.name, revision = o.revision, step = %f.step,
                "{}: {} failed at revision {}{still}: {message}; {then}",
                o.name, f.step, o.revision
            );
        }
    }

    /// Forgets resources no longer configured.
    pub(crate) fn retain(&mut self, configured: impl Fn(&str) -> bool) {
        self.failing.retain(|name, _| configured(name));
    }
}
