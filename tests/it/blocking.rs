//! Blocking work stays off the daemon's async workers: while two renders
//! hang on a nameserver that never answers, another resource's change is
//! installed promptly and status.json keeps its heartbeat.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Fx;
use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// How long the fast resource's put may take to reach its file while the
/// slow renders hang. Well under one unanswered look-up (hickory: 2 s per
/// query, 6 s in all), which is how long a blocked worker used to stall
/// everything.
const PROMPT: Duration = Duration::from_millis(2500);

fn updated(fx: &Fx) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default();
    v["updated"].as_u64().unwrap_or(0)
}

#[test]
fn a_hung_dns_look_up_holds_up_no_other_resource_and_no_heartbeat() {
    // A nameserver that never answers: bound, never read.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent.local_addr().unwrap().to_string();

    let etcd = Etcd::start();
    etcd.put("/r/fast/x", "0");
    let fx = Fx::new();
    // Two slow resources, one per engine, that look a name up once their
    // /slow key exists (so the first render of everything is quick), and a
    // fast one.
    fx.template(
        "tera_slow.tera",
        "{% if getv(key=\"/slow\", default=\"\") != \"\" %}{{ lookup_srv(name=\"_x._tcp.slow.example.test\") | length }}{% else %}idle{% endif %}\n",
    );
    // Go's lookupSRV yields an empty list on failure: each of these waits
    // out the whole look-up, so this render hangs for far longer than the
    // test.
    fx.template(
        "go_slow.tmpl",
        &format!(
            "{{{{if exists \"/slow\"}}}}{}{{{{else}}}}idle{{{{end}}}}\n",
            "{{lookupSRV \"x\" \"tcp\" \"slow.example.test\"}}".repeat(8)
        ),
    );
    fx.template("fast.tera", "x={{ getv(key=\"/x\") }}\n");
    for (name, src) in [
        ("tera_slow", "tera_slow.tera"),
        ("go_slow", "go_slow.tmpl"),
        ("fast", "fast.tera"),
    ] {
        // The slow ones render "idle" from no keys at first.
        fx.resource(
            name,
            &format!(
                "[template]\nsrc = \"{src}\"\ndest = \"{{out}}/{name}.conf\"\nprefix = \"/r/{name}\"\nkeys = [\"/\"]\nallow_empty = true\n"
            ),
        );
    }
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let endpoints = etcd.endpoints();
    let d = Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            &endpoints,
            "--state-dir",
            &state,
            "--dns-server",
            &dns,
            "--wait",
            "0s",
        ],
        &fx.path("daemon.log"),
    );
    let (tera_slow, go_slow, fast) = (
        fx.path("out/tera_slow.conf"),
        fx.path("out/go_slow.conf"),
        fx.path("out/fast.conf"),
    );
    wait_for("first renders", LIMIT, || {
        read_or_empty(&tera_slow) == "idle\n"
            && read_or_empty(&go_slow) == "idle\n"
            && read_or_empty(&fast) == "x=0\n"
    });

    // Both slow renders start and hang on the nameserver.
    etcd.put("/r/tera_slow/slow", "1");
    etcd.put("/r/go_slow/slow", "1");
    std::thread::sleep(Duration::from_millis(500));
    let hung_since = Instant::now();

    // The fast resource's change is installed promptly all the same.
    etcd.put("/r/fast/x", "1");
    let put = Instant::now();
    wait_for("the fast resource's put installed", LIMIT, || {
        read_or_empty(&fast) == "x=1\n"
    });
    let took = put.elapsed();
    eprintln!("the fast resource's put was installed in {took:?}");
    assert!(
        took < PROMPT,
        "the fast resource's put took {took:?} to be installed while two renders hung on DNS\n{}",
        d.log()
    );

    // And status.json keeps its heartbeat (rewritten every 5 s) while the
    // Go render still hangs.
    let mut last = updated(&fx);
    for beat in 1..=2 {
        wait_for(
            &format!("status.json heartbeat {beat}"),
            Duration::from_secs(8),
            || updated(&fx) > last,
        );
        last = updated(&fx);
    }
    assert_eq!(
        read_or_empty(&go_slow),
        "idle\n",
        "the Go render was not hanging all along ({:?})",
        hung_since.elapsed()
    );
    assert_eq!(d.count("go_slow: rendered"), 1, "{}", d.log());
    drop(silent);
}
