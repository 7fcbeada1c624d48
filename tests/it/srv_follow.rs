//! etcd endpoints discovered through SRV follow DNS while the daemon runs:
//! a real dnsmasq on loopback serves the record, two real etcd members
//! stand behind it, and the record is changed under a running daemon
//! (dnsmasq restarted with new data on the same port). A SIGHUP that
//! points `dns_server` at a nameserver that never answers keeps the
//! connection, its endpoints and the templates' DNS dependencies.

use crate::common;

use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};

/// The record's TTL is 0 (dnsmasq's own records): looked up again every
/// 5 s, so a change is followed within that and one look-up's time.
const FOLLOW: Duration = Duration::from_secs(15);
const LIMIT: Duration = Duration::from_secs(30);
pub(crate) const RECORD: &str = "_etcd-client._tcp.example.test";

/// dnsmasq on a loopback port serving `--srv-host` records.
pub(crate) struct Dnsmasq {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Dnsmasq {
    /// Serving RECORD → 127.0.0.1 at each of `ports`, on `port`.
    pub(crate) fn start(port: u16, ports: &[u16]) -> Dnsmasq {
        Dnsmasq::start_with(port, ports, &[])
    }

    /// [`Dnsmasq::start`], with more dnsmasq options (`--address=...`).
    pub(crate) fn start_with(port: u16, ports: &[u16], extra: &[String]) -> Dnsmasq {
        assert!(
            common::have("dnsmasq") || std::path::Path::new("/usr/sbin/dnsmasq").exists(),
            "dnsmasq is required (scripts/ensure-deps dnsmasq installs dnsmasq-base)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log");
        let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let mut cmd = Command::new(bin);
        cmd.args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            &format!("--pid-file={}", dir.path().join("pid").display()),
        ]);
        for p in ports {
            cmd.arg(format!("--srv-host={RECORD},127.0.0.1,{p}"));
        }
        cmd.args(extra);
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dnsmasq");
        let mut d = Dnsmasq {
            child,
            port,
            dir,
            extra: extra.to_vec(),
        };
        let log_path = d.dir.path().join("dnsmasq.log");
        wait_for("dnsmasq listening", LIMIT, || {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("dnsmasq exited ({st}): {}", read_or_empty(&log_path));
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }

    /// The same port, new records.
    fn restart(&mut self, ports: &[u16]) {
        self.stop();
        let extra = self.extra.clone();
        *self = Dnsmasq::start_with(self.port, ports, &extra);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A nameserver that never answers: a UDP socket on loopback that reads
/// every query (so each one times out, as with a host that drops them)
/// and counts those asking for `name`.
pub(crate) struct BlackHole {
    pub(crate) port: u16,
    asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    /// On a free port (`None`) or on `port`, counting queries for `name`.
    pub(crate) fn start(port: Option<u16>, name: &str) -> BlackHole {
        let sock = UdpSocket::bind(("127.0.0.1", port.unwrap_or(0))).expect("bind udp");
        let port = sock.local_addr().expect("udp addr").port();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("udp timeout");
        // The name as a query carries it: length-prefixed labels.
        let wire: Vec<u8> = name
            .split('.')
            .flat_map(|l| std::iter::once(l.len() as u8).chain(l.bytes()))
            .collect();
        let (asked, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (a, st) = (asked.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf)
                    && buf[..n].windows(wire.len()).any(|w| w == wire.as_slice())
                {
                    a.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        BlackHole {
            port,
            asked,
            stop,
            reader: Some(reader),
        }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queries for the name received so far.
    pub(crate) fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        // The socket closes with its thread: the port is free after this.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A confdir with resource `app`: `v={{/app/v}}` into out/app.conf.
fn app_resource() -> Fx {
    let fx = Fx::new();
    fx.template("app.tera", "v={{ getv(key=\"/app/v\") }}\n");
    fx.resource(
        "app",
        "[template]\nsrc = \"app.tera\"\ndest = \"{out}/app.conf\"\nkeys = [\"/app\"]\n",
    );
    fx
}

/// `liveconf render` finding etcd through RECORD, asking `dns`.
fn srv_daemon(fx: &Fx, dns: &Dnsmasq) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let dns_addr = dns.addr();
    Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--srv-domain",
            "example.test",
            "--srv-record",
            "_etcd-client._tcp",
            "--dns-server",
            &dns_addr,
            "--state-dir",
            &state,
            "--wait",
            "0s",
        ],
        &fx.path("daemon.log"),
    )
}

/// A member added to the SRV record is added to the daemon's endpoints
/// (logged, the connection kept); the member in use removed from it moves
/// the daemon to the other (logged, status names it, no outage reported),
/// and puts through the new member reach the file. No restart, no SIGHUP.
#[test]
fn a_daemon_follows_the_srv_set_while_it_runs() {
    let etcd = Etcd::cluster(2, &[]);
    let (p0, p1) = (etcd.members[0].client_port, etcd.members[1].client_port);
    let (m0, m1) = (etcd.members[0].url(), etcd.members[1].url());
    etcd.put("/app/v", "1");
    let mut dns = Dnsmasq::start(free_port(), &[p0]);

    let fx = app_resource();
    let d = srv_daemon(&fx, &dns);
    let status = || -> serde_json::Value {
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
    };
    let file = || read_or_empty(&fx.path("out/app.conf"));
    wait_for("the file installed", LIMIT, || file() == "v=1\n");
    wait_for("connected to member 0", LIMIT, || {
        status()["connected"] == true && status()["endpoint"] == m0.as_str()
    });

    // Member 1 added to DNS: added to the endpoints, the connection kept.
    dns.restart(&[p0, p1]);
    wait_for("the added endpoint logged", FOLLOW, || {
        d.log()
            .lines()
            .any(|l| l.contains("endpoint added") && l.contains(&m1))
    });
    assert_eq!(status()["endpoint"], m0.as_str(), "{}", d.log());
    etcd.put_at(&m0, "/app/v", "2");
    wait_for("a put after the addition", LIMIT, || file() == "v=2\n");

    // Member 0 removed from DNS: the daemon moves to member 1.
    dns.restart(&[p1]);
    wait_for("the removed endpoint logged", FOLLOW, || {
        d.log()
            .lines()
            .any(|l| l.contains("endpoint removed") && l.contains(&m0))
    });
    wait_for("status names member 1", LIMIT, || {
        status()["connected"] == true && status()["endpoint"] == m1.as_str()
    });
    etcd.put_at(&m1, "/app/v", "3");
    wait_for("a put through the new member", LIMIT, || file() == "v=3\n");

    let log = d.log();
    assert!(!log.contains("backend unavailable"), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains("endpoint added")).count(),
        1,
        "one line per change:\n{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("endpoint removed"))
            .count(),
        1,
        "one line per change:\n{log}"
    );
}

/// Found by the DNS trial: every look-up of the followed record was sent
/// twice (once for its TTL, once for its targets). One query per look-up:
/// after the start's, each query comes a whole interval after the last.
#[test]
fn the_followed_record_is_asked_once_per_interval() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let dns = Dnsmasq::start_with(
        free_port(),
        &[etcd.members[0].client_port],
        &["--log-queries".to_string()],
    );
    let fx = app_resource();
    let _d = srv_daemon(&fx, &dns);
    wait_for("the file installed", LIMIT, || {
        read_or_empty(&fx.path("out/app.conf")) == "v=1\n"
    });
    let asked = || {
        read_or_empty(&dns.dir.path().join("dnsmasq.log"))
            .lines()
            .filter(|l| l.contains(&format!("query[SRV] {RECORD}")))
            .count()
    };
    // Each new query's arrival, seen every 20 ms: two queries of one
    // look-up arrive within the same few milliseconds.
    let mut seen = asked();
    let mut arrivals = Vec::new();
    let start = std::time::Instant::now();
    while arrivals.len() < 2 {
        assert!(
            start.elapsed() < 3 * FOLLOW,
            "{} queries seen",
            arrivals.len()
        );
        std::thread::sleep(Duration::from_millis(20));
        let now = asked();
        if now > seen {
            arrivals.push((now - seen, std::time::Instant::now()));
            seen = now;
        }
    }
    for (n, _) in &arrivals {
        assert_eq!(*n, 1, "queries arriving together: {arrivals:?}");
    }
    let gap = arrivals[1].1 - arrivals[0].1;
    assert!(
        gap >= Duration::from_secs(4),
        "{gap:?} between two look-ups"
    );
}

/// A SIGHUP that points `dns_server` at a nameserver that never answers
/// (a new-user trial: the working connection was dropped as "not in the
/// discovered set", `backend unavailable` every 7 s, status.json's `dns`
/// gone, the templates' names no longer asked): the look-up through it
/// fails, so the connection in use is kept with its endpoints, said in
/// one line; puts still reach the files; status.json stays connected and
/// keeps its `dns` section; the template's name is asked again, of the
/// new nameserver (the user's choice). Pointed back at a nameserver that
/// answers, the daemon moves to the new connection.
#[test]
fn a_sighup_to_a_dns_server_that_never_answers_keeps_the_connection() {
    let etcd = Etcd::start();
    let (p0, m0) = (etcd.members[0].client_port, etcd.members[0].url());
    etcd.put("/app/v", "1");
    let name = "app.example.test";
    let dns = Dnsmasq::start_with(
        free_port(),
        &[p0],
        &[format!("--address=/{name}/127.0.0.9")],
    );

    let fx = Fx::new();
    fx.template("plain.tera", "v={{ getv(key=\"/app/v\") }}\n");
    fx.template(
        "ip.tera",
        &format!(
            "v={{{{ getv(key=\"/app/v\") }}}} ip={{{{ lookup_ip(name=\"{name}\") | join(sep=\",\") }}}}\n"
        ),
    );
    for r in ["plain", "ip"] {
        fx.resource(
            r,
            &format!(
                "[template]\nsrc = \"{r}.tera\"\ndest = \"{{out}}/{r}.conf\"\nkeys = [\"/app\"]\n"
            ),
        );
    }
    let config = fx.path("liveconf.toml");
    let settings = |dns_server: &str| {
        std::fs::write(
            &config,
            format!(
                "srv_domain = \"example.test\"\nsrv_record = \"_etcd-client._tcp\"\n\
                 dns_server = \"{dns_server}\"\nstate_dir = \"state\"\nwait = \"0s\"\n\
                 dns_min_interval = \"1s\"\n"
            ),
        )
        .unwrap()
    };
    settings(&dns.addr());
    let d = Daemon::start(
        &["--config", &config.display().to_string()],
        &fx.path("daemon.log"),
    );
    let status = || -> serde_json::Value {
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
    };
    let file = |r: &str| read_or_empty(&fx.path(&format!("out/{r}.conf")));
    let dns_names = || -> Vec<String> {
        status()["dns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for("both files installed, connected", LIMIT, || {
        file("plain") == "v=1\n"
            && file("ip") == "v=1 ip=127.0.0.9\n"
            && status()["connected"] == true
            && status()["endpoint"] == m0.as_str()
    });
    wait_for("the DNS dependency in status.json", LIMIT, || {
        dns_names() == [name]
    });

    let hole = BlackHole::start(None, name);
    settings(&hole.addr());
    let offset = d.log().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let since = || d.log().get(offset..).unwrap_or_default().to_string();
    wait_for("the reload", LIMIT, || {
        since().contains("configuration reloaded")
    });
    // The connection in use stays: a put reaches the file.
    etcd.put("/app/v", "2");
    wait_for("a put after the SIGHUP rendered", LIMIT, || {
        file("plain") == "v=2\n"
    });
    wait_for("the failed look-up said", LIMIT, || {
        since().contains("keeping the connection in use and its endpoints")
    });
    // The template's name is asked of the new nameserver, and asked
    // again; meanwhile its last good answer serves the renders.
    wait_for("the put rendered with the last good answer", LIMIT, || {
        file("ip") == "v=2 ip=127.0.0.9\n"
    });
    wait_for("the name asked of the new nameserver", LIMIT, || {
        hole.asked() > 0
    });
    let asked = hole.asked();
    wait_for("the name asked again", LIMIT, || hole.asked() > asked);
    assert!(!since().contains("ip: render failed"), "{}", since());
    let s = status();
    assert_eq!(s["connected"], true, "{s:#}");
    assert_eq!(s["endpoint"], m0.as_str(), "{s:#}");
    assert_eq!(dns_names(), [name], "{s:#}");
    assert_eq!(file("ip"), "v=2 ip=127.0.0.9\n");
    let log = since();
    assert!(!log.contains("backend unavailable"), "{log}");
    assert_eq!(
        log.matches("keeping the connection in use").count(),
        1,
        "said once:\n{log}"
    );

    // Back to a nameserver that answers: the new connection takes over.
    settings(&dns.addr());
    d.signal(nix::sys::signal::Signal::SIGHUP);
    etcd.put("/app/v", "3");
    wait_for("both files follow again", LIMIT, || {
        file("plain") == "v=3\n" && file("ip") == "v=3 ip=127.0.0.9\n"
    });
    wait_for("connected", LIMIT, || status()["connected"] == true);
    assert!(!d.log().contains("backend unavailable"), "{}", d.log());
}
