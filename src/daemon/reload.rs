//! SIGHUP (or a changed configuration directory): settings, conf.d and
//! templates read again; what follows the new settings, and what needs a
//! new backend connection or a restart.

use super::Daemon;
use crate::backend;
use crate::settings::Settings;
use crate::status::ConfigError;

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// SIGHUP (or the test's reload channel).
    Signal,
    /// `watch_confdir` saw conf.d/ or templates/ change.
    ConfDir,
}

impl Trigger {
    fn describe(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::ConfDir => "a change in the configuration directory",
        }
    }
}

impl Daemon {
    /// SIGHUP: settings, conf.d and templates again. The backend keeps its
    /// watch unless what it watches (or how it connects) changed. A
    /// configuration that does not load changes nothing, and is reported
    /// where monitoring looks until a reload succeeds.
    pub(super) fn reload(&mut self, trigger: Trigger) {
        let failed = |file: String, message: String| ConfigError {
            file,
            message,
            trigger: trigger.describe().to_string(),
            at: crate::status::now(),
        };
        let settings =
            match Settings::load(self.source.config.as_deref(), self.source.flags.clone()) {
                Ok(s) => s,
                Err(e) => {
                    self.observer.config_failed(failed(e.where_, e.message));
                    return;
                }
            };
        settings.log_warnings();
        let old_settings = std::mem::replace(&mut self.settings, settings);
        if let Err(e) = self.load() {
            let conf_d = self.settings.conf_d().display().to_string();
            self.settings = old_settings;
            self.observer
                .config_failed(failed(conf_d, format!("{e:#}")));
            return;
        }
        // What batches take from the settings follows them (DNS server and
        // output limit for renders, reload splay, owed-reload markers).
        let crate::settings::BatchSettings {
            env,
            reload_splay,
            owed_dir,
        } = self.settings.batch(self.opts.noop);
        self.opts.env = env;
        self.opts.reload_splay = reload_splay;
        self.opts.owed_dir = owed_dir;
        // One line per changed setting: applied, reconnecting, or needs a
        // restart (each setting says which, in settings/defs.rs).
        let reconnect = backend_changed(&old_settings, &self.settings);
        crate::settings::log_reload_effects(&old_settings, &self.settings, reconnect);
        // (What was pending is forgotten, and so are removed resources:
        // `load` told the planner; everything is marked again below.)
        // The watch is kept unless something new must be watched (fewer
        // prefixes: the extra events change keys nobody renders).
        let watched = self.watched();
        let covered = self.backend.covers(&watched);
        let restart = !covered || reconnect;
        if restart {
            tracing::info!("watched prefixes or backend settings changed: new snapshot and watch");
            self.mirror.drop_view();
            self.backend.restart(&self.settings, watched);
        }
        // Owed reloads follow the markers (the state directory may have
        // moved) and the resources (one without a reload owes nothing).
        self.owed
            .configure(self.opts.owed_dir.as_deref(), &self.resources);
        self.planner.mark_all(tokio::time::Instant::now());
        let n = self.resources.len();
        tracing::info!(
            "configuration reloaded: {}",
            crate::logging::count(n, "resource")
        );
    }
}

/// Settings of the connection to the backend: a change means a new one.
/// Each backend says what its connection is made of.
fn backend_changed(a: &Settings, b: &Settings) -> bool {
    backend::open(a).identity() != backend::open(b).identity()
}
