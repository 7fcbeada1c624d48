//! The etcd watcher task: the daemon's view of etcd after the first snapshot.
//!
//! One gRPC watch stream carries one watch per distinct root prefix, each
//! starting at the snapshot's revision + 1 and resuming, after any failure,
//! from the last revision it delivered. A compaction past that revision, or
//! an etcd whose revision went back (restored, rebuilt), means events were
//! lost: a new snapshot replaces the mirror. Progress requests every
//! [`PROGRESS_EVERY`] prove the stream alive (when two go unanswered, as
//! through etcd 3.4's grpc-proxy, an answered count-only read on the same
//! channel does); a periodic resync compares a
//! snapshot taken at exactly the delivered revisions with the mirror.
//! Endpoints are used one at a time, the next after each failure, and the
//! first again once it answers ([`HOME_EVERY`]); with SRV
//! discovery the set follows DNS ([`super::srv`]) while the watch runs.

use std::time::Duration;

use etcd_client::Client;

use super::etcd::{Connection, EtcdError, MAX_MESSAGE, describe, range_of, roots};
use crate::store::{Key, Snapshot, Val, is_at_or_below};

/// How often the watcher asks etcd for a progress notification; also the
/// liveness probe of the watch stream.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

enum WatchEnd {
    /// The watch was compacted away: take a new snapshot.
    Compacted(i64),
    /// etcd's revision is behind ours (restored or rebuilt): new snapshot.
    Rewound {
        /// etcd's revision now.
        current: i64,
        /// The newest revision we had seen.
        seen: i64,
    },
    /// The stream broke: reconnect (with backoff) and resume.
    Broken(String),
    /// The endpoint in use left the SRV set: connect to the new set and
    /// resume.
    Moved,
    /// The first endpoint answers again while we use another: go back to
    /// it and resume.
    Home,
}

/// The longest wait between two attempts to reach etcd (each is drawn
/// between half and all of it): a host reconnects within this of etcd
/// answering again. Short, because a fleet waits on its slowest host
/// (`fleet wait`); 1,000 hosts retrying a dead endpoint at this pace make
/// a few hundred connection attempts a second, nothing for a listener.
pub const RECONNECT_CAP: Duration = Duration::from_secs(10);

/// While the watch runs on another endpoint than the first, how often (on
/// average; each wait is drawn between half and one and a half times it)
/// the first one is tried again. Hosts list their preferred endpoint (a
/// proxy near them) first; after a failover they go back once it answers,
/// so a restarted proxy gets its hosts back instead of the others keeping
/// them for good, and the draw spreads their return over a minute.
pub const HOME_EVERY: Duration = Duration::from_secs(30);

/// The watcher task: snapshot, then one watch per root prefix (all on one
/// gRPC stream), resuming from the last revision seen after any failure,
/// with a fresh snapshot after a compaction and a resync snapshot every
/// `resync` (zero: never). With SRV discovery, every attempt that follows
/// a failure looks the record (and its targets) up again first: a record
/// moved to a live member, or a target that resolves again, is followed
/// without a restart. Runs until aborted; never returns an error.
///
/// An outage (every attempt failing) is told to the daemon once, then at
/// most every [`super::REMIND_EVERY`] (`outage`: one already going on when
/// the watcher starts, its endpoints not found until now).
pub async fn run(
    mut conn: Connection,
    prefixes: Vec<String>,
    resync: Duration,
    tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
    mut outage: super::Outage,
) {
    use super::{Backoff, Event, SnapshotReason};
    let roots = roots(&prefixes);
    // At most RECONNECT_CAP apart: a host is back within that of etcd.
    let mut backoff = Backoff::new(Duration::from_millis(200), RECONNECT_CAP);
    // Per root: the revision up to which events were delivered.
    let mut seen: Option<Vec<i64>> = None;
    // The roots actually watched: those the snapshot could read.
    let mut live: Vec<String> = roots.clone();
    let mut reason = SnapshotReason::Initial;
    let mut idx = 0usize;
    // Whether the last attempt failed (discovery is then asked again).
    let mut failed = false;
    // With SRV discovery: the set last logged, and the task that looks
    // the record up on its TTL while all is well.
    let known = conn
        .srv_name()
        .map(|name| super::srv::Known::new(name, &conn.endpoints));
    let mut follower = known
        .clone()
        .and_then(|k| super::srv::Follower::start(&conn, k));
    loop {
        if let Some(f) = follower.as_mut()
            && f.updates.has_changed().unwrap_or(false)
        {
            // A set the follower found while we were not watching.
            let newer = f.updates.borrow_and_update().clone();
            if newer.endpoints != conn.endpoints {
                conn = newer;
                idx = 0;
            }
        }
        if failed && conn.discovers() {
            match conn.rediscover().await {
                Ok(true) => {
                    if let Some(k) = &known {
                        k.note(&conn.endpoints);
                    }
                    idx = 0;
                }
                Ok(false) => {}
                Err(e) => {
                    unavailable(&tx, &mut outage, e.to_string());
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        failed = false;
        let n = conn.endpoints.len().max(1);
        let Some(endpoint) = conn.endpoints.get(idx % n).cloned() else {
            // Discovery never leaves the list empty; stay safe anyway.
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        let attempt = async {
            let mut client = conn.connect_to(&endpoint).await?;
            if seen.is_none() {
                let snap = conn.snapshot(&mut client, &roots, None).await?;
                live = readable(&roots, &snap);
                seen = Some(vec![snap.revision(); live.len()]);
                let _ = tx.send(Event::Connected {
                    endpoint: endpoint.clone(),
                });
                let _ = tx.send(Event::Snapshot {
                    snapshot: snap,
                    reason,
                });
                outage.over();
            }
            Ok::<Client, EtcdError>(client)
        };
        let mut client = match attempt.await {
            Ok(c) => c,
            Err(e) => {
                // Said once, not at every retry.
                unavailable(&tx, &mut outage, e.to_string());
                idx += 1;
                failed = true;
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let Some(seen_revs) = seen.as_mut() else {
            continue;
        };
        let end = watch(
            &mut conn,
            follower.as_mut().map(|f| &mut f.updates),
            &mut client,
            &endpoint,
            &live,
            seen_revs,
            resync,
            &tx,
            &mut backoff,
            &mut outage,
        )
        .await;
        match end {
            WatchEnd::Rewound {
                current,
                seen: ours,
            } => {
                tracing::warn!(
                    "etcd at {endpoint} is at revision {current}, behind the {ours} already seen (restored or rebuilt?); taking a new snapshot"
                );
                seen = None;
                reason = SnapshotReason::Rewound;
            }
            WatchEnd::Compacted(rev) => {
                tracing::warn!(
                    compacted = rev,
                    "etcd compacted past our revision; taking a new snapshot"
                );
                seen = None;
                reason = SnapshotReason::Compacted;
            }
            WatchEnd::Moved => {
                // Our endpoint left the SRV set: the new set's first one,
                // resuming where the watch was (no outage to report).
                tracing::info!(
                    endpoint = %endpoint,
                    "etcd discovery: the endpoint in use left the SRV record; moving to {}",
                    conn.endpoints.join(",")
                );
                idx = 0;
            }
            WatchEnd::Home => {
                tracing::info!(
                    "etcd at {} answers again: moving back to it from {endpoint}",
                    conn.endpoints.first().map_or("", String::as_str)
                );
                idx = 0;
            }
            WatchEnd::Broken(why) => {
                unavailable(
                    &tx,
                    &mut outage,
                    format!("etcd at {endpoint}: {}", conn.explain(why)),
                );
                idx += 1;
                failed = true;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The roots the snapshot could read: the ones to watch.
fn readable(roots: &[String], snap: &Snapshot) -> Vec<String> {
    roots
        .iter()
        .filter(|r| !snap.unreadable().contains_key(*r))
        .cloned()
        .collect()
}

/// One more failed attempt to reach etcd (`why`): the daemon is told
/// (and logs it) when the outage starts, then at most every
/// [`super::REMIND_EVERY`] while it lasts, saying for how long; every
/// endpoint down would otherwise be a line per attempt (each names its
/// endpoint). The attempts in between are logged at debug.
pub(crate) fn unavailable(
    tx: &tokio::sync::mpsc::UnboundedSender<super::Event>,
    outage: &mut super::Outage,
    why: String,
) {
    let reason = match outage.failed() {
        super::Say::First => why,
        super::Say::Again(lasted) => format!("{why} (still unavailable: {lasted})"),
        super::Say::Quiet => {
            tracing::debug!("etcd still unavailable: {why}");
            return;
        }
    };
    let _ = tx.send(super::Event::Disconnected { reason });
}

/// Watches `roots` on one stream, from the revisions in `seen` (moved on as
/// events and progress arrive), until the stream ends: why it ended.
#[allow(clippy::too_many_arguments)]
async fn watch(
    conn: &mut Connection,
    mut srv: Option<&mut tokio::sync::watch::Receiver<Connection>>,
    client: &mut Client,
    endpoint: &str,
    roots: &[String],
    seen: &mut [i64],
    resync: Duration,
    tx: &tokio::sync::mpsc::UnboundedSender<super::Event>,
    backoff: &mut super::Backoff,
    outage: &mut super::Outage,
) -> WatchEnd {
    use super::{Event, SnapshotReason};

    if roots.is_empty() {
        // Nothing to watch: stay "connected" and idle.
        outage.over();
        let _ = tx.send(Event::Connected {
            endpoint: endpoint.to_string(),
        });
        std::future::pending::<()>().await;
    }
    let mut stream = match open_watches(conn, client, roots, seen).await {
        Ok(s) => s,
        Err(end) => return end,
    };
    let mut w = Watching {
        endpoint,
        roots,
        seen,
        tx,
        backoff,
        outage,
        created: 0,
        suspect_rewind: None,
    };
    // The first progress request waits a period: right after (re)creating
    // the watches they may still be catching up.
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_message = tokio::time::Instant::now();
    let mut next_resync = (!resync.is_zero()).then(|| tokio::time::Instant::now() + resync);
    let away = conn
        .endpoints
        .first()
        .is_some_and(|first| first != endpoint);
    let mut home_check = tokio::time::Instant::now() + home_wait();
    loop {
        tokio::select! {
            // On another endpoint than the first: is the first back?
            _ = tokio::time::sleep_until(home_check), if away => {
                home_check = tokio::time::Instant::now() + home_wait();
                if first_answers(conn, &roots[0]).await {
                    return WatchEnd::Home;
                }
            }
            // A new SRV set: kept quietly while our endpoint is in it.
            Some(newer) = async {
                match srv.as_mut() {
                    Some(rx) => rx.changed().await.ok().map(|()| rx.borrow_and_update().clone()),
                    None => std::future::pending().await,
                }
            } => {
                let stays = newer.endpoints.iter().any(|e| e == endpoint);
                *conn = newer;
                if !stays {
                    return WatchEnd::Moved;
                }
            }
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return WatchEnd::Broken("the watch stream was closed".into()),
                    Err(e) => return WatchEnd::Broken(describe(&e)),
                };
                last_message = tokio::time::Instant::now();
                if let Some(end) = w.response(resp) {
                    return end;
                }
                // A watch confirmed at a revision behind ours: a grpc-proxy
                // answers with its coalesced watcher's revision, which can
                // lag etcd's. Only etcd's own answer says it went back.
                if let Some(newest) = w.suspect_rewind.take() {
                    match alive(conn, client, &roots[0]).await {
                        Some(current) if current > 0 && current < newest => {
                            return WatchEnd::Rewound { current, seen: newest };
                        }
                        Some(_) => {}
                        None => return WatchEnd::Broken("no answer to a read".into()),
                    }
                }
            }
            _ = ticker.tick() => {
                // Two progress requests unanswered: a proxy that does not
                // forward them (etcd 3.4's grpc-proxy), or a dead
                // connection. One unary request on the same channel tells
                // which; only its failure too ends the stream, still within
                // two periods plus the request timeout of the last answer
                // (plus one tick, as before).
                if last_message.elapsed() > PROGRESS_EVERY * 2 {
                    let Some(revision) = alive(conn, client, &roots[0]).await else {
                        // How long it has really been silent: at most two
                        // periods plus the request timeout, plus one tick.
                        return WatchEnd::Broken(format!(
                            "no answer for {}s",
                            last_message.elapsed().as_secs()
                        ));
                    };
                    last_message = tokio::time::Instant::now();
                    // Heard from etcd: status.json's last event and
                    // `--max-age` move as they do with progress
                    // notifications (which a grpc-proxy never answers).
                    let _ = tx.send(Event::Progress { revision });
                }
                if let Err(e) = stream.request_progress().await {
                    return WatchEnd::Broken(describe(&e));
                }
                if let Some(due) = next_resync
                    && tokio::time::Instant::now() >= due
                {
                    next_resync = Some(due + resync);
                    match resync_snapshot(conn, client, roots, w.seen).await {
                        Ok(snapshot) => {
                            let _ = tx.send(Event::Snapshot { snapshot, reason: SnapshotReason::Resync });
                        }
                        Err(EtcdError::Compacted(rev)) => return WatchEnd::Compacted(rev),
                        Err(e) => return WatchEnd::Broken(e.to_string()),
                    }
                }
            }
        }
    }
}

/// How long to wait before trying the first endpoint again: [`HOME_EVERY`]
/// drawn between half and one and a half times.
fn home_wait() -> Duration {
    HOME_EVERY.mul_f64(0.5 + rand::random::<f64>())
}

/// Whether the first endpoint answers a read of `root` (one the watch
/// reads, so one the user may read), on a connection of its own (dropped
/// after the answer), within the connect and request timeouts.
async fn first_answers(conn: &Connection, root: &str) -> bool {
    let Some(first) = conn.endpoints.first() else {
        return false;
    };
    match conn.connect_to(first).await {
        Ok(mut client) => alive(conn, &mut client, root).await.is_some(),
        Err(_) => false,
    }
}

/// Whether etcd answers a unary request on the watch's channel within the
/// request timeout: a count-only read of `root`'s own key, the cheapest
/// request every etcd (and grpc-proxy) answers. The liveness fallback when
/// progress requests go unanswered.
///
/// Returns etcd's current revision (the answer's header: a linearizable
/// read, which the grpc-proxy forwards to etcd rather than serving from a
/// cache), or None without an answer.
pub(crate) async fn alive(conn: &Connection, client: &mut Client, root: &str) -> Option<i64> {
    let opts = etcd_client::GetOptions::new().with_count_only();
    let key = range_of(root).0;
    match tokio::time::timeout(conn.request_timeout, client.get(key, Some(opts))).await {
        Ok(Ok(r)) => Some(r.header().map(|h| h.revision()).unwrap_or(0)),
        Ok(Err(e)) => {
            tracing::debug!(error = %describe(&e), "etcd liveness probe failed");
            None
        }
        Err(_) => None,
    }
}

/// One stream carrying a watch per root, each from its revision in `seen`
/// + 1, with progress notifications; or why it could not be opened.
async fn open_watches(
    conn: &Connection,
    client: &mut Client,
    roots: &[String],
    seen: &[i64],
) -> Result<etcd_client::WatchStream, WatchEnd> {
    use etcd_client::WatchOptions;

    let opts = |i: usize| {
        let (_, end) = range_of(&roots[i]);
        WatchOptions::new()
            .with_range(end)
            .with_start_revision(seen[i] + 1)
            .with_progress_notify()
            .with_watch_id(i as i64)
    };
    let first = range_of(&roots[0]).0;
    let mut stream = match tokio::time::timeout(
        conn.request_timeout,
        client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(first, Some(opts(0))),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(WatchEnd::Broken(describe(&e))),
        Err(_) => return Err(WatchEnd::Broken("no answer to the watch request".into())),
    };
    for (i, root) in roots.iter().enumerate().skip(1) {
        if let Err(e) = stream.watch(range_of(root).0, Some(opts(i))).await {
            return Err(WatchEnd::Broken(describe(&e)));
        }
    }
    Ok(stream)
}

/// What one watch stream knows while it runs.
struct Watching<'a> {
    endpoint: &'a str,
    roots: &'a [String],
    /// Per root, the revision up to which events were delivered.
    seen: &'a mut [i64],
    tx: &'a tokio::sync::mpsc::UnboundedSender<super::Event>,
    backoff: &'a mut super::Backoff,
    outage: &'a mut super::Outage,
    /// How many of the watches etcd has confirmed.
    created: usize,
    /// A watch was confirmed at a revision behind the newest seen (this
    /// one): etcd may have gone back, to be confirmed by a read.
    suspect_rewind: Option<i64>,
}

impl Watching<'_> {
    /// Handles one message of the stream; why the stream must end, if it must.
    fn response(&mut self, resp: etcd_client::WatchResponse) -> Option<WatchEnd> {
        use super::Event;

        if resp.compact_revision() > 0 {
            return Some(WatchEnd::Compacted(resp.compact_revision()));
        }
        if resp.canceled() {
            return Some(WatchEnd::Broken(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        if resp.created() {
            return self.created(&resp);
        }
        let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let id = resp.watch_id();
        if resp.events().is_empty() {
            // A progress notification. One for a given watch means
            // that watch has delivered everything up to the header
            // revision. The stream-wide answer to our progress
            // request (id -1) only proves the stream is alive: etcd
            // before 3.4.24 sends it even while a watch is still
            // catching up (etcd-io/etcd#15220), so it must not move
            // the resume point.
            if let Some(i) = usize::try_from(id).ok().filter(|&i| i < self.seen.len()) {
                self.seen[i] = self.seen[i].max(header_rev);
            }
            let _ = self.tx.send(Event::Progress {
                revision: header_rev,
            });
            return None;
        }
        if let Some(i) = usize::try_from(id).ok().filter(|&i| i < self.roots.len()) {
            self.changes(i, resp.events());
        }
        None
    }

    /// A watch confirmed: once all are, the stream is "connected".
    fn created(&mut self, resp: &etcd_client::WatchResponse) -> Option<WatchEnd> {
        // etcd restored from an older backup, or rebuilt: its
        // revision went back, so resuming would wait forever.
        let current = resp.header().map(|h| h.revision()).unwrap_or(0);
        let newest = self.seen.iter().copied().max().unwrap_or(0);
        if current > 0 && current < newest {
            self.suspect_rewind = Some(newest);
        }
        self.created += 1;
        if self.created == self.roots.len() {
            self.backoff.reset();
            self.outage.over();
            tracing::debug!(endpoint = self.endpoint, watches = self.created, "watching");
            let _ = self.tx.send(super::Event::Connected {
                endpoint: self.endpoint.to_string(),
            });
        }
        None
    }

    /// Events of the watch on root `i`: handed over as changes, and the
    /// watch's revision moved on.
    fn changes(&mut self, i: usize, events: &[etcd_client::Event]) {
        use crate::store::Change;
        use etcd_client::EventType;

        let mut changes = Vec::with_capacity(events.len());
        let mut rev = self.seen[i];
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            rev = rev.max(kv.mod_revision());
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "ignoring a key that is not UTF-8");
                continue;
            };
            if !is_at_or_below(key, &self.roots[i]) {
                continue;
            }
            changes.push(match ev.event_type() {
                EventType::Put => Change::Put(Key::from(key), Val::from(kv.value())),
                EventType::Delete => Change::Delete(Key::from(key)),
            });
        }
        self.seen[i] = rev;
        if !changes.is_empty() {
            let _ = self.tx.send(super::Event::Changes {
                revision: rev,
                changes,
            });
        }
    }
}

/// A snapshot of each root at the revision its watch has delivered, so it
/// can be compared exactly with the mirror built from those events.
async fn resync_snapshot(
    conn: &Connection,
    client: &mut Client,
    roots: &[String],
    seen: &[i64],
) -> Result<Snapshot, EtcdError> {
    let mut all = Snapshot::new(0);
    for (root, &rev) in roots.iter().zip(seen) {
        let part = conn
            .snapshot(client, std::slice::from_ref(root), Some(rev))
            .await?;
        for (k, v) in part.iter() {
            all.apply(crate::store::Change::Put(k.clone(), v.clone()));
        }
        all.set_revision(all.revision().max(part.revision()));
    }
    Ok(all)
}
