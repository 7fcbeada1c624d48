//! The daemon against real etcd servers that fail: a single member killed
//! and restarted, the member in use killed in a three-member cluster, keys
//! changed (and compacted away) while the daemon's only member is down, the
//! periodic resync, and etcd not there at all when the daemon starts.
//! Two more crash the daemon's member again right after it resumed (no
//! event of the outage may be lost), and rebuild etcd under it with a lower
//! revision (the daemon must notice and take a new snapshot).
//!
//! Sleeps only make an outage last or time a crash; every result is waited
//! for as a condition, with a bound.
//!
//! What is asserted is what an operator would check: the file's content,
//! that it is left alone during an outage (same bytes, same inode, same
//! mtime, no stage file next to it), status.json, and the daemon's log.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};
use common::{Fx, list};

/// Bound of every wait for a result.
const LIMIT: Duration = Duration::from_secs(30);
/// How long an outage lasts ("several seconds").
const OUTAGE: Duration = Duration::from_secs(3);

/// One resource, `app`, rendering every key directly under `/app` as
/// `key=value` lines; returns its destination.
fn app_resource(fx: &Fx) -> PathBuf {
    fx.template(
        "app.tera",
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    );
    fx.resource(
        "app",
        "[template]\nsrc = \"app.tera\"\ndest = \"{out}/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    fx.path("out/app.conf")
}

/// The file `app_resource` renders for these keys (relative to /app, sorted).
fn rendered(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("/{k}={v}\n")).collect()
}

/// `liveconf render` (daemon) on `endpoints`, no coalescing window.
fn daemon(fx: &Fx, endpoints: &str, extra: &[&str]) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let mut args = vec![
        "--confdir",
        &confdir,
        "--endpoints",
        endpoints,
        "--state-dir",
        &state,
        "--wait",
        "0s",
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args, &fx.path("daemon.log"))
}

/// status.json (null while it does not exist or is being replaced).
fn status(fx: &Fx) -> serde_json::Value {
    serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
}

fn connected(fx: &Fx) -> bool {
    status(fx)["connected"] == true
}

fn disconnected(fx: &Fx) -> bool {
    status(fx)["connected"] == false
}

/// The files in out/: only the destination, never a stage file.
fn assert_no_stage_files(fx: &Fx) {
    let files = list(&fx.path("out"));
    assert_eq!(files, ["app.conf"], "unexpected files in out/: {files:?}");
}

/// What identifies a file's content and identity: bytes, inode, mtime.
fn fingerprint(p: &Path) -> (Vec<u8>, u64, i64, i64) {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let m = std::fs::metadata(p).expect("metadata");
    (bytes, m.ino(), m.mtime(), m.mtime_nsec())
}

/// For `dur` (the outage), checks every 20ms that `dest` is untouched and
/// that no stage file appears; returns whether status.json said
/// "disconnected" meanwhile.
fn untouched_for(fx: &Fx, dest: &Path, dur: Duration) -> bool {
    let before = fingerprint(dest);
    let start = Instant::now();
    let mut saw_disconnected = false;
    while start.elapsed() < dur {
        let now = fingerprint(dest);
        assert!(
            now == before,
            "{} was touched during the outage: {:?} became {:?}",
            dest.display(),
            String::from_utf8_lossy(&before.0),
            String::from_utf8_lossy(&now.0)
        );
        assert_no_stage_files(fx);
        saw_disconnected |= disconnected(fx);
        std::thread::sleep(Duration::from_millis(20));
    }
    saw_disconnected
}

/// Waits (bounded) until `dest` holds `want`; on timeout, shows both.
fn wait_content(dest: &Path, want: &str, what: &str) {
    let start = Instant::now();
    while read_or_empty(dest) != want && start.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        read_or_empty(dest),
        want,
        "{}: timed out after {LIMIT:?} waiting for {what}",
        dest.display()
    );
}

/// The daemon rendered `content` and says it is connected.
fn wait_rendered_and_connected(fx: &Fx, dest: &Path, content: &str, what: &str) {
    wait_content(dest, content, what);
    wait_for(&format!("{what}: status.json connected"), LIMIT, || {
        connected(fx)
    });
}

#[test]
fn single_member_outage_keeps_the_file_and_reconnects() {
    let mut etcd = Etcd::start();
    let ep = etcd.members[0].url();
    etcd.put("/app/x", "1");
    etcd.put("/app/y", "2");
    let fx = Fx::new();
    let dest = app_resource(&fx);
    let d = daemon(&fx, &ep, &[]);
    wait_rendered_and_connected(
        &fx,
        &dest,
        &rendered(&[("x", "1"), ("y", "2")]),
        "initial render",
    );
    assert_eq!(status(&fx)["endpoint"], ep.as_str());

    etcd.members[0].stop();
    let saw_disconnected = untouched_for(&fx, &dest, OUTAGE);
    if !saw_disconnected {
        // Still down: the daemon must say so before it comes back.
        wait_for(
            "status.json connected=false during the outage",
            LIMIT,
            || disconnected(&fx),
        );
    }
    assert!(
        d.log().contains("backend unavailable"),
        "the outage was not logged:\n{}",
        d.log()
    );

    // Same data dir: the keys are still there; change some after it is back.
    etcd.members[0].start();
    etcd.wait_healthy();
    etcd.put("/app/x", "10");
    etcd.del("/app/y");
    etcd.put("/app/z", "3");
    wait_rendered_and_connected(
        &fx,
        &dest,
        &rendered(&[("x", "10"), ("z", "3")]),
        "convergence after the restart",
    );
    assert_eq!(status(&fx)["endpoint"], ep.as_str());
    assert_no_stage_files(&fx);
    let rev = etcd.revision();
    wait_for(
        "status.json: the file reflects the last revision",
        LIMIT,
        || status(&fx)["resources"]["app"]["revision"] == rev,
    );
    assert_eq!(status(&fx)["resources"]["app"]["healthy"], true);
}

#[test]
fn killing_the_member_in_use_fails_over_to_the_others() {
    let mut etcd = Etcd::cluster(3, &[]);
    let urls: Vec<String> = etcd.members.iter().map(|m| m.url()).collect();
    etcd.put_at(&urls[0], "/app/x", "1");
    let fx = Fx::new();
    let dest = app_resource(&fx);
    let _d = daemon(&fx, &etcd.endpoints(), &[]);
    wait_rendered_and_connected(&fx, &dest, &rendered(&[("x", "1")]), "initial render");
    assert_eq!(
        status(&fx)["endpoint"],
        urls[0].as_str(),
        "the daemon should start with the first endpoint"
    );

    etcd.members[0].stop();
    // The two others keep a quorum (they may have to elect a leader first).
    etcd.wait_healthy();
    etcd.put_at(&urls[1], "/app/x", "2");
    etcd.put_at(&urls[2], "/app/y", "3");
    wait_content(
        &dest,
        &rendered(&[("x", "2"), ("y", "3")]),
        "updates through the other members arrive",
    );
    wait_for("status.json: connected to another member", LIMIT, || {
        let s = status(&fx);
        s["connected"] == true
            && (s["endpoint"] == urls[1].as_str() || s["endpoint"] == urls[2].as_str())
    });
    assert_no_stage_files(&fx);

    // The member comes back and catches up; the daemon keeps following.
    etcd.members[0].start();
    etcd.wait_healthy();
    etcd.put_at(&urls[0], "/app/x", "4");
    wait_content(
        &dest,
        &rendered(&[("x", "4"), ("y", "3")]),
        "an update through the restarted member arrives",
    );
    etcd.put_at(&urls[1], "/app/y", "5");
    wait_content(
        &dest,
        &rendered(&[("x", "4"), ("y", "5")]),
        "and one through another member",
    );
    assert_no_stage_files(&fx);
}

/// Three members, the daemon told only about member 0; returns the cluster,
/// the daemon, the fixture and the destination once the first render is in.
fn cluster_with_daemon_on_member_0(initial: &[(&str, &str)]) -> (Etcd, Fx, Daemon, PathBuf) {
    let etcd = Etcd::cluster(3, &[]);
    for (k, v) in initial {
        etcd.put(&format!("/app/{k}"), v);
    }
    let fx = Fx::new();
    let dest = app_resource(&fx);
    let d = daemon(&fx, &etcd.members[0].url(), &[]);
    wait_rendered_and_connected(&fx, &dest, &rendered(initial), "initial render");
    (etcd, fx, d, dest)
}

#[test]
fn keys_changed_while_the_daemons_member_is_down_converge_after() {
    let (mut etcd, fx, d, dest) =
        cluster_with_daemon_on_member_0(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let m1 = etcd.members[1].url();

    etcd.members[0].stop();
    etcd.wait_healthy();
    wait_for("status.json connected=false", LIMIT, || disconnected(&fx));
    etcd.put_at(&m1, "/app/a", "10");
    etcd.put_at(&m1, "/app/a", "11");
    etcd.del_at(&m1, "/app/b");
    etcd.put_at(&m1, "/app/d", "4");
    etcd.put_at(&m1, "/other/ignored", "x");
    etcd.put_at(&m1, "/app/c", "30");
    // Nothing reaches the file while the daemon's member is down.
    untouched_for(&fx, &dest, OUTAGE);

    etcd.members[0].start();
    etcd.wait_healthy();
    wait_rendered_and_connected(
        &fx,
        &dest,
        &rendered(&[("a", "11"), ("c", "30"), ("d", "4")]),
        "convergence after member 0 is back",
    );
    let rev = etcd.revision_at(&m1);
    wait_for(
        "status.json: the file reflects the last revision",
        LIMIT,
        || status(&fx)["resources"]["app"]["revision"] == rev,
    );
    assert_no_stage_files(&fx);
    // Resumed from its last revision: no new snapshot was needed.
    assert!(
        !d.log().contains("new snapshot"),
        "the daemon re-read everything instead of resuming its watch:\n{}",
        d.log()
    );
}

#[test]
fn compaction_past_the_daemons_revision_while_disconnected_takes_a_new_snapshot() {
    let (mut etcd, fx, d, dest) =
        cluster_with_daemon_on_member_0(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let m1 = etcd.members[1].url();

    etcd.members[0].stop();
    etcd.wait_healthy();
    wait_for("status.json connected=false", LIMIT, || disconnected(&fx));
    etcd.put_at(&m1, "/app/a", "10");
    etcd.del_at(&m1, "/app/b");
    etcd.put_at(&m1, "/app/d", "4");
    etcd.put_at(&m1, "/app/d", "5");
    let rev = etcd.revision_at(&m1);
    etcd.ctl_at(&m1, &["compact", &rev.to_string()]);
    untouched_for(&fx, &dest, Duration::from_secs(1));

    etcd.members[0].start();
    etcd.wait_healthy();
    wait_rendered_and_connected(
        &fx,
        &dest,
        &rendered(&[("a", "10"), ("c", "3"), ("d", "5")]),
        "convergence after the compaction",
    );
    wait_for("the compaction is logged", LIMIT, || {
        d.log().contains("compacted")
    });
    assert_no_stage_files(&fx);
    wait_for(
        "status.json: the file reflects the compacted revision",
        LIMIT,
        || status(&fx)["resources"]["app"]["revision"] == rev,
    );

    // And the watch goes on after the new snapshot.
    etcd.put_at(&etcd.members[0].url(), "/app/c", "33");
    wait_content(
        &dest,
        &rendered(&[("a", "10"), ("c", "33"), ("d", "5")]),
        "a change after the new snapshot",
    );
}

#[test]
fn resync_finds_no_difference_in_the_normal_case() {
    let etcd = Etcd::start();
    etcd.put("/app/x", "1");
    let fx = Fx::new();
    let dest = app_resource(&fx);
    let d = daemon(&fx, &etcd.endpoints(), &["--resync-interval", "1s"]);
    wait_rendered_and_connected(&fx, &dest, &rendered(&[("x", "1")]), "initial render");

    // Changes through the watch between resyncs.
    etcd.put("/app/x", "2");
    etcd.put("/app/y", "3");
    etcd.del("/app/x");
    etcd.put("/elsewhere/z", "4");
    wait_content(&dest, &rendered(&[("y", "3")]), "changes reach the file");
    let last_event = || status(&fx)["last_event"].as_u64().unwrap_or(0);
    let event_before = last_event();

    // Each resync reads /app from etcd (one Range request); from now on
    // nothing else does: wait for two of them.
    let ranges = etcd.members[0].grpc_ok("Range");
    wait_for("two resyncs (Range requests served by etcd)", LIMIT, || {
        etcd.members[0].grpc_ok("Range") >= ranges + 2
    });
    // A change after them: once it is in the file, the daemon has handled
    // both resync snapshots (the watcher hands things over in order).
    etcd.put("/app/w", "5");
    wait_content(
        &dest,
        &rendered(&[("w", "5"), ("y", "3")]),
        "a change after the resyncs",
    );

    let log = d.log();
    assert!(
        !log.contains("RESYNC FOUND"),
        "a resync found differences in the normal case:\n{log}"
    );
    assert_no_stage_files(&fx);
    wait_for("status.json: last_event moved on", LIMIT, || {
        last_event() > event_before
    });
    assert!(connected(&fx));
}

#[test]
fn etcd_unreachable_at_start_then_up_renders_without_a_restart() {
    let mut etcd = Etcd::configure(1, &[]);
    let ep = etcd.members[0].url();
    let fx = Fx::new();
    let dest = app_resource(&fx);
    let mut d = daemon(&fx, &ep, &[]);

    wait_for("the daemon reports etcd unavailable", LIMIT, || {
        d.log()
            .lines()
            .any(|l| l.contains("backend unavailable") && l.contains(&ep))
    });
    wait_for("status.json says disconnected", LIMIT, || {
        !read_or_empty(&fx.path("state/status.json")).is_empty() && disconnected(&fx)
    });
    // etcd stays away for a while: the daemon waits, writing nothing.
    let start = Instant::now();
    while start.elapsed() < OUTAGE {
        assert_eq!(d.exited(), None, "the daemon exited:\n{}", d.log());
        let files = list(&fx.path("out"));
        assert!(files.is_empty(), "written while etcd is down: {files:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    etcd.members[0].start();
    etcd.wait_healthy();
    etcd.put("/app/x", "1");
    wait_rendered_and_connected(
        &fx,
        &dest,
        &rendered(&[("x", "1")]),
        "render once etcd is up",
    );
    assert_eq!(d.exited(), None);
    assert_no_stage_files(&fx);
    etcd.put("/app/x", "2");
    wait_content(
        &dest,
        &rendered(&[("x", "2")]),
        "and it follows etcd from then on",
    );
}

/// etcd before 3.4.24 / 3.5.8 answers a progress request on a watch stream
/// at once, with its current revision, even when a watch just created at
/// an older revision has not delivered that revision's events yet
/// (etcd-io/etcd#15220). The daemon must not take such an answer as "all
/// events up to here were delivered": if the member dies again right then,
/// resuming from that revision loses the events of the first outage.
#[test]
fn member_dying_again_just_after_the_daemon_resumes_loses_no_event() {
    let (mut etcd, fx, d, dest) = cluster_with_daemon_on_member_0(&[("a", "0")]);
    let m1 = etcd.members[1].url();
    let mut want = vec![("a".to_string(), "0".to_string())];
    for round in 1..=3 {
        etcd.members[0].stop();
        etcd.wait_healthy();
        wait_for("status.json connected=false", LIMIT, || disconnected(&fx));
        let v = round.to_string();
        etcd.put_at(&m1, "/app/a", &v);
        etcd.put_at(&m1, &format!("/app/r{round}"), &v);
        want[0].1 = v.clone();
        want.push((format!("r{round}"), v));
        // Member 0 comes back; just after the daemon has re-established its
        // watch there (it logs "connected"), member 0 crashes again. The
        // daemon's log is polled every millisecond, so this is within tens
        // of milliseconds of the new watch.
        let connects = d.count("connected endpoint");
        etcd.members[0].start();
        let t = Instant::now();
        while d.count("connected endpoint") == connects {
            assert!(t.elapsed() < LIMIT, "no reconnection to member 0");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        etcd.members[0].stop();
        etcd.members[0].start();
        etcd.wait_healthy();
    }
    etcd.put_at(&m1, "/app/z", "end");
    want.push(("z".into(), "end".into()));
    let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let want = rendered(&want);
    wait_content(&dest, &want, "the events of the outages are not lost");
    assert_no_stage_files(&fx);
}

/// etcd rebuilt under the daemon (data dir lost, or a restore from an older
/// snapshot): its revision starts over below the one the daemon has seen.
/// The daemon must notice (revision behind its own, or another cluster id)
/// and take a new snapshot, not wait on a watch at a future revision.
#[test]
fn etcd_rebuilt_with_a_lower_revision_is_followed() {
    let mut etcd = Etcd::start();
    for i in 0..10 {
        etcd.put("/app/x", &i.to_string());
    }
    let fx = Fx::new();
    let dest = app_resource(&fx);
    let _d = daemon(&fx, &etcd.endpoints(), &[]);
    wait_rendered_and_connected(&fx, &dest, &rendered(&[("x", "9")]), "initial render");

    etcd.members[0].stop();
    std::fs::remove_dir_all(&etcd.members[0].data_dir).expect("wipe the data dir");
    etcd.members[0].start();
    etcd.wait_healthy();
    etcd.put("/app/y", "1");
    etcd.put("/app/y", "2");
    wait_content(&dest, &rendered(&[("y", "2")]), "the rebuilt etcd's keys");
    assert_no_stage_files(&fx);
}
