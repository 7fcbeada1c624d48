//! SIGHUP walks every setting: for each one in liveconf's settings table
//! (`liveconf generate settings`, generated from `src/settings/defs.rs`),
//! change it in `liveconf.toml`, send SIGHUP, and see both that the log
//! names it with the effect the table declares (applied / reconnecting /
//! needs a restart) and, where that is cheap to see, that the daemon
//! really behaves so. A setting added to the table without a case here
//! fails the walk, naming it.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// Every setting of the table and what a SIGHUP does with it ("applied",
/// "new connection", "restart"), from the binary's own table.
fn settings_table() -> Vec<(String, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["generate", "settings"])
        .output()
        .expect("run liveconf generate settings");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<(String, String)> = text
        .lines()
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].trim_matches('`').to_string(), cells[3].to_string())
        })
        .collect();
    assert!(rows.len() > 20, "{text}");
    rows
}

/// What the log line a SIGHUP writes for a changed setting says of this
/// effect (after "NAME changed from OLD to NEW").
fn logged_as(effect: &str) -> &'static str {
    match effect {
        "applied" => ": applied",
        "new connection" => ": reconnecting to the backend",
        "restart" => "needs a restart",
        other => panic!("unknown effect {other:?} in the settings table"),
    }
}

/// A running daemon reading `liveconf.toml` from a confdir, against two
/// etcd servers (A, the one it starts with, and B) and two key files.
struct World {
    fx: Fx,
    a: Etcd,
    b: Etcd,
    d: Daemon,
    base: BTreeMap<&'static str, String>,
}

impl World {
    fn start() -> World {
        let a = Etcd::start();
        let b = Etcd::start();
        a.put("/app/name", "e1");
        a.put("/p/app/name", "pp");
        b.put("/app/name", "e2");
        let fx = Fx::new();
        fx.keys("app:\n  name: f1\n");
        std::fs::write(fx.path("keys2.yaml"), "app:\n  name: f2\n").unwrap();
        fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
        let res = |dest: &str, extra: &str| {
            format!(
                "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/{dest}\"\nprefix = \"/app\"\n\
                 keys = [\"/\"]\n{extra}"
            )
        };
        // x follows the global wait; fast has its own (none).
        fx.resource("x", &res("x.conf", ""));
        fx.resource("fast", &res("fast.conf", "wait = \"0s\"\n"));
        let reloads = fx.path("reloads").display().to_string();
        fx.resource(
            "splay",
            &res(
                "splay.conf",
                &format!("reload_cmd = \"echo reloaded >> {reloads}\"\n"),
            ),
        );
        // Another confdir, for `confdir`.
        let other = fx.path("other");
        std::fs::create_dir_all(other.join("conf.d")).unwrap();
        std::fs::create_dir_all(other.join("templates")).unwrap();
        std::fs::write(
            other.join("templates/o.tera"),
            "o={{ getv(key=\"/name\") }}\n",
        )
        .unwrap();
        std::fs::write(
            other.join("conf.d/o.toml"),
            format!(
                "[template]\nsrc = \"o.tera\"\ndest = \"{}/o.conf\"\nprefix = \"/app\"\n\
                 keys = [\"/\"]\n",
                fx.path("out").display()
            ),
        )
        .unwrap();

        let q = |s: &str| format!("{s:?}");
        let base: BTreeMap<&'static str, String> = [
            ("backend", q("etcd")),
            ("endpoints", format!("[{}]", q(&a.endpoints()))),
            ("file", format!("[{}]", q("keys.yaml"))),
            ("state_dir", q("state")),
            ("wait", q("0s")),
            ("node_name", q("n1")),
            ("log_level", q("info")),
        ]
        .into_iter()
        .collect();
        let config = fx.path("liveconf.toml");
        std::fs::write(&config, toml(&base, &[])).unwrap();
        let config = config.display().to_string();
        let d = Daemon::start(&["--config", &config], &fx.path("daemon.log"));
        let w = World { fx, a, b, d, base };
        w.wait_steady("the first render");
        w
    }

    fn status(&self, state: &str) -> serde_json::Value {
        let text = read_or_empty(&self.fx.path(state).join("status.json"));
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    fn out(&self, name: &str) -> String {
        read_or_empty(&self.fx.path("out").join(name))
    }

    /// Connected to etcd A, every file rendered from it, every resource
    /// healthy.
    fn wait_steady(&self, what: &str) {
        wait_for(what, LIMIT, || {
            let s = self.status("state");
            let healthy = s["resources"]
                .as_object()
                .is_some_and(|r| r.values().all(|r| r["healthy"] == true));
            healthy
                && s["connected"] == true
                && s["backend"] == "etcd"
                && s["endpoint"] == self.a.endpoints()
                && self.out("x.conf") == "name=e1\n"
                && self.out("fast.conf") == "name=e1\n"
        });
    }

    /// Writes liveconf.toml as the base with `over` replacing or adding
    /// keys, sends SIGHUP and waits for the reload; returns the log's length
    /// before it (what was logged since is `self.since(offset)`).
    fn reload_with(&self, over: &[(&str, String)]) -> usize {
        std::fs::write(self.fx.path("liveconf.toml"), toml(&self.base, over)).unwrap();
        let offset = self.d.log().len();
        let reloads = self.d.count("configuration reloaded");
        self.d.signal(nix::sys::signal::Signal::SIGHUP);
        wait_for("the reload", LIMIT, || {
            self.d.count("configuration reloaded") > reloads
        });
        offset
    }

    fn since(&self, offset: usize) -> String {
        self.d.log().get(offset..).unwrap_or_default().to_string()
    }

    fn wait_logged(&self, offset: usize, what: &str) {
        wait_for(&format!("{what:?} in the log"), LIMIT, || {
            self.since(offset).contains(what)
        });
    }

    /// Range requests etcd A has answered (each snapshot is at least one).
    fn ranges(&self) -> u64 {
        self.a.members[0].grpc_ok("Range")
    }
}

/// `base` with `over` replacing or adding keys, as TOML.
fn toml(base: &BTreeMap<&'static str, String>, over: &[(&str, String)]) -> String {
    let mut all: BTreeMap<&str, String> = base.iter().map(|(k, v)| (*k, v.clone())).collect();
    for (k, v) in over {
        all.insert(k, v.clone());
    }
    all.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

/// How a setting's case starts: settings written (and reloaded) first,
/// then the change itself, with settings it needs alongside (`with`).
struct Case {
    before: Vec<(&'static str, String)>,
    with: Vec<(&'static str, String)>,
    change: String,
}

/// A readable file that holds no certificate, key or password etcd takes.
fn junk(w: &World, name: &str) -> String {
    let p = w.fx.path(name);
    std::fs::write(&p, "not a certificate\n").unwrap();
    q(&p.display().to_string())
}

fn case(name: &str, w: &World) -> Case {
    let plain = |v: String| Case {
        before: vec![],
        with: vec![],
        change: v,
    };
    match name {
        "confdir" => plain(q("other")),
        "backend" => plain(q("file")),
        "endpoints" => plain(format!("[{}]", q(&w.b.endpoints()))),
        // A nameserver that answers nothing (a closed port) makes the SRV
        // look-up fail at once.
        "srv_domain" => Case {
            before: vec![("dns_server", q(&format!("127.0.0.1:{}", free_port())))],
            with: vec![],
            change: q("example.invalid"),
        },
        "srv_record" => plain(q("_etcd-server._tcp")),
        "prefix" => plain(q("/p")),
        // With the file backend: the etcd backend reads no key file.
        "file" => Case {
            before: vec![("backend", q("file"))],
            with: vec![],
            change: format!("[{}]", q("keys2.yaml")),
        },
        // Files that can be read (a missing one is refused before any
        // reconnection: see bad_connection_settings_on_sighup_keep_the_connection)
        // but that etcd's TLS cannot use.
        "ca_file" => plain(junk(w, "ca.pem")),
        "cert_file" => Case {
            before: vec![],
            with: vec![("key_file", junk(w, "client.key"))],
            change: junk(w, "client.pem"),
        },
        "key_file" => Case {
            before: vec![],
            with: vec![("cert_file", junk(w, "client.pem"))],
            change: junk(w, "client.key"),
        },
        // With a password (etcd A has no authentication to offer).
        "username" => Case {
            before: vec![],
            with: vec![("password_file", junk(w, "password"))],
            change: q("liveconf"),
        },
        "password_file" => plain(q("/nonexistent/password")),
        "state_dir" => plain(q("state2")),
        "metrics_addr" => plain(q(&format!("127.0.0.1:{}", free_port()))),
        "log_level" => plain(q("error")),
        "log_format" => plain(q("json")),
        "wait" => plain(q("10s")),
        "node_name" => plain(q("n2")),
        "connect_timeout" => plain(q("7s")),
        "request_timeout" => plain(q("9s")),
        "resync_interval" => plain(q("1s")),
        "dns_server" => plain(q(&format!("127.0.0.1:{}", free_port()))),
        "dns_min_interval" => plain(q("1s")),
        "dns_max_interval" => plain(q("1m")),
        "dns_max_stale" => plain(q("10m")),
        "reload_splay" => plain(q("2s")),
        "watch_confdir" => plain("true".into()),
        "report" => plain("true".into()),
        "report_ttl" => plain(q("1m")),
        "max_output_bytes" => plain("5".into()),
        other => panic!(
            "setting {other} has no case in tests/it/sighup_settings.rs: say how to change it \
             and what a SIGHUP then does"
        ),
    }
}

/// What the daemon does once `name` changed to `value` (the change's
/// reload logged from `offset` on, `ranges` Range requests answered before
/// it).
fn observe(name: &str, value: &str, w: &World, offset: usize, ranges: u64) {
    let reconnected = || {
        wait_for(&format!("{name}: a new snapshot from etcd"), LIMIT, || {
            w.ranges() > ranges
        })
    };
    let unavailable = |why: &str| {
        w.wait_logged(offset, "backend unavailable");
        w.wait_logged(offset, why);
    };
    match name {
        "confdir" => wait_for("the other confdir's resource", LIMIT, || {
            w.out("o.conf") == "o=e1\n"
        }),
        "backend" => wait_for("keys from the key file", LIMIT, || {
            w.out("x.conf") == "name=f1\n" && w.status("state")["backend"] == "file"
        }),
        "file" => wait_for("keys from the other key file", LIMIT, || {
            w.out("x.conf") == "name=f2\n"
        }),
        "endpoints" => wait_for("keys from the other etcd", LIMIT, || {
            w.out("x.conf") == "name=e2\n"
                && w.status("state")["endpoint"] == w.b.endpoints().as_str()
        }),
        "srv_domain" => unavailable("example.invalid"),
        "ca_file" | "cert_file" | "key_file" | "username" => unavailable("etcd"),
        "srv_record" | "password_file" | "connect_timeout" | "request_timeout" | "dns_server" => {
            reconnected()
        }
        "resync_interval" => {
            // After the new connection's snapshot, with nothing changing,
            // another one: a resync (the watcher looks at its schedule with
            // each progress request, every 5s; at 10m, none would come).
            reconnected();
            let after = w.ranges();
            wait_for("a resync snapshot", LIMIT, || w.ranges() > after)
        }
        "prefix" => wait_for("keys under the new prefix", LIMIT, || {
            w.out("x.conf") == "name=pp\n"
        }),
        "state_dir" => wait_for("status.json in the new state dir", LIMIT, || {
            w.status("state2")["resources"]["x"]["healthy"] == true
        }),
        "wait" => {
            // fast (no wait of its own) renders the change at once; x
            // waits out the new 10s window.
            w.a.put("/app/name", "w1");
            wait_for("fast renders the change", LIMIT, || {
                w.out("fast.conf") == "name=w1\n"
            });
            assert_eq!(w.out("x.conf"), "name=e1\n", "x must wait 10s");
            w.a.put("/app/name", "e1");
        }
        "reload_splay" => {
            let reloads = || read_or_empty(&w.fx.path("reloads")).lines().count();
            let before = reloads();
            w.a.put("/app/name", "s1");
            w.wait_logged(offset, "(reload_splay)");
            wait_for("the splayed reload", LIMIT, || reloads() > before);
            w.a.put("/app/name", "e1");
        }
        "watch_confdir" => {
            // conf.d/ is watched from now on: a new resource is picked up
            // without a SIGHUP (written again until seen: the watch starts
            // just after the reload is logged).
            let late = "[template]\nsrc = \"x.tera\"\ndest = \"{out}/late.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n";
            let mut tries = 0;
            wait_for("a new resource in conf.d/ rendered", LIMIT, || {
                if tries % 25 == 0 {
                    w.fx.resource("late", late);
                }
                tries += 1;
                w.out("late.conf") == "name=e1\n"
            });
            w.wait_logged(offset, "configuration directory changed");
        }
        "max_output_bytes" => w.wait_logged(offset, "limit of 5 bytes"),
        "metrics_addr" => {
            // Nothing serves metrics there before a restart.
            let addr = value.trim_matches('"');
            assert!(
                std::net::TcpStream::connect(addr).is_err(),
                "{addr} is served before a restart"
            );
        }
        "log_level" => {
            // Still at info: the reload's own info lines are logged.
            assert!(
                w.since(offset).contains("configuration reloaded"),
                "{}",
                w.since(offset)
            );
        }
        "log_format" => {
            let since = w.since(offset);
            assert!(
                since.lines().all(|l| !l.trim_start().starts_with('{')),
                "still text lines: {since}"
            );
        }
        "report" => {
            let keys = w.a.ctl(&["get", "--prefix", "--keys-only", "/liveconf/"]);
            assert_eq!(keys.trim(), "", "nothing is published before a restart");
        }
        // status.json shows the new name at once (the fleet report, not
        // running here, would keep the old one until a restart).
        "node_name" => wait_for("the new name in status.json", LIMIT, || {
            w.status("state")["node"] == "n2"
        }),
        "report_ttl" => {}
        // The look-up intervals of template DNS names: no resource here
        // looks a name up (tests/it/dns_live.rs shows them at work); the
        // logged effect is what is checked.
        "dns_min_interval" | "dns_max_interval" | "dns_max_stale" => {}
        other => panic!("setting {other}: nothing to observe in tests/it/sighup_settings.rs"),
    }
}

/// Every setting, changed in liveconf.toml and reloaded with SIGHUP: the
/// log says what was done with it, as the settings table declares, and
/// the daemon does it.
#[test]
fn sighup_walks_every_setting() {
    let w = World::start();
    for (name, effect) in settings_table() {
        let c = case(&name, &w);
        if !c.before.is_empty() {
            w.reload_with(&c.before);
        }
        let mut over: Vec<(&str, String)> = c.before.clone();
        over.extend(c.with.iter().cloned());
        over.push((name.as_str(), c.change.clone()));
        let snapshots = w.d.count("new snapshot and watch");
        let ranges = w.ranges();
        let offset = w.reload_with(&over);
        let since = w.since(offset);
        let (line, effect_words) = (format!("{name} changed from "), logged_as(&effect));
        assert!(
            since
                .lines()
                .any(|l| l.contains(&line) && l.contains(effect_words)),
            "{name}: the settings table says {effect:?}, so the reload logs \
             {line:?}...{effect_words:?}:\n{since}"
        );
        // Only a new connection (or a prefix not watched yet) takes a new
        // snapshot.
        let resnapshot = w.d.count("new snapshot and watch") > snapshots;
        assert_eq!(
            resnapshot,
            effect == "new connection" || name == "prefix",
            "{name}: {effect}, new snapshot: {resnapshot}\n{since}"
        );
        observe(&name, &c.change, &w, offset, ranges);
        // Back to the base settings, and steady again.
        w.reload_with(&[]);
        w.wait_steady(&format!("steady again after {name}"));
    }
}

/// `liveconf status --state-dir DIR`: its exit code and output.
fn status_cmd(dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["status", "--state-dir"])
        .arg(dir)
        .output()
        .expect("run liveconf status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Connection settings `liveconf check` refuses (exit 3) are refused on
/// SIGHUP like a settings file that does not load: the running connection
/// and configuration stay, and status.json, `liveconf status` and the log
/// say why. At start, the same settings are a configuration error (exit
/// 3) with the same message, not a backend retried forever.
#[test]
fn bad_connection_settings_on_sighup_keep_the_connection() {
    let w = World::start();
    for (i, (over, want)) in [
        (
            vec![("username", q("bob"))],
            "username \"bob\" needs password_file",
        ),
        (
            vec![("ca_file", q("/nonexistent.pem"))],
            "cannot read CA file /nonexistent.pem",
        ),
        (
            vec![("endpoints", format!("[{}]", q("ftp://x:1")))],
            "the scheme must be http or https",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(w.fx.path("liveconf.toml"), toml(&w.base, &over)).unwrap();
        let offset = w.d.log().len();
        w.d.signal(nix::sys::signal::Signal::SIGHUP);
        wait_for(&format!("{want}: config_error"), LIMIT, || {
            w.status("state")["config_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(want))
        });
        let since = w.since(offset);
        assert!(
            !since.contains("reconnecting") && !since.contains("configuration reloaded"),
            "{since}"
        );
        assert!(since.contains("could not be loaded at SIGHUP"), "{since}");
        // Still connected to A, still following it.
        let value = format!("k{i}");
        w.a.put("/app/name", &value);
        wait_for("a change still rendered from A", LIMIT, || {
            w.out("fast.conf") == format!("name={value}\n")
        });
        let s = w.status("state");
        assert_eq!(s["connected"], true, "{s:#}");
        assert_eq!(s["endpoint"], w.a.endpoints().as_str(), "{s:#}");
        let (code, out) = status_cmd(&w.fx.path("state"));
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(want) && out.contains("fix it and send SIGHUP again"),
            "{out}"
        );
        w.a.put("/app/name", "e1");
        w.reload_with(&[]);
        wait_for("config_error gone", LIMIT, || {
            w.status("state").get("config_error").is_none()
        });
        w.wait_steady("steady again");
    }
    assert_eq!(w.d.count("backend unavailable"), 0, "{}", w.d.log());

    // At start: exit 3, the message check gives.
    // (Not Fx::cmd: it passes --file, which the etcd backend refuses.)
    let fx = Fx::new();
    let run = |sub: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"));
        c.args([sub, "--confdir"])
            .arg(fx.dir.path())
            .args(["--state-dir"])
            .arg(fx.path("state"))
            .args(["--endpoints", &w.a.endpoints(), "--username", "bob"]);
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        use std::io::Read;
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        (code, err)
    };
    fx.template("x.tera", "x\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nkeys = [\"/app\"]\n",
    );
    let (check_code, check_err) = run("check");
    let (code, err) = run("render");
    assert_eq!(check_code, Some(3), "{check_err}");
    assert_eq!(code, Some(3), "the daemon must exit 3, not retry: {err}");
    let line = |e: &str| {
        e.lines()
            .find(|l| l.contains("needs password_file"))
            .map(|l| l[l.find("username").unwrap_or(0)..].to_string())
    };
    assert!(line(&err).is_some(), "{err}");
    assert_eq!(line(&err), line(&check_err), "{err}\n{check_err}");
}

/// A new endpoint that cannot be reached: status.json and `liveconf
/// status` name it (what is being tried), not the old one.
#[test]
fn an_endpoint_change_that_cannot_connect_names_the_new_endpoint() {
    let w = World::start();
    let refused = format!("http://127.0.0.1:{}", free_port());
    w.reload_with(&[("endpoints", format!("[{}]", q(&refused)))]);
    wait_for(
        "status names the new endpoint, not connected",
        LIMIT,
        || {
            let s = w.status("state");
            s["connected"] == false && s["endpoint"] == refused.as_str()
        },
    );
    let (code, out) = status_cmd(&w.fx.path("state"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("backend etcd (unavailable: {refused})")),
        "{out}"
    );
    assert!(!out.contains(&w.a.endpoints()), "{out}");
}
