//! The daemon driven in-process: the file backend in a temporary
//! directory, a shutdown future and a reload channel of the test's own.
//! Real time (the key file watcher is an OS thread), every wait bounded
//! and on a condition; the planner's timing is tested with an injected
//! clock in `plan.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Control, DaemonError, Source, run};
use crate::apply::Options;
use crate::settings::{Layer, Settings};

const LIMIT: Duration = Duration::from_secs(20);

/// A confdir with `liveconf.toml` (file backend), `keys.yaml`, `conf.d/`,
/// `templates/x.tera`, `out/` and `state/`.
struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new(settings: &str) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        for d in ["conf.d", "templates", "out", "state"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let fx = Fx { dir };
        std::fs::write(
            fx.path("liveconf.toml"),
            format!(
                "backend = \"file\"\nfile = [\"keys.yaml\"]\nstate_dir = \"state\"\n{settings}"
            ),
        )
        .unwrap();
        std::fs::write(
            fx.path("templates/x.tera"),
            "name={{ getv(key=\"/name\") }}\n",
        )
        .unwrap();
        fx.keys("app:\n  name: alpha\n");
        fx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Replaces the key file atomically.
    fn keys(&self, yaml: &str) {
        let tmp = self.path("keys.yaml.new");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.path("keys.yaml")).unwrap();
    }

    /// `conf.d/NAME.toml` rendering `/app/name` into `out/NAME.conf`.
    fn resource(&self, name: &str, extra: &str) {
        std::fs::write(
            self.path(&format!("conf.d/{name}.toml")),
            format!(
                "[template]\nsrc = \"x.tera\"\ndest = \"{}\"\nprefix = \"/app\"\nkeys = [\"/\"]\n{extra}",
                self.path(&format!("out/{name}.conf")).display()
            ),
        )
        .unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.read("state/status.json")).unwrap_or_default()
    }

    /// Starts a daemon on this confdir, as `liveconf render --config
    /// DIR/liveconf.toml` would.
    fn start(&self) -> Running {
        let config = self.path("liveconf.toml");
        let settings = Settings::load(Some(config.as_path()), Layer::default()).unwrap();
        let crate::settings::BatchSettings {
            env,
            reload_splay,
            owed_dir,
        } = settings.batch(false);
        let opts = Options {
            env,
            reload_splay,
            owed_dir,
            ..Options::default()
        };
        let source = Source {
            config: Some(config),
            flags: Layer::default(),
            only: Vec::new(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (reload, reloads) = unbounded_channel();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(run(settings, source, opts, shutdown, reloads));
        Running {
            stop: Some(stop),
            reload,
            task,
        }
    }
}

/// A daemon running on the test's runtime.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    reload: UnboundedSender<Control>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Resolves the shutdown future; `run`'s result, within [`LIMIT`].
    async fn stop(mut self) -> Result<(), DaemonError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(LIMIT, &mut self.task)
            .await
            .expect("run returns after its shutdown future resolved")
            .expect("the daemon task does not panic")
    }
}

/// Waits until `cond` holds, polling, at most [`LIMIT`].
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_file_is_installed_and_shutdown_stops_cleanly() {
    let fx = Fx::new("wait = \"0s\"\n");
    fx.resource("x", "");
    let d = fx.start();
    until("the first render", || {
        fx.read("out/x.conf") == "name=alpha\n"
    })
    .await;
    until("status.json: healthy, connected", || {
        let s = fx.status();
        s["resources"]["x"]["healthy"] == true && s["connected"] == true
    })
    .await;
    fx.keys("app:\n  name: beta\n");
    until("the change installed", || {
        fx.read("out/x.conf") == "name=beta\n"
    })
    .await;
    d.stop().await.expect("a clean stop is Ok");
    let s = fx.status();
    assert_eq!(s["connected"], false, "{s:#}");
    assert_eq!(s["resources"]["x"]["healthy"], true, "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_conf_d_again() {
    let fx = Fx::new("");
    fx.resource("x", "");
    let d = fx.start();
    until("x rendered", || fx.read("out/x.conf") == "name=alpha\n").await;
    fx.resource("y", "");
    d.reload.send(Control::Reload).unwrap();
    until("y rendered after the reload", || {
        fx.read("out/y.conf") == "name=alpha\n"
    })
    .await;
    std::fs::remove_file(fx.path("conf.d/y.toml")).unwrap();
    d.reload.send(Control::Reload).unwrap();
    until("y gone from status.json", || {
        let s = fx.status();
        s["resources"].get("y").is_none() && s["resources"]["x"]["healthy"] == true
    })
    .await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_owed_from_before_is_run_once_by_the_first_batch() {
    let fx = Fx::new("");
    let log = fx.path("reloads");
    // Two resources share one reload command; x's reload was owed when
    // the last run ended (its marker), and its file is up to date.
    let cmd = format!("reload_cmd = \"echo reloaded >> {}\"\n", log.display());
    fx.resource("x", &cmd);
    fx.resource("y", &cmd);
    std::fs::write(fx.path("out/x.conf"), "name=alpha\n").unwrap();
    std::fs::create_dir_all(fx.path("state/reloads-owed")).unwrap();
    std::fs::write(fx.path("state/reloads-owed/x"), "").unwrap();
    let d = fx.start();
    until("both healthy, nothing owed", || {
        let s = fx.status();
        ["x", "y"].iter().all(|n| {
            s["resources"][n]["healthy"] == true && s["resources"][n].get("reload_owed").is_none()
        })
    })
    .await;
    // y installed and x owed: one command, run once for both.
    assert_eq!(fx.read("reloads"), "reloaded\n");
    assert!(!exists(&fx.path("state/reloads-owed/x")));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_waiting_out_its_splay_at_shutdown_stays_owed() {
    let fx = Fx::new("");
    let log = fx.path("reloads");
    fx.resource(
        "x",
        &format!(
            "reload_splay = \"1h\"\nreload_cmd = \"echo reloaded >> {}\"\n",
            log.display()
        ),
    );
    let d = fx.start();
    until("installed, its reload owed", || {
        fx.read("out/x.conf") == "name=alpha\n"
            && fx.status()["resources"]["x"]["reload_owed"] == true
    })
    .await;
    // The stop does not wait out the splay, and leaves the reload owed.
    d.stop().await.unwrap();
    assert!(!exists(&log));
    assert!(exists(&fx.path("state/reloads-owed/x")));
    assert_eq!(fx.status()["resources"]["x"]["reload_owed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reload_is_retried_until_it_succeeds() {
    let fx = Fx::new("");
    let ok = fx.path("reload-works");
    fx.resource("x", &format!("reload_cmd = \"test -e {}\"\n", ok.display()));
    let d = fx.start();
    until("the reload failed and is owed", || {
        let x = &fx.status()["resources"]["x"];
        x["healthy"] == false && x["error"]["step"] == "reload" && x["reload_owed"] == true
    })
    .await;
    std::fs::write(&ok, "").unwrap();
    until("a retry paid it", || {
        let x = &fx.status()["resources"]["x"];
        x["healthy"] == true && x.get("reload_owed").is_none()
    })
    .await;
    assert!(!exists(&fx.path("state/reloads-owed/x")));
    d.stop().await.unwrap();
}

/// Rewrites `liveconf.toml` as the fixture's base with `settings` added
/// (a key of `settings` replaces the base's).
fn settings(fx: &Fx, settings: &str) {
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let ours: Vec<String> = settings.lines().map(key).collect();
    let base: String = [
        "backend = \"file\"",
        "file = [\"keys.yaml\"]",
        "state_dir = \"state\"",
    ]
    .iter()
    .filter(|l| !ours.contains(&key(l)))
    .map(|l| format!("{l}\n"))
    .collect();
    std::fs::write(fx.path("liveconf.toml"), format!("{base}{settings}")).unwrap();
}

/// After a restart, a resource whose render is fine but whose owed reload
/// waits out a long splay is healthy meanwhile (its reload owed), not
/// "not rendered yet" until the splay ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owed_reload_waiting_out_its_splay_leaves_the_resource_healthy() {
    let fx = Fx::new("");
    let log = fx.path("reloads");
    fx.resource(
        "x",
        &format!(
            "reload_splay = \"1h\"\nreload_cmd = \"echo reloaded >> {}\"\n",
            log.display()
        ),
    );
    std::fs::write(fx.path("out/x.conf"), "name=alpha\n").unwrap();
    std::fs::create_dir_all(fx.path("state/reloads-owed")).unwrap();
    std::fs::write(fx.path("state/reloads-owed/x"), "").unwrap();
    let d = fx.start();
    until("x healthy, its reload owed, during the splay", || {
        let x = &fx.status()["resources"]["x"];
        x["healthy"] == true
            && x["error"].is_null()
            && x["reload_owed"] == true
            && x["sha256"].is_string()
            && x["revision"] == 1
    })
    .await;
    assert!(!exists(&log));
    d.stop().await.unwrap();
}

/// A resource failing at render is fixed by a key change: while the new
/// file's reload runs, status already says the render succeeded (reload
/// owed), not the old render error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_being_reloaded_clears_the_old_render_error_at_once() {
    let fx = Fx::new("wait = \"0s\"\n");
    fx.keys("app:\n  other: x\n");
    let release = fx.path("release");
    fx.resource(
        "x",
        &format!(
            "command_timeout = \"60s\"\nreload_cmd = \"while [ ! -e {} ]; do sleep 0.02; done\"\n",
            release.display()
        ),
    );
    let d = fx.start();
    until("x failing at render", || {
        fx.status()["resources"]["x"]["error"]["step"] == "render"
    })
    .await;
    fx.keys("app:\n  name: beta\n");
    until("the fix installed, healthy, its reload running", || {
        let x = &fx.status()["resources"]["x"];
        fx.read("out/x.conf") == "name=beta\n"
            && x["healthy"] == true
            && x["error"].is_null()
            && x["reload_owed"] == true
    })
    .await;
    std::fs::write(&release, "").unwrap();
    until("the reload done", || {
        let x = &fx.status()["resources"]["x"];
        x["healthy"] == true && x.get("reload_owed").is_none()
    })
    .await;
    d.stop().await.unwrap();
}

/// A new state_dir on SIGHUP takes the owed reloads along (markers moved,
/// not copied) and leaves the old status.json pointing to the new one; a
/// switch back runs no spurious reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_state_dir_moves_owed_reloads_and_leaves_a_pointer() {
    let fx = Fx::new("");
    let (ok, log) = (fx.path("reload-works"), fx.path("reloads"));
    fx.resource(
        "x",
        &format!(
            "reload_cmd = \"test -e {} && echo reloaded >> {}\"\n",
            ok.display(),
            log.display()
        ),
    );
    let d = fx.start();
    until("the reload failed and is owed", || {
        let x = &fx.status()["resources"]["x"];
        x["error"]["step"] == "reload" && exists(&fx.path("state/reloads-owed/x"))
    })
    .await;
    settings(&fx, "state_dir = \"state2\"\n");
    d.reload.send(Control::Reload).unwrap();
    let status2 = || {
        serde_json::from_str::<serde_json::Value>(&fx.read("state2/status.json"))
            .unwrap_or_default()
    };
    until("status and the owed reload in the new state dir", || {
        status2()["resources"]["x"]["reload_owed"] == true
            && exists(&fx.path("state2/reloads-owed/x"))
    })
    .await;
    assert!(!exists(&fx.path("state/reloads-owed/x")));
    let left = fx.status();
    assert_eq!(
        left["moved_to"],
        fx.path("state2").display().to_string(),
        "{left:#}"
    );
    assert!(left.get("daemon_pid").is_none(), "{left:#}");
    assert!(
        left["resources"]["x"].get("reload_owed").is_none(),
        "{left:#}"
    );
    // Paid in the new state dir.
    std::fs::write(&ok, "").unwrap();
    until("a retry paid it", || {
        let x = &status2()["resources"]["x"];
        x["healthy"] == true && x.get("reload_owed").is_none()
    })
    .await;
    assert_eq!(fx.read("reloads"), "reloaded\n");
    // Back to the first state dir: nothing is owed there any more.
    settings(&fx, "");
    d.reload.send(Control::Reload).unwrap();
    until(
        "status back in the first state dir, x rendered again",
        || {
            let s = fx.status();
            s.get("moved_to").is_none()
                && s["daemon_pid"].is_number()
                && s["resources"]["x"]["healthy"] == true
        },
    )
    .await;
    assert_eq!(
        status2()["moved_to"],
        fx.path("state").display().to_string()
    );
    d.stop().await.unwrap();
    assert_eq!(fx.read("reloads"), "reloaded\n", "a spurious reload ran");
}

/// Changing the key files on SIGHUP goes on numbering revisions from the
/// last one delivered: one revision never names two contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_key_files_on_sighup_keep_the_revision_increasing() {
    let fx = Fx::new("wait = \"0s\"\n");
    fx.resource("x", "");
    std::fs::write(fx.path("keys2.yaml"), "app:\n  name: gamma\n").unwrap();
    let d = fx.start();
    until("revision 1", || {
        fx.status()["resources"]["x"]["revision"] == 1
    })
    .await;
    fx.keys("app:\n  name: beta\n");
    until("revision 2", || {
        fx.read("out/x.conf") == "name=beta\n" && fx.status()["resources"]["x"]["revision"] == 2
    })
    .await;
    settings(&fx, "wait = \"0s\"\nfile = [\"keys2.yaml\"]\n");
    d.reload.send(Control::Reload).unwrap();
    until("the other key file's content at revision 3", || {
        let s = fx.status();
        fx.read("out/x.conf") == "name=gamma\n"
            && s["resources"]["x"]["revision"] == 3
            && s["revision"] == 3
    })
    .await;
    d.stop().await.unwrap();
}

/// Settings that load but that the daemon could not run with are refused
/// on SIGHUP like a file that does not load (config_error, the running
/// configuration kept), and at start (a configuration error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_daemon_cannot_run_with_are_refused() {
    let fx = Fx::new("wait = \"0s\"\n");
    fx.resource("x", "");
    let d = fx.start();
    until("x rendered", || {
        fx.status()["resources"]["x"]["healthy"] == true
    })
    .await;
    for (bad, want) in [
        ("log_level = \"loud\"\n", "\"loud\" is not a level"),
        (
            "state_dir = \"/proc/liveconf-nope\"\n",
            "state_dir /proc/liveconf-nope: cannot create",
        ),
        ("node_name = \"\"\n", "node_name is empty"),
    ] {
        settings(&fx, &format!("wait = \"0s\"\n{bad}"));
        d.reload.send(Control::Reload).unwrap();
        until(&format!("{bad}: config_error"), || {
            fx.status()["config_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(want))
        })
        .await;
        let e = &fx.status()["config_error"];
        assert!(
            e["file"].as_str().unwrap_or("").ends_with("liveconf.toml"),
            "{e:#}"
        );
        // Still running as before: key changes are rendered.
        fx.keys(&format!("app:\n  name: {}\n", bad.len()));
        until("a key change still rendered", || {
            fx.read("out/x.conf") == format!("name={}\n", bad.len())
        })
        .await;
        settings(&fx, "wait = \"0s\"\nlog_level = \"debug\"\n");
        d.reload.send(Control::Reload).unwrap();
        until("a valid reload clears it", || {
            fx.status().get("config_error").is_none()
        })
        .await;
    }
    d.stop().await.unwrap();

    // At start: refused before anything runs.
    settings(&fx, "state_dir = \"/proc/liveconf-nope\"\n");
    let r = fx.start();
    let e = tokio::time::timeout(LIMIT, r.task)
        .await
        .expect("run returns")
        .expect("no panic");
    match e {
        Err(DaemonError::Config(e)) => assert!(
            e.to_string()
                .contains("state_dir /proc/liveconf-nope: cannot create"),
            "{e}"
        ),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
