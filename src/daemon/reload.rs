//! SIGHUP (or a changed configuration directory): settings, conf.d and
//! templates read again; what follows the new settings, and what needs a
//! new backend connection or a restart.

use std::path::Path;

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

/// Settings that load but cannot run a daemon, found before anything is
/// acted on: what `liveconf check` refuses about the backend's connection
/// (an unreadable certificate, a user without a password file, an endpoint
/// that is not http(s)), a `log_level` logging would refuse at the next
/// start, a state directory that cannot be created or written (unless
/// `noop`: nothing is written there then). At start the daemon exits with
/// the message (exit 3); on SIGHUP it keeps its running configuration and
/// reports it as a configuration that did not load.
pub(super) fn check(settings: &Settings, noop: bool) -> Result<(), String> {
    crate::logging::check_level(&settings.log_level).map_err(|e| e.to_string())?;
    backend::open(settings).check().map_err(|e| e.to_string())?;
    if !noop {
        writable(&settings.state_dir)?;
    }
    Ok(())
}

/// Whether the state directory can hold status.json: created if missing,
/// and a file written in it (then removed).
fn writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "state_dir {}: cannot create the directory: {e}",
            dir.display()
        )
    })?;
    tempfile::Builder::new()
        .prefix(".liveconf-probe.")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("state_dir {}: cannot write in it: {e}", dir.display()))
}

/// Where a setting of `settings` comes from, for a configuration error:
/// the settings file, or the command line when there is none.
fn settings_source(settings: &Settings) -> String {
    settings
        .config_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "command line".into())
}

impl Daemon {
    /// SIGHUP: settings, conf.d and templates again. The backend keeps its
    /// watch unless what it watches (or how it connects) changed, or it is
    /// unavailable (then it tries again at once, discovery included). A
    /// configuration that does not load, or holds settings the daemon could
    /// not run with, changes nothing, and is reported where monitoring
    /// looks until a reload succeeds.
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
        if let Err(message) = check(&settings, self.opts.noop) {
            self.observer
                .config_failed(failed(settings_source(&settings), message));
            return;
        }
        settings.log_warnings_since(Some(&self.settings));
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
        self.dns
            .configure(self.opts.env.dns.clone(), self.settings.dns_timing());
        self.opts.env.live = Some(crate::dnsdeps::Live(self.dns.clone()));
        self.opts.reload_splay = reload_splay;
        self.opts.owed_dir = owed_dir;
        // One line per changed setting, with its old and new value:
        // applied, reconnecting, or needs a restart (each setting says
        // which, in settings/defs.rs; a restart-only one is compared with
        // the value the daemon runs with).
        let reconnect = backend_changed(&old_settings, &self.settings);
        crate::settings::log_reload_effects(
            &old_settings,
            &self.settings,
            &self.started_with,
            reconnect,
        );
        // (What was pending is forgotten, and so are removed resources:
        // `load` told the planner; everything is marked again below.)
        // The watch is kept unless something new must be watched (fewer
        // prefixes: the extra events change keys nobody renders).
        let watched = self.watched();
        let covered = self.backend.covers(&watched);
        let after = self.mirror.newest();
        if !covered || reconnect {
            tracing::info!("watched prefixes or backend settings changed: new snapshot and watch");
            // New connection settings for the same SRV record (a new
            // dns_server): the connection in use stays, and delivers,
            // until the new one has found its endpoints; the keys in
            // memory stay the view, and status stays as it is.
            let kept = if reconnect {
                let connected = self.observer.is_connected();
                self.backend
                    .reconnect(&self.settings, watched, after, connected)
            } else {
                self.backend.restart(&self.settings, watched, after);
                false
            };
            if !kept {
                self.mirror.drop_view();
            }
            if reconnect && !kept {
                // Not connected to the new backend yet: status names what
                // is being tried, not the old connection.
                self.observer
                    .reconnecting(self.backend.backend().describe());
            }
        } else if !self.observer.is_connected() {
            // Unavailable: try again now (an etcd found by SRV discovery is
            // looked up again). The keys in memory stay the view until the
            // new snapshot replaces it.
            tracing::info!("backend unavailable: trying to connect again now");
            self.backend.restart(&self.settings, watched, after);
        }
        // Owed reloads follow the markers (the state directory may have
        // moved) and the resources (one without a reload owes nothing).
        self.owed
            .configure(self.opts.owed_dir.as_deref(), &self.resources);
        // So do the records of running hooks (a kill of the daemon and its
        // guards leaves them where the next start looks).
        if !self.opts.noop {
            crate::hookguard::relocate(&self.settings.state_dir);
        }
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
