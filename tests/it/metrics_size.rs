//! What a host's `/metrics` costs a fleet's Prometheus, measured on a real
//! daemon: 13 series per resource plus 18 for the host (the README's
//! figure), and the reload metrics (`liveconf_reloads_total`,
//! `liveconf_resource_reload_owed`) following real reload commands.

use crate::common;

use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, free_port, http_get_metrics, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn start(fx: &Fx, port: u16) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let keys = fx.path("keys.yaml").display().to_string();
    let state = fx.path("state").display().to_string();
    let addr = format!("127.0.0.1:{port}");
    Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--file",
            &keys,
            "--state-dir",
            &state,
            "--wait",
            "0s",
            "--metrics-addr",
            &addr,
        ],
        &fx.path("daemon.log"),
    )
}

/// The sample lines of a scrape (no HTTP head, `# HELP`, `# TYPE`, `# EOF`).
fn samples(response: &str) -> Vec<&str> {
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The value of the sample named exactly `series` (name and labels).
fn value(body: &str, series: &str) -> Option<f64> {
    samples(body).into_iter().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

/// Waits for a scrape satisfying `cond`; returns its body.
fn wait_scrape(port: u16, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    wait_for(what, LIMIT, || match http_get_metrics(port) {
        Some(b) if cond(&b) => {
            last = b;
            true
        }
        Some(b) => {
            last = b;
            false
        }
        None => false,
    });
    last
}

#[test]
fn a_host_exports_13_series_per_resource_plus_18() {
    const N: usize = 40;
    let fx = Fx::new();
    let mut keys = String::from("app:\n");
    for i in 0..N {
        keys.push_str(&format!("  r{i:03}: \"{i}\"\n"));
        fx.resource(
            &format!("r{i:03}"),
            &format!(
                "[template]\nsrc = \"r.tera\"\ndest = \"{{out}}/r{i:03}.conf\"\nprefix = \"/app\"\nkeys = [\"/r{i:03}\"]\n"
            ),
        );
    }
    fx.keys(&keys).template(
        "r.tera",
        "{{ resource }}={{ getv(key=\"/\" ~ resource) }}\n",
    );
    let port = free_port();
    let _d = start(&fx, port);
    let body = wait_scrape(port, "every resource installed", |b| {
        samples(b)
            .iter()
            .filter(|l| l.starts_with("liveconf_resource_content{"))
            .count()
            == N
    });
    let n = samples(&body).len();
    let bytes = samples(&body).iter().map(|l| l.len() + 1).sum::<usize>();
    eprintln!("{N} resources: {n} series, {bytes} bytes of samples per scrape");
    assert_eq!(n, 13 * N + 18, "{body}");
    assert_eq!(
        samples(&body)
            .iter()
            .filter(|l| l.contains("_bucket{"))
            .count(),
        7,
        "one render-time histogram for the host: {body}"
    );
}

#[test]
fn reloads_are_counted_and_an_owed_reload_shows_until_it_succeeds() {
    let fx = Fx::new();
    // The reload succeeds while the flag file exists.
    let flag = fx.path("reload-ok");
    std::fs::write(&flag, "").unwrap();
    fx.keys("app:\n  v: \"1\"\n")
        .template("x.tera", "v={{ getv(key=\"/v\") }}\n")
        .resource(
            "x",
            &format!(
                "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nreload_cmd = \"test -e {}\"\n",
                flag.display()
            ),
        );
    let port = free_port();
    let _d = start(&fx, port);
    let body = wait_scrape(port, "x installed and reloaded", |b| {
        value(b, r#"liveconf_reloads_total{resource="x"}"#) == Some(1.0)
    });
    assert_eq!(
        value(&body, r#"liveconf_resource_reload_owed{resource="x"}"#),
        Some(0.0),
        "{body}"
    );

    // The reload fails: owed (and failing at reload) until it succeeds.
    std::fs::remove_file(&flag).unwrap();
    let tmp = fx.path("keys.yaml.new");
    std::fs::write(&tmp, "app:\n  v: \"2\"\n").unwrap();
    std::fs::rename(&tmp, fx.path("keys.yaml")).unwrap();
    // The reload is owed from the install on (before the reload runs), so
    // wait for its failure to be counted too.
    let body = wait_scrape(port, "the reload owed and failed", |b| {
        value(b, r#"liveconf_resource_reload_owed{resource="x"}"#) == Some(1.0)
            && value(b, r#"liveconf_reload_failures_total{resource="x"}"#) >= Some(1.0)
    });
    assert_eq!(
        value(&body, r#"liveconf_reloads_total{resource="x"}"#),
        Some(1.0),
        "{body}"
    );

    // Fixed: the retry pays it.
    std::fs::write(&flag, "").unwrap();
    let body = wait_scrape(port, "the owed reload paid", |b| {
        value(b, r#"liveconf_resource_reload_owed{resource="x"}"#) == Some(0.0)
    });
    assert_eq!(
        value(&body, r#"liveconf_reloads_total{resource="x"}"#),
        Some(2.0),
        "{body}"
    );
}
