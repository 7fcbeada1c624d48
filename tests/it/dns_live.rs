//! DNS as live state, against a real dnsmasq on loopback: a changed record
//! reaches the file within TTL + `dns_min_interval` + slack; the same
//! answer, in any order, renders nothing; a stopped nameserver keeps the
//! file (status names the error) and its return renders nothing when the
//! answer is unchanged; no good answer for `dns_max_stale` fails the
//! resource; NXDOMAIN fails only the resources that use the name; TXT and
//! URI values with hostile content stay data; `render --once` fails
//! clearly.

use crate::common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Fx;
use common::etcd::{Daemon, Etcd, free_port, http_get_metric, read_or_empty, wait_for};
use common::hardening::{file_daemon, status};

const LIMIT: Duration = Duration::from_secs(20);

/// What the daemons of these tests use: look-ups every second (dnsmasq
/// gives its records TTL 0 or 1 s; 1 s is the shortest dns_min_interval),
/// retries 1 s apart.
const MIN: &str = "1s";
const MAX: &str = "1s";

/// dnsmasq answering for `.test` (NXDOMAIN for any name it has no record
/// of), on one port across restarts, logging its queries.
struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Query log lines before the current process (restarts truncate).
    earlier: String,
}

impl Dnsmasq {
    fn start(records: &[String]) -> Dnsmasq {
        let mut d = Dnsmasq {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            earlier: String::new(),
        };
        d.run(records);
        d
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    fn run(&mut self, records: &[String]) {
        assert!(
            std::path::Path::new("/usr/sbin/dnsmasq").exists() || common::have("dnsmasq"),
            "dnsmasq is required (scripts/ensure-deps dnsmasq installs dnsmasq-base)"
        );
        let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        self.earlier.push_str(&read_or_empty(&self.log_path()));
        let _ = std::fs::remove_file(self.log_path());
        let child = Command::new(bin)
            .args([
                "--no-daemon",
                &format!("--port={}", self.port),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--local=/test/",
                "--local-ttl=1",
                "--log-queries",
                &format!("--log-facility={}", self.log_path().display()),
                &format!("--pid-file={}", self.dir.path().join("pid").display()),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        self.child = Some(child);
        let port = self.port;
        wait_for("dnsmasq listening", LIMIT, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops it (the port then refuses queries).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The same port, new records.
    fn restart(&mut self, records: &[String]) {
        self.stop();
        self.run(records);
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queries received for `name` (of any type), since the first start.
    fn queries(&self, name: &str) -> usize {
        let all = format!("{}{}", self.earlier, read_or_empty(&self.log_path()));
        all.lines()
            .filter(|l| l.contains("query[") && l.contains(&format!(" {name} from")))
            .count()
    }

    /// Waits until `name` has been asked `n` more times than `since`.
    fn wait_queries(&self, name: &str, since: usize, n: usize) {
        wait_for(&format!("{n} more look-ups of {name}"), LIMIT, || {
            self.queries(name) >= since + n
        });
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `--dns-rr` of a TXT record holding `text` as one character-string.
fn txt_rr(name: &str, text: &str) -> String {
    assert!(text.len() < 256);
    let mut data = vec![text.len() as u8];
    data.extend_from_slice(text.as_bytes());
    format!("--dns-rr={name},16,{}", hex(&data))
}

/// `--dns-rr` of a URI record (RFC 7553: priority, weight, target).
fn uri_rr(name: &str, priority: u16, weight: u16, target: &str) -> String {
    let mut data = priority.to_be_bytes().to_vec();
    data.extend_from_slice(&weight.to_be_bytes());
    data.extend_from_slice(target.as_bytes());
    format!("--dns-rr={name},256,{}", hex(&data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A daemon on the file backend, asking `dns`, with metrics on a free
/// port (returned).
fn daemon(fx: &Fx, dns: &Dnsmasq, stale: &str) -> (common::etcd::Daemon, u16) {
    let port = free_port();
    let d = file_daemon(
        fx,
        &[
            "--dns-server",
            &dns.addr(),
            "--dns-min-interval",
            MIN,
            "--dns-max-interval",
            MAX,
            "--dns-max-stale",
            stale,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    (d, port)
}

fn renders(port: u16, name: &str) -> f64 {
    http_get_metric(
        port,
        &format!("liveconf_renders_total{{resource=\"{name}\"}}"),
    )
    .unwrap_or(0.0)
}

fn reloads(fx: &Fx) -> usize {
    read_or_empty(&fx.path("out/reloads")).lines().count()
}

/// A resource `name` from `tmpl`, with a reload command counting reloads.
fn resource(fx: &Fx, name: &str, tmpl: &str, body: &str) {
    fx.template(tmpl, body);
    fx.resource(
        name,
        &format!(
            "[template]\nsrc = \"{tmpl}\"\ndest = \"{{out}}/{name}.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nallow_empty = true\nreload_cmd = \"echo {name} >> {{out}}/reloads\"\n"
        ),
    );
}

/// `liveconf render` on etcd with `--report` as node h1, asking `dns`.
fn reporting_daemon(fx: &Fx, etcd: &Etcd, dns: &Dnsmasq) -> Daemon {
    let (confdir, state) = (
        fx.dir.path().display().to_string(),
        fx.path("state").display().to_string(),
    );
    Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            &etcd.endpoints(),
            "--state-dir",
            &state,
            "--dns-server",
            &dns.addr(),
            "--dns-min-interval",
            MIN,
            "--dns-max-interval",
            MAX,
            "--report",
            "--node-name",
            "h1",
            "--wait",
            "0s",
        ],
        &fx.path("daemon.log"),
    )
}

/// Resource `flag`: the TXT records of `name`, joined with commas.
fn flag_resource(fx: &Fx, name: &str) {
    resource(
        fx,
        "flag",
        "flag.tera",
        &format!("flag={{{{ lookup_txt(name=\"{name}\") | join(sep=\",\") }}}}\n"),
    );
}

fn dns_entry(fx: &Fx, name: &str) -> serde_json::Value {
    status(fx)["dns"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

const ALL_KINDS: &str = "ip {{ lookup_ip(name=\"svc.live.test\") | join(sep=\",\") }}\n\
{% for s in lookup_srv(service=\"memcache\", proto=\"tcp\", domain=\"live.test\") %}srv {{ s.priority }} {{ s.weight }} {{ s.target }}:{{ s.port }}\n{% endfor %}\
{% for t in lookup_txt(name=\"flag.live.test\") %}txt {{ t }}\n{% endfor %}\
{% for u in lookup_uri(name=\"_api._tcp.live.test\") %}uri {{ u.priority }} {{ u.weight }} {{ u.target }}\n{% endfor %}";

fn records(ip: &str, txt: &[&str], srv_reversed: bool) -> Vec<String> {
    let mut v = vec![format!("--host-record=svc.live.test,{ip}")];
    let mut srv = vec![
        "--srv-host=_memcache._tcp.live.test,mc1.live.test,11211,10,5".to_string(),
        "--srv-host=_memcache._tcp.live.test,mc2.live.test,11211,10,5".to_string(),
    ];
    if srv_reversed {
        srv.reverse();
    }
    v.extend(srv);
    v.extend(txt.iter().map(|t| txt_rr("flag.live.test", t)));
    v.push(uri_rr(
        "_api._tcp.live.test",
        1,
        10,
        "https://api.live.test/v1",
    ));
    v
}

#[test]
fn a_changed_record_follows_and_the_same_answer_in_any_order_renders_nothing() {
    let mut dns = Dnsmasq::start(&records("10.0.0.1", &["on", "zone=a"], false));
    let fx = Fx::new();
    resource(&fx, "all", "all.tera", ALL_KINDS);
    let (d, port) = daemon(&fx, &dns, "1h");
    let first = "ip 10.0.0.1\nsrv 10 5 mc1.live.test:11211\nsrv 10 5 mc2.live.test:11211\ntxt on\ntxt zone=a\nuri 1 10 https://api.live.test/v1\n";
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/all.conf")) == first
    });
    wait_for("the first reload", LIMIT, || reloads(&fx) == 1);
    wait_for("the first render counted", LIMIT, || {
        renders(port, "all") >= 1.0
    });
    let r0 = renders(port, "all");

    // Every name is a dependency, listed in status.json.
    wait_for("four DNS dependencies in status.json", LIMIT, || {
        status(&fx)["dns"].as_array().map_or(0, |a| a.len()) == 4
    });
    let txt = dns_entry(&fx, "flag.live.test");
    assert_eq!(txt["type"], "TXT", "{txt}");
    assert_eq!(txt["resources"], serde_json::json!(["all"]), "{txt}");
    assert_eq!(txt["failing"], false, "{txt}");

    // The same answer, asked again and again: nothing renders.
    let q = dns.queries("flag.live.test");
    dns.wait_queries("flag.live.test", q, 3);
    // The same records in another order (server restarted): nothing renders.
    dns.restart(&records("10.0.0.1", &["zone=a", "on"], true));
    let q = dns.queries("flag.live.test");
    dns.wait_queries("flag.live.test", q, 3);
    let q = dns.queries("_memcache._tcp.live.test");
    dns.wait_queries("_memcache._tcp.live.test", q, 2);
    assert_eq!(
        renders(port, "all"),
        r0,
        "an unchanged answer rendered\n{}",
        d.log()
    );
    assert_eq!(reloads(&fx), 1, "an unchanged answer reloaded");

    // A changed TXT record: the file follows within TTL (1 s), which is
    // dns_min_interval too, + slack, one render, one reload.
    let changed = Instant::now();
    dns.restart(&records("10.0.0.1", &["off", "zone=a"], false));
    let want = first.replace("txt on\n", "txt off\n");
    wait_for("the changed TXT record in the file", LIMIT, || {
        read_or_empty(&fx.path("out/all.conf")) == want
    });
    let took = changed.elapsed();
    eprintln!("a changed record reached the file in {took:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}\n{}", d.log());
    wait_for("the reload of the change", LIMIT, || reloads(&fx) == 2);
    // A changed address too.
    dns.restart(&records("10.0.0.2", &["off", "zone=a"], false));
    let want = want.replace("10.0.0.1", "10.0.0.2");
    wait_for("the changed address in the file", LIMIT, || {
        read_or_empty(&fx.path("out/all.conf")) == want
    });
    wait_for("the reload of the address", LIMIT, || reloads(&fx) == 3);
    assert!(
        d.log().contains("DNS TXT flag.live.test: answer changed"),
        "{}",
        d.log()
    );
}

#[test]
fn a_stopped_nameserver_keeps_the_file_and_its_return_renders_nothing() {
    let recs = vec![txt_rr("flag.stop.test", "on")];
    let mut dns = Dnsmasq::start(&recs);
    let fx = Fx::new();
    flag_resource(&fx, "flag.stop.test");
    let (d, port) = daemon(&fx, &dns, "1h");
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/flag.conf")) == "flag=on\n"
    });
    wait_for("the first reload", LIMIT, || reloads(&fx) == 1);
    wait_for("the first render counted", LIMIT, || {
        renders(port, "flag") >= 1.0
    });
    let r0 = renders(port, "flag");

    dns.stop();
    wait_for("the error in status.json", LIMIT, || {
        dns_entry(&fx, "flag.stop.test")["error"].is_string()
    });
    let e = dns_entry(&fx, "flag.stop.test");
    assert_eq!(
        e["failing"], false,
        "the last good answer still serves: {e}"
    );
    // The error names the nameserver (trial finding 5), in words.
    let said = e["error"].as_str().unwrap_or("");
    assert!(
        said.contains(&format!("{} (dns_server)", dns.addr())) && !said.contains("proto error"),
        "{e}"
    );
    assert_eq!(status(&fx)["resources"]["flag"]["healthy"], true);
    assert_eq!(read_or_empty(&fx.path("out/flag.conf")), "flag=on\n");
    // liveconf status: WARNING, naming the name.
    let st = fx.run(&["status"]);
    assert_eq!(st.code, 1, "{}{}", st.stdout, st.stderr);
    assert!(st.stdout.contains("flag.stop.test"), "{}", st.stdout);
    // /metrics: the dependency is failing.
    let failing = http_get_metric(
        port,
        "liveconf_dns_failing{name=\"flag.stop.test\",type=\"TXT\"}",
    );
    assert_eq!(failing, Some(1.0));

    // Back with the same answer: the error clears, nothing renders.
    dns.run(&recs);
    wait_for("the error cleared", LIMIT, || {
        let e = dns_entry(&fx, "flag.stop.test");
        e.is_object() && e["error"].is_null()
    });
    assert_eq!(renders(port, "flag"), r0, "recovery rendered\n{}", d.log());
    assert_eq!(reloads(&fx), 1);
    assert!(d.log().contains("the answer is unchanged"), "{}", d.log());
}

#[test]
fn no_good_answer_for_dns_max_stale_fails_the_resource_and_keeps_its_file() {
    let recs = vec![txt_rr("flag.stale.test", "on")];
    let mut dns = Dnsmasq::start(&recs);
    let fx = Fx::new();
    flag_resource(&fx, "flag.stale.test");
    let (d, _) = daemon(&fx, &dns, "1s");
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/flag.conf")) == "flag=on\n"
    });
    dns.stop();
    wait_for("the resource failing at render", LIMIT, || {
        status(&fx)["resources"]["flag"]["error"]["step"] == "render"
    });
    let err = status(&fx)["resources"]["flag"]["error"].clone();
    assert_eq!(err["step"], "render", "{err}");
    let msg = err["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("lookup_txt(flag.stale.test)") && msg.contains("no good answer"),
        "{msg}"
    );
    assert_eq!(read_or_empty(&fx.path("out/flag.conf")), "flag=on\n");
    assert!(d.log().contains("dns_max_stale"), "{}", d.log());
    // Back: it renders again (same bytes: the file stays) and is healthy.
    dns.run(&recs);
    wait_for("healthy again", LIMIT, || {
        status(&fx)["resources"]["flag"]["healthy"] == true
    });
}

#[test]
fn nxdomain_fails_only_the_resources_that_use_the_name() {
    let both = vec![txt_rr("a.nx.test", "a1"), txt_rr("b.nx.test", "b1")];
    let mut dns = Dnsmasq::start(&both);
    let fx = Fx::new();
    resource(
        &fx,
        "a",
        "a.tera",
        "a={{ lookup_txt(name=\"a.nx.test\") | join(sep=\",\") }}\n",
    );
    resource(
        &fx,
        "b",
        "b.tera",
        "b={{ lookup_txt(name=\"b.nx.test\") | join(sep=\",\") }}\n",
    );
    let (d, _) = daemon(&fx, &dns, "1h");
    wait_for("the first renders", LIMIT, || {
        read_or_empty(&fx.path("out/a.conf")) == "a=a1\n"
            && read_or_empty(&fx.path("out/b.conf")) == "b=b1\n"
    });
    // b.nx.test stops existing; a changes.
    dns.restart(&[txt_rr("a.nx.test", "a2")]);
    wait_for("b failing, a following", LIMIT, || {
        status(&fx)["resources"]["b"]["error"]["step"] == "render"
            && read_or_empty(&fx.path("out/a.conf")) == "a=a2\n"
    });
    let msg = status(&fx)["resources"]["b"]["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("b.nx.test") && msg.contains("NXDOMAIN"),
        "{msg}"
    );
    assert_eq!(
        read_or_empty(&fx.path("out/b.conf")),
        "b=b1\n",
        "b keeps its file"
    );
    assert_eq!(status(&fx)["resources"]["a"]["healthy"], true);
    assert!(
        d.log().contains("DNS TXT b.nx.test") && d.log().contains("NXDOMAIN"),
        "{}",
        d.log()
    );
    // The name is back: b renders again.
    dns.restart(&[txt_rr("a.nx.test", "a2"), txt_rr("b.nx.test", "b2")]);
    wait_for("b back", LIMIT, || {
        read_or_empty(&fx.path("out/b.conf")) == "b=b2\n"
            && status(&fx)["resources"]["b"]["healthy"] == true
    });
}

/// Hostile TXT and URI values: quotes, `{{`, PHP and shell metacharacters.
const HOSTILE: &str =
    "x'\"{{ 7*7 }}{% raw %}<?php system('id'); ?>$(touch /tmp/liveconf-pwned);`id`\\";

#[test]
fn hostile_txt_and_uri_values_stay_data() {
    let dns = Dnsmasq::start(&[
        txt_rr("evil.hostile.test", HOSTILE),
        uri_rr("_evil._tcp.hostile.test", 1, 1, HOSTILE),
    ]);
    let fx = Fx::new();
    std::fs::write(
        fx.path("liveconf.toml"),
        format!("dns_server = \"{}\"\n", dns.addr()),
    )
    .unwrap();
    // Verbatim, as PHP literals, as JSON.
    resource(
        &fx,
        "raw",
        "raw.tera",
        "{% for t in lookup_txt(name=\"evil.hostile.test\") %}{{ t }}{% endfor %}\n{% for u in lookup_uri(name=\"_evil._tcp.hostile.test\") %}{{ u.target }}{% endfor %}\n",
    );
    resource(
        &fx,
        "php",
        "php.tera",
        "{% set u = lookup_uri(name=\"_evil._tcp.hostile.test\") | first %}<?php\nreturn [{{ lookup_txt(name=\"evil.hostile.test\") | first | php }}, {{ u.target | php }}];\n",
    );
    resource(
        &fx,
        "json",
        "json.tera",
        "{% set t = lookup_txt(name=\"evil.hostile.test\") %}{% set u = lookup_uri(name=\"_evil._tcp.hostile.test\") %}{{ {\"txt\": t, \"uri\": u} | json_encode }}\n",
    );
    let _ = std::fs::remove_file("/tmp/liveconf-pwned");
    let run = fx.run(&[
        "render",
        "--once",
        "--config",
        &fx.path("liveconf.toml").display().to_string(),
    ]);
    run.expect_code(0);
    assert_eq!(fx.read("out/raw.conf"), format!("{HOSTILE}\n{HOSTILE}\n"));
    let back = common::php(
        "$v = include $argv[1]; echo $v[0] === $v[1] ? $v[0] : 'differ';",
        &[fx.path("out/php.conf").to_str().unwrap()],
    );
    assert_eq!(back, HOSTILE);
    let j: serde_json::Value = serde_json::from_str(&fx.read("out/json.conf")).unwrap();
    assert_eq!(j["txt"][0], HOSTILE);
    assert_eq!(j["uri"][0]["target"], HOSTILE);
    assert_eq!(j["uri"][0]["priority"], 1);
    assert!(!std::path::Path::new("/tmp/liveconf-pwned").exists());
    // Each reload ran once, the value never reaching its shell.
    assert_eq!(reloads(&fx), 3);
}

#[test]
fn render_once_without_a_nameserver_fails_clearly() {
    let mut dns = Dnsmasq::start(&[txt_rr("flag.once.test", "on")]);
    let addr = dns.addr();
    let fx = Fx::new();
    flag_resource(&fx, "flag.once.test");
    resource(&fx, "other", "other.tera", "fine\n");
    let ok = fx.run(&["render", "--once", "--dns-server", &addr]);
    ok.expect_code(0);
    assert_eq!(fx.read("out/flag.conf"), "flag=on\n");
    dns.stop();
    let run = fx.run(&["render", "--once", "--dns-server", &addr]);
    // 2: some resources failed.
    run.expect_code(2);
    run.expect_stderr(&["flag", "lookup_txt(flag.once.test)"]);
    assert_eq!(fx.read("out/flag.conf"), "flag=on\n", "the file stays");
    assert_eq!(fx.read("out/other.conf"), "fine\n");
}

#[test]
fn the_fleet_report_names_a_host_that_cannot_resolve() {
    let etcd = Etcd::start();
    etcd.put("/app/x", "1");
    let recs = vec![txt_rr("flag.fleet.test", "on")];
    let mut dns = Dnsmasq::start(&recs);
    let fx = Fx::new();
    flag_resource(&fx, "flag.fleet.test");
    let d = reporting_daemon(&fx, &etcd, &dns);
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/flag.conf")) == "flag=on\n"
    });
    let fleet = || {
        common::Run::from(
            Command::new(env!("CARGO_BIN_EXE_liveconf"))
                .args(["fleet", "--endpoints", &etcd.endpoints()])
                .env_remove("RUST_LOG")
                .output()
                .expect("run liveconf fleet"),
        )
    };
    dns.stop();
    let mut last = String::new();
    wait_for("liveconf fleet naming h1's DNS failure", LIMIT, || {
        let r = fleet();
        last = format!("{}{}", r.stdout, r.stderr);
        r.code != 0 && last.contains("h1") && last.contains("dns: TXT flag.fleet.test (flag)")
    });
    assert!(last.contains("the last good answer still serves"), "{last}");
    // Answering again: the host is fine again.
    dns.run(&recs);
    wait_for("liveconf fleet content again", LIMIT, || {
        let r = fleet();
        last = format!("{}{}", r.stdout, r.stderr);
        r.code == 0
    });
    drop(d);
}

#[test]
fn go_templates_keep_confds_functions_and_follow_a_change() {
    let recs = |ip: &str| {
        vec![
            format!("--host-record=svc.go.test,{ip}"),
            "--srv-host=_memcache._tcp.go.test,mc2.go.test,11212,10,5".to_string(),
            "--srv-host=_memcache._tcp.go.test,mc1.go.test,11211,20,5".to_string(),
        ]
    };
    let mut dns = Dnsmasq::start(&recs("10.0.0.9"));
    let fx = Fx::new();
    // confd's signatures; lookupSRV sorted by target+port+priority+weight,
    // targets with their trailing dot; lookupIP a sorted []string.
    resource(
        &fx,
        "go",
        "go.tmpl",
        "{{lookupIP \"svc.go.test\"}} {{lookupIPV4 \"svc.go.test\"}}\n\
         {{range lookupSRV \"memcache\" \"tcp\" \"go.test\"}}{{.Target}} {{.Port}} {{.Priority}} {{.Weight}}\n{{end}}",
    );
    let (d, _) = daemon(&fx, &dns, "1h");
    let first = "[10.0.0.9] [10.0.0.9]\nmc1.go.test. 11211 20 5\nmc2.go.test. 11212 10 5\n";
    wait_for("the Go render", LIMIT, || {
        read_or_empty(&fx.path("out/go.conf")) == first
    });
    // The Go engine's look-ups are dependencies too.
    dns.restart(&recs("10.0.0.10"));
    let want = first.replace("10.0.0.9", "10.0.0.10");
    wait_for("the changed address in the Go render", LIMIT, || {
        read_or_empty(&fx.path("out/go.conf")) == want
    });
    assert!(
        d.log().contains("DNS A/AAAA svc.go.test: answer changed"),
        "{}",
        d.log()
    );
}

/// Issue 12, findings 2 and 6: Go's `lookupIPV4` / `lookupIPV6` of a name
/// with only the other family fail the render (as Tera's do) instead of
/// installing an emptied list; `lookupIP ""` is refused without a query.
#[test]
fn go_lookups_of_a_missing_family_or_an_empty_name_fail_the_render() {
    let dns = Dnsmasq::start(&[
        "--host-record=v6only.svc.test,fd00::9".to_string(),
        "--host-record=v4only.svc.test,10.0.0.7".to_string(),
    ]);
    let addr = dns.addr();
    let fx = Fx::new();
    resource(
        &fx,
        "v4",
        "v4.tmpl",
        "{{range lookupIPV4 \"v6only.svc.test\"}}server {{.}}\n{{end}}",
    );
    resource(
        &fx,
        "v6",
        "v6.tmpl",
        "{{range lookupIPV6 \"v4only.svc.test\"}}server {{.}}\n{{end}}",
    );
    resource(&fx, "empty", "empty.tmpl", "{{lookupIP \"\"}}\n");
    resource(
        &fx,
        "good",
        "good.tmpl",
        "{{lookupIPV6 \"v6only.svc.test\"}} {{lookupIPV4 \"v4only.svc.test\"}}\n",
    );
    let run = fx.run(&["render", "--once", "--dns-server", &addr]);
    run.expect_code(2);
    run.expect_stderr(&[
        "lookupIPV4",
        "v6only.svc.test: no IPv4 address",
        "lookupIPV6",
        "v4only.svc.test: no IPv6 address",
        "lookupIP",
        "the name is empty",
    ]);
    for r in ["v4", "v6", "empty"] {
        assert!(
            !fx.path(&format!("out/{r}.conf")).exists(),
            "{r}: no file installed"
        );
    }
    assert_eq!(fx.read("out/good.conf"), "[fd00::9] [10.0.0.7]\n");
}

/// Issue 12, findings 3 and 4: while a resource fails on its first name,
/// its second name stays its dependency (status.json, /metrics), and a
/// look-up whose answer has no address of the family asked for (NODATA
/// for AAAA) shows its dependency failing.
#[test]
fn a_failing_name_keeps_the_others_and_a_missing_family_shows_failing() {
    let both = vec![
        txt_rr("a.keep.test", "a1"),
        txt_rr("b.keep.test", "b1"),
        "--host-record=v4.keep.test,10.0.0.5".to_string(),
    ];
    let mut dns = Dnsmasq::start(&both);
    let fx = Fx::new();
    resource(
        &fx,
        "ab",
        "ab.tera",
        "a={{ lookup_txt(name=\"a.keep.test\") | join(sep=\",\") }}\n\
         b={{ lookup_txt(name=\"b.keep.test\") | join(sep=\",\") }}\n",
    );
    resource(
        &fx,
        "v6",
        "v6.tera",
        "{% for ip in lookup_ipv6(name=\"v4.keep.test\") %}{{ ip }}\n{% endfor %}",
    );
    let (_d, port) = daemon(&fx, &dns, "1h");
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/ab.conf")) == "a=a1\nb=b1\n"
    });
    wait_for("the AAAA dependency failing", LIMIT, || {
        dns_entry(&fx, "v4.keep.test")["failing"] == true
    });
    let e = dns_entry(&fx, "v4.keep.test");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("no IPv6 address"),
        "{e}"
    );
    wait_for(
        "liveconf_dns_failing 1 for the AAAA dependency",
        LIMIT,
        || {
            http_get_metric(
                port,
                "liveconf_dns_failing{name=\"v4.keep.test\",type=\"A/AAAA\"}",
            ) == Some(1.0)
        },
    );
    // a.keep.test stops existing: ab fails on it, b.keep.test stays its
    // dependency.
    dns.restart(&[
        txt_rr("b.keep.test", "b1"),
        "--host-record=v4.keep.test,10.0.0.5".to_string(),
    ]);
    wait_for("ab failing", LIMIT, || {
        status(&fx)["resources"]["ab"]["error"]["step"] == "render"
    });
    // Several refreshes later b is still there.
    std::thread::sleep(Duration::from_secs(3));
    let b = dns_entry(&fx, "b.keep.test");
    assert_eq!(b["resources"], serde_json::json!(["ab"]), "{b}");
    assert_eq!(dns_entry(&fx, "a.keep.test")["failing"], true);
}

/// Issue 12, finding 5: `render --once` and `check` look each name and
/// type up once per run, whatever the number of resources and functions
/// using it; with the nameserver down the run waits for one time-out per
/// name, not one per resource.
#[test]
fn a_one_shot_run_looks_each_name_up_once() {
    let mut dns = Dnsmasq::start(&[
        txt_rr("flag.shared.test", "on"),
        "--host-record=svc.shared.test,10.0.0.3,fd00::3".to_string(),
    ]);
    let addr = dns.addr();
    let fx = Fx::new();
    for i in 0..5 {
        resource(
            &fx,
            &format!("r{i}"),
            &format!("r{i}.tera"),
            "flag={{ lookup_txt(name=\"flag.shared.test\") | join(sep=\",\") }}\n",
        );
    }
    resource(
        &fx,
        "ips",
        "ips.tera",
        "{{ lookup_ip(name=\"svc.shared.test\") | join(sep=\",\") }} \
         {{ lookup_ipv4(name=\"svc.shared.test\") | join(sep=\",\") }} \
         {{ lookup_ipv6(name=\"svc.shared.test\") | join(sep=\",\") }}\n",
    );
    let (txt0, ip0) = (
        dns.queries("flag.shared.test"),
        dns.queries("svc.shared.test"),
    );
    fx.run(&["render", "--once", "--dns-server", &addr])
        .expect_code(0);
    assert_eq!(fx.read("out/r4.conf"), "flag=on\n");
    assert_eq!(
        fx.read("out/ips.conf"),
        "10.0.0.3,fd00::3 10.0.0.3 fd00::3\n"
    );
    assert_eq!(dns.queries("flag.shared.test") - txt0, 1, "one TXT query");
    assert_eq!(
        dns.queries("svc.shared.test") - ip0,
        2,
        "one A and one AAAA"
    );
    let txt1 = dns.queries("flag.shared.test");
    fx.run(&["check", "--dns-server", &addr]).expect_code(0);
    assert_eq!(
        dns.queries("flag.shared.test") - txt1,
        1,
        "check: one query"
    );
    // The nameserver down: one time-out for the name, not five.
    dns.stop();
    let start = Instant::now();
    let run = fx.run(&["render", "--once", "--dns-server", &addr]);
    run.expect_code(2);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// DNS trial finding 2: an SRV answer whose only record has target "."
/// (RFC 2782: the service is decidedly not available at that name) fails
/// the render in both engines, saying so, instead of rendering a server
/// named "" or "."; "." among other records is dropped; the daemon follows
/// the name like any real answer (the service coming back renders).
#[test]
fn an_srv_target_of_dot_means_no_service_in_both_engines() {
    let none = "--srv-host=_ldap._tcp.none.test,.,1".to_string();
    let mixed = [
        "--srv-host=_ldap._tcp.mixed.test,.,1,0,0".to_string(),
        "--srv-host=_ldap._tcp.mixed.test,ldap1.mixed.test,389,10,5".to_string(),
    ];
    let mut recs = vec![none.clone()];
    recs.extend(mixed.iter().cloned());
    let mut dns = Dnsmasq::start(&recs);
    let fx = Fx::new();
    resource(
        &fx,
        "tera",
        "tera.tera",
        "{% for s in lookup_srv(name=\"_ldap._tcp.none.test\") %}server [{{ s.target }}]:{{ s.port }}\n{% endfor %}",
    );
    resource(
        &fx,
        "go",
        "go.tmpl",
        "{{range lookupSRV \"ldap\" \"tcp\" \"none.test\"}}server [{{.Target}}]:{{.Port}}\n{{end}}",
    );
    resource(
        &fx,
        "mixed",
        "mixed.tera",
        "{% for s in lookup_srv(service=\"ldap\", proto=\"tcp\", domain=\"mixed.test\") %}server {{ s.target }}:{{ s.port }}\n{% endfor %}",
    );
    resource(
        &fx,
        "gomixed",
        "gomixed.tmpl",
        "{{range lookupSRV \"ldap\" \"tcp\" \"mixed.test\"}}server {{.Target}}:{{.Port}}\n{{end}}",
    );
    let run = fx.run(&["render", "--once", "--dns-server", &dns.addr()]);
    run.expect_code(2);
    let said = "the service is not available at _ldap._tcp.none.test (its SRV answer has only the target \".\", RFC 2782)";
    run.expect_stderr(&["lookup_srv(_ldap._tcp.none.test)", "lookupSRV", said]);
    for r in ["tera", "go"] {
        assert!(
            !fx.path(&format!("out/{r}.conf")).exists(),
            "{r}: installed a server named after \".\"\n{}",
            run.stderr
        );
    }
    assert_eq!(fx.read("out/mixed.conf"), "server ldap1.mixed.test:389\n");
    assert_eq!(
        fx.read("out/gomixed.conf"),
        "server ldap1.mixed.test.:389\n"
    );

    // The daemon: the resource fails at render, the dependency shows it;
    // the service published again renders.
    let (d, _) = daemon(&fx, &dns, "1h");
    wait_for("tera failing at render", LIMIT, || {
        status(&fx)["resources"]["tera"]["error"]["step"] == "render"
    });
    let msg = status(&fx)["resources"]["tera"]["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains(said), "{msg}");
    wait_for("the dependency failing in status.json", LIMIT, || {
        dns_entry(&fx, "_ldap._tcp.none.test")["failing"] == true
    });
    dns.restart(&[
        "--srv-host=_ldap._tcp.none.test,ldap9.none.test,636".to_string(),
        mixed[0].clone(),
        mixed[1].clone(),
    ]);
    wait_for("the service back in both files", LIMIT, || {
        read_or_empty(&fx.path("out/tera.conf")) == "server [ldap9.none.test]:636\n"
            && read_or_empty(&fx.path("out/go.conf")) == "server [ldap9.none.test.]:636\n"
    });
    drop(d);
}

/// DNS trial finding 7: a dns_min_interval longer than dns_max_interval,
/// or below 1s, is a configuration error: exit 3 at start, refused whole
/// on SIGHUP (the running settings stay).
#[test]
fn dns_intervals_that_cannot_hold_are_refused_at_start_and_on_sighup() {
    let fx = Fx::new();
    resource(&fx, "plain", "plain.tera", "x\n");
    let run = fx.run(&[
        "render",
        "--once",
        "--dns-min-interval",
        "1m",
        "--dns-max-interval",
        "20s",
    ]);
    run.expect_code(3);
    run.expect_stderr(&["dns_min_interval = \"1m\" is longer than dns_max_interval = \"20s\""]);
    let run = fx.run(&["render", "--once", "--dns-min-interval", "0s"]);
    run.expect_code(3);
    run.expect_stderr(&["dns_min_interval = \"0s\" is below 1s"]);

    let toml = fx.path("liveconf.toml");
    std::fs::write(&toml, "dns_min_interval = \"1s\"\n").unwrap();
    let d = file_daemon(&fx, &[]);
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/plain.conf")) == "x\n"
    });
    std::fs::write(
        &toml,
        "dns_min_interval = \"1m\"\ndns_max_interval = \"20s\"\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the refusal in status.json", LIMIT, || {
        status(&fx)["config_error"]["message"]
            .as_str()
            .is_some_and(|m| {
                m.contains(
                    "line 1: dns_min_interval = \"1m\" is longer than dns_max_interval = \"20s\"",
                )
            })
    });
    assert!(
        d.log().contains("could not be loaded at SIGHUP"),
        "{}",
        d.log()
    );
}

/// DNS trial finding 8: a name that stops existing shows no TTL (dnsmasq
/// sends no SOA, so there is no negative-caching TTL to show), not "ttl
/// 0s"; its return with the same records is said as such, not "after 0
/// failed look-up(s)"; a name that times out shows `lookup_failing` in
/// status.json, agreeing with `liveconf_dns_failing`, while `failing` (its
/// renders fail) stays false.
#[test]
fn a_name_gone_and_back_and_a_timeout_are_shown_as_they_are() {
    let recs = vec![txt_rr("flag.back.test", "on")];
    let mut dns = Dnsmasq::start(&recs);
    let fx = Fx::new();
    flag_resource(&fx, "flag.back.test");
    let (d, port) = daemon(&fx, &dns, "1h");
    wait_for("the first render", LIMIT, || {
        read_or_empty(&fx.path("out/flag.conf")) == "flag=on\n"
    });
    wait_for("the dependency in status.json", LIMIT, || {
        dns_entry(&fx, "flag.back.test")["ttl"] == 1
    });
    let e = dns_entry(&fx, "flag.back.test");
    assert_eq!(e["lookup_failing"], false, "{e}");

    // Gone (NXDOMAIN, no SOA): failing, no TTL anywhere.
    dns.restart(&[]);
    wait_for("the name failing", LIMIT, || {
        dns_entry(&fx, "flag.back.test")["failing"] == true
    });
    let e = dns_entry(&fx, "flag.back.test");
    assert!(e.get("ttl").is_none(), "{e}");
    assert_eq!(
        e["lookup_failing"], false,
        "a negative answer is an answer: {e}"
    );
    let st = fx.run(&["status"]);
    assert!(
        st.stdout.contains("flag.back.test") && !st.stdout.contains("ttl 0s"),
        "{}",
        st.stdout
    );
    wait_for("no TTL series for it", LIMIT, || {
        http_get_metric(
            port,
            "liveconf_dns_failing{name=\"flag.back.test\",type=\"TXT\"}",
        ) == Some(1.0)
            && http_get_metric(
                port,
                "liveconf_dns_ttl_seconds{name=\"flag.back.test\",type=\"TXT\"}",
            )
            .is_none()
    });

    // Back with the same record: said so.
    dns.restart(&recs);
    wait_for("healthy again", LIMIT, || {
        status(&fx)["resources"]["flag"]["healthy"] == true
    });
    wait_for("the return in the log", LIMIT, || {
        d.log()
            .contains("DNS TXT flag.back.test: the name exists again")
    });
    assert!(!d.log().contains("after 0 failed"), "{}", d.log());

    // No answer at all: the last good answer serves (failing false), the
    // look-ups fail (lookup_failing true, as liveconf_dns_failing).
    dns.stop();
    wait_for("lookup_failing in status.json", LIMIT, || {
        dns_entry(&fx, "flag.back.test")["lookup_failing"] == true
    });
    let e = dns_entry(&fx, "flag.back.test");
    assert_eq!(e["failing"], false, "{e}");
    assert_eq!(
        http_get_metric(
            port,
            "liveconf_dns_failing{name=\"flag.back.test\",type=\"TXT\"}"
        ),
        Some(1.0)
    );
}

/// DNS trial finding 9: a Tera resource that reads only DNS is written
/// with `keys = []` (no `allow_empty`, no made-up prefix): it renders at
/// start, follows its TXT record, is not held by the empty-keyspace
/// guard, and `fleet` / `fleet wait` never call it behind a key change.
#[test]
fn a_dns_only_resource_with_empty_keys_follows_its_record() {
    let etcd = Etcd::start();
    etcd.put("/app/x", "1");
    let mut dns = Dnsmasq::start(&[txt_rr("flag.only.test", "on")]);
    let fx = Fx::new();
    fx.template(
        "only.tera",
        "flag={{ lookup_txt(name=\"flag.only.test\") | first }}\n",
    );
    fx.resource(
        "only",
        "[template]\nsrc = \"only.tera\"\ndest = \"{out}/only.conf\"\nkeys = []\n",
    );
    resource(&fx, "keyed", "keyed.tera", "x={{ getv(key=\"/x\") }}\n");
    let d = reporting_daemon(&fx, &etcd, &dns);
    wait_for("the first renders", LIMIT, || {
        read_or_empty(&fx.path("out/only.conf")) == "flag=on\n"
            && read_or_empty(&fx.path("out/keyed.conf")) == "x=1\n"
    });
    dns.restart(&[txt_rr("flag.only.test", "off")]);
    wait_for("the changed record in the file", LIMIT, || {
        read_or_empty(&fx.path("out/only.conf")) == "flag=off\n"
    });
    assert_eq!(status(&fx)["resources"]["only"]["healthy"], true);
    // A key change: the DNS-only resource is not waited for, nor stale.
    etcd.put("/app/x", "2");
    let liveconf = |args: &[&str]| {
        common::Run::from(
            Command::new(env!("CARGO_BIN_EXE_liveconf"))
                .args(args)
                .args(["--endpoints", &etcd.endpoints()])
                .env_remove("RUST_LOG")
                .output()
                .expect("run liveconf"),
        )
    };
    let wait = liveconf(&["fleet", "wait", "--timeout", "15s"]);
    assert_eq!(wait.code, 0, "{}{}\n{}", wait.stdout, wait.stderr, d.log());
    assert_eq!(fx.read("out/keyed.conf"), "x=2\n");
    let fleet = liveconf(&["fleet"]);
    assert_eq!(fleet.code, 0, "{}{}", fleet.stdout, fleet.stderr);
    drop(d);
}

/// DNS trial finding 10: the README's recipe for a TXT value in a shell
/// file (single quotes, each `'` written `'\''`, the backslash doubled in
/// the Tera string) gives the value back when the file is sourced by sh,
/// whatever it holds; bytes that are not UTF-8 become U+FFFD; a NUL byte
/// fails the render (never written into a file).
#[test]
fn a_txt_value_quoted_for_sh_reads_back_and_odd_bytes_are_handled() {
    // TXT data as it goes on the wire: one character-string.
    let raw_rr = |name: &str, bytes: &[u8]| {
        let mut data = vec![bytes.len() as u8];
        data.extend_from_slice(bytes);
        format!("--dns-rr={name},16,{}", hex(&data))
    };
    let value = format!("{HOSTILE} it's 'quoted' \\' and\nnewline");
    let dns = Dnsmasq::start(&[
        raw_rr("evil.sh.test", value.as_bytes()),
        raw_rr("latin1.sh.test", b"caf\xe9 ok"),
        raw_rr("nul.sh.test", b"a\0b"),
    ]);
    let fx = Fx::new();
    // The README's recipe, as written there.
    resource(
        &fx,
        "env",
        "env.tera",
        r#"FLAG='{{ lookup_txt(name="evil.sh.test") | first | replace(from="'", to="'\\''") }}'
"#,
    );
    resource(
        &fx,
        "latin1",
        "latin1.tera",
        "{{ lookup_txt(name=\"latin1.sh.test\") | first }}\n",
    );
    resource(
        &fx,
        "nul",
        "nul.tera",
        "{{ lookup_txt(name=\"nul.sh.test\") | first }}\n",
    );
    let _ = std::fs::remove_file("/tmp/liveconf-pwned");
    let run = fx.run(&["render", "--once", "--dns-server", &dns.addr()]);
    run.expect_code(2);
    run.expect_stderr(&["lookup_txt(nul.sh.test): a TXT record holds a NUL byte"]);
    assert!(!fx.path("out/nul.conf").exists());
    assert_eq!(fx.read("out/latin1.conf"), "caf\u{FFFD} ok\n");
    let out = Command::new("sh")
        .args(["-c", ". \"$1\" && printf %s \"$FLAG\"", "sh"])
        .arg(fx.path("out/env.conf"))
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    assert!(!std::path::Path::new("/tmp/liveconf-pwned").exists());
}

/// Found by the SRV trial: a SIGHUP that points `dns_server` at a
/// nameserver that does not answer made the daemon forget every answer,
/// so the names were no longer followed (or the resources failed at their
/// next render). The new nameserver is asked for every name at once, and
/// while it does not answer the last good answer serves: the file stays,
/// the resource stays healthy, status names the new nameserver's silence.
#[test]
fn a_sighup_to_a_silent_nameserver_keeps_the_last_good_answers() {
    let dns = Dnsmasq::start(&[txt_rr("flag.hup.test", "on")]);
    let hole = crate::srv_follow::BlackHole::start(None, "flag.hup.test");
    let fx = Fx::new();
    resource(
        &fx,
        "x",
        "x.tera",
        "flag={{ lookup_txt(name=\"flag.hup.test\") | join(sep=\",\") }}\n",
    );
    let toml = fx.path("liveconf.toml");
    let settings = |server: &str| {
        format!("dns_server = \"{server}\"\ndns_min_interval = \"1s\"\ndns_max_interval = \"1s\"\n")
    };
    std::fs::write(&toml, settings(&dns.addr())).unwrap();
    let d = file_daemon(&fx, &[]);
    let file = || read_or_empty(&fx.path("out/x.conf"));
    wait_for("the first render", LIMIT, || file() == "flag=on\n");

    std::fs::write(&toml, settings(&hole.addr())).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the name asked of the new nameserver", LIMIT, || {
        hole.asked() >= 1
    });
    wait_for("status names the new nameserver's silence", LIMIT, || {
        dns_entry(&fx, "flag.hup.test")["error"]
            .as_str()
            .is_some_and(|e| e.contains(&hole.addr()))
    });
    assert_eq!(file(), "flag=on\n");
    let x = &status(&fx)["resources"]["x"];
    assert_eq!(x["healthy"], true, "{x}\n{}", d.log());
    assert!(!d.log().contains("render failed"), "{}", d.log());
}
