//! The etcd v3 backend: connecting, and consistent snapshots.
//!
//! Connecting resolves the endpoints (a list, or DNS SRV discovery), sets up
//! TLS (CA, client certificate) and username/password auth (with automatic
//! token refresh), all bounded by the connect and request timeouts. A
//! snapshot reads every watched prefix at one revision (the first range's),
//! paginated so a large prefix never needs one huge response.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::dns::{self, DnsConfig};
use crate::settings::Settings;
use crate::store::{Key, Snapshot, Val, is_at_or_below};

/// Keys fetched per range request (halved, down to one, when a page of
/// large values exceeds the message size limit).
pub const PAGE: i64 = 5_000;

/// Largest gRPC message accepted from etcd (gRPC's default is 4 MiB, less
/// than three values of etcd's default maximum request size).
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Why etcd could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Bad or unreadable connection settings (certificates, password file).
    #[error("{0}")]
    Settings(String),
    /// No endpoint answered, or a request failed.
    #[error("etcd at {endpoints}: {message}")]
    Unavailable {
        /// The endpoints tried.
        endpoints: String,
        /// What happened.
        message: String,
    },
    /// The revision asked for has been compacted away.
    #[error("etcd revision {0} has been compacted")]
    Compacted(i64),
    /// The user may not read this range.
    #[error("{0}")]
    Denied(String),
    /// A response was larger than the message size limit.
    #[error("etcd's answer is too large: {0}")]
    TooLarge(String),
}

/// How to reach etcd (resolved once, reused on every reconnect).
#[derive(Clone)]
pub struct Connection {
    /// Endpoint URLs.
    pub endpoints: Vec<String>,
    options: ConnectOptions,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The etcd user, if any (for messages).
    pub username: Option<String>,
    /// Whether TLS is used, and with a client certificate (for hints).
    tls: Option<bool>,
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path)
        .map_err(|e| EtcdError::Settings(format!("cannot read {what} {}: {e}", path.display())))
}

/// Describes an etcd-client error in one line, without secrets.
pub fn describe(e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let mut msg = if s.message().is_empty() {
                format!("{:?}", s.code())
            } else {
                s.message().to_string()
            };
            // The cause (a TLS alert, a refused connection) says more than
            // gRPC's "transport error".
            let mut src = std::error::Error::source(s);
            while let Some(inner) = src {
                let m = inner.to_string();
                if !msg.contains(&m) {
                    msg.push_str(": ");
                    msg.push_str(&m);
                }
                src = inner.source();
            }
            msg
        }
        E::TransportError(t) => {
            let mut s = t.to_string();
            let mut src = std::error::Error::source(t);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
        other => other.to_string(),
    }
}

impl Connection {
    /// Resolves endpoints and builds the connect options from the settings.
    pub async fn from_settings(s: &Settings) -> Result<Connection, EtcdError> {
        let tls_wanted = s.ca_file.is_some() || s.cert_file.is_some();
        let mut endpoints = s.endpoints.clone();
        if let Some(domain) = &s.srv_domain {
            let name = format!(
                "{}.{}",
                s.srv_record.trim_end_matches('.'),
                domain.trim_end_matches('.')
            );
            let cfg = DnsConfig {
                nameserver: s.dns_server,
            };
            let targets = dns::lookup_srv(&cfg, &name)
                .await
                .map_err(|e| EtcdError::Settings(format!("SRV discovery of {name}: {e}")))?;
            let scheme = if tls_wanted || s.srv_record.contains("-ssl") {
                "https"
            } else {
                "http"
            };
            endpoints.extend(
                targets
                    .into_iter()
                    .map(|t| format!("{scheme}://{}:{}", t.target, t.port)),
            );
        }
        if endpoints.is_empty() {
            endpoints.push("http://127.0.0.1:2379".into());
        }
        for e in &endpoints {
            if let Some((scheme_user, _)) = e.split_once('@') {
                let scheme = scheme_user.split("://").next().unwrap_or("http");
                return Err(EtcdError::Settings(format!(
                    "endpoint {scheme}://***@{}: credentials do not belong in an endpoint URL; use username and password_file",
                    e.rsplit('@').next().unwrap_or("")
                )));
            }
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(s.connect_timeout)
            .with_timeout(s.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if tls_wanted {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &s.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
            }
            match (&s.cert_file, &s.key_file) {
                (Some(c), Some(k)) => {
                    tls =
                        tls.identity(Identity::from_pem(read(c, "certificate")?, read(k, "key")?));
                }
                (None, None) => {}
                _ => {
                    return Err(EtcdError::Settings(
                        "--cert-file and --key-file go together".into(),
                    ));
                }
            }
            options = options.with_tls(tls);
            for e in &mut endpoints {
                if let Some(rest) = e.strip_prefix("http://") {
                    *e = format!("https://{rest}");
                } else if !e.contains("://") {
                    *e = format!("https://{e}");
                }
            }
        }
        if let Some(user) = &s.username {
            let pw_file = s.password_file.as_ref().ok_or_else(|| {
                EtcdError::Settings(format!("--username {user} needs --password-file"))
            })?;
            if let Ok(meta) = std::fs::metadata(pw_file) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "password file {} is readable by others (mode {:04o}); chmod 600 it",
                        pw_file.display(),
                        meta.permissions().mode() & 0o7777
                    );
                }
            }
            let pw = String::from_utf8_lossy(&read(pw_file, "password file")?)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            options = options
                .with_user(user.clone(), pw)
                .with_auto_token_refresh(true);
        }
        Ok(Connection {
            endpoints,
            options,
            request_timeout: s.request_timeout,
            connect_timeout: s.connect_timeout,
            username: s.username.clone(),
            tls: tls_wanted.then_some(s.cert_file.is_some()),
        })
    }

    fn unavailable(&self, mut message: String) -> EtcdError {
        // With TLS 1.3 a server that rejects our certificate just closes the
        // connection after the handshake: say what that usually means.
        let closed = [
            "connection closed",
            "canceled",
            "broken pipe",
            "connection reset",
        ]
        .iter()
        .any(|m| message.contains(m));
        match self.tls {
            Some(false) if closed => message.push_str(
                " (TLS handshake done but the connection was closed: etcd probably requires a client certificate; give --cert-file and --key-file)",
            ),
            Some(true) if closed => message.push_str(
                " (TLS handshake done but the connection was closed: etcd probably rejected the client certificate; is it signed by a CA in etcd's --trusted-ca-file?)",
            ),
            _ => {}
        }
        EtcdError::Unavailable {
            endpoints: self.endpoints.join(","),
            message,
        }
    }

    /// Connects to any endpoint (and authenticates), within the connect timeout.
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        self.connect_endpoints(&self.endpoints).await
    }

    /// Connects to this one endpoint (the daemon picks endpoints itself, so
    /// it knows which one it uses and can move on when it fails).
    pub async fn connect_to(&self, endpoint: &str) -> Result<Client, EtcdError> {
        self.connect_endpoints(std::slice::from_ref(&endpoint.to_string()))
            .await
            .map_err(|e| match e {
                EtcdError::Unavailable { message, .. } => EtcdError::Unavailable {
                    endpoints: endpoint.to_string(),
                    message,
                },
                other => other,
            })
    }

    async fn connect_endpoints(&self, endpoints: &[String]) -> Result<Client, EtcdError> {
        let limit = self.connect_timeout + self.request_timeout;
        let opts = self.options.clone().with_require_leader(true);
        match tokio::time::timeout(limit, Client::connect(endpoints, Some(opts))).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.unavailable(describe(&e))),
            Err(_) => Err(self.unavailable(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            ))),
        }
    }

    /// Reads every key at or below each of `prefixes`, at one revision
    /// (`at`, or the current one when `None`).
    pub async fn snapshot(
        &self,
        client: &mut Client,
        prefixes: &[String],
        at: Option<i64>,
    ) -> Result<Snapshot, EtcdError> {
        let mut revision = at.unwrap_or(0);
        let mut pairs: Vec<(Key, Val)> = Vec::new();
        let roots = roots(prefixes);
        if roots.is_empty() {
            // Nothing watched: still learn the revision, so a watch can start there.
            let resp = self
                .get(
                    client,
                    b"\0".to_vec(),
                    GetOptions::new().with_count_only(),
                    0,
                )
                .await?;
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        let mut unreadable: Vec<(String, String)> = Vec::new();
        let mut page = PAGE;
        'roots: for root in roots {
            let (mut start, end) = range_of(&root);
            loop {
                let opts = GetOptions::new().with_range(end.clone()).with_limit(page);
                let mut resp = match self.get(client, start.clone(), opts, revision).await {
                    Ok(r) => r,
                    Err(EtcdError::TooLarge(why)) if page > 1 => {
                        page = (page / 4).max(1);
                        tracing::debug!(
                            "range page too large ({why}); retrying {page} keys at a time"
                        );
                        continue;
                    }
                    Err(EtcdError::Denied(why)) => {
                        let user = self
                            .username
                            .as_deref()
                            .map(|u| format!(" as user {u}"))
                            .unwrap_or_default();
                        unreadable.push((root.clone(), format!(
                            "etcd refused to read {root}{user} ({why}); the role must allow reading the range [{root}, {root}0)"
                        )));
                        continue 'roots;
                    }
                    Err(e) => return Err(e),
                };
                if revision == 0 {
                    revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                }
                let more = resp.more();
                let kvs = resp.take_kvs();
                let last = kvs.last().map(|kv| kv.key().to_vec());
                for kv in kvs {
                    let Ok(k) = std::str::from_utf8(kv.key()) else {
                        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
                        continue;
                    };
                    if is_at_or_below(k, &root) {
                        pairs.push((Key::from(k), Val::from(kv.value())));
                    }
                }
                match (more, last) {
                    (true, Some(mut l)) => {
                        l.push(0);
                        start = l;
                    }
                    _ => break,
                }
            }
        }
        let mut snap = Snapshot::from_pairs(revision, pairs);
        for (root, why) in unreadable {
            snap.mark_unreadable(&root, why);
        }
        Ok(snap)
    }

    async fn get(
        &self,
        client: &mut Client,
        key: Vec<u8>,
        mut opts: GetOptions,
        revision: i64,
    ) -> Result<etcd_client::GetResponse, EtcdError> {
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        match tokio::time::timeout(self.request_timeout, kv.get(key, Some(opts))).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                if s.code() == tonic::Code::OutOfRange || s.message().contains("too large") =>
            {
                Err(EtcdError::TooLarge(s.message().to_string()))
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message().contains("compacted") => {
                Err(EtcdError::Compacted(revision))
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                if s.code() == tonic_code_permission_denied() =>
            {
                Err(EtcdError::Denied(s.message().to_string()))
            }
            Ok(Err(e)) => Err(self.unavailable(describe(&e))),
            Err(_) => Err(self.unavailable(format!(
                "no answer within {}",
                humantime::format_duration(self.request_timeout)
            ))),
        }
    }
}

fn tonic_code_permission_denied() -> tonic::Code {
    tonic::Code::PermissionDenied
}

/// The watched prefixes with nested ones removed (`/a` covers `/a/b`).
pub fn roots(prefixes: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = prefixes.iter().collect();
    sorted.sort();
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        if !out.iter().any(|r| is_at_or_below(p, r)) {
            out.push(p.clone());
        }
    }
    out
}

/// The etcd key range covering `prefix` itself and everything below
/// `prefix/`: `[prefix, prefix + "0")` (`'0'` follows `'/'`). Keys such as
/// `prefix!x` also fall in it and are filtered out by the caller.
pub fn range_of(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let start = prefix.as_bytes().to_vec();
    let mut end = start.clone();
    end.push(b'0');
    (start, end)
}

/// `render --once` against etcd: connect, one snapshot, done.
pub async fn snapshot_once(s: &Settings, prefixes: &[String]) -> Result<Snapshot, EtcdError> {
    let conn = Connection::from_settings(s).await?;
    let mut client = conn.connect().await?;
    conn.snapshot(&mut client, prefixes, None).await
}

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
}

/// The watcher task: snapshot, then one watch per root prefix (all on one
/// gRPC stream), resuming from the last revision seen after any failure,
/// with a fresh snapshot after a compaction and a resync snapshot every
/// `resync` (zero: never). Runs until aborted; never returns an error.
pub async fn run(
    conn: Connection,
    prefixes: Vec<String>,
    resync: Duration,
    tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
) {
    use super::{Backoff, Event, SnapshotReason};
    let roots = roots(&prefixes);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    // Per root: the revision up to which events were delivered.
    let mut seen: Option<Vec<i64>> = None;
    // The roots actually watched: those the snapshot could read.
    let mut live: Vec<String> = roots.clone();
    let mut reason = SnapshotReason::Initial;
    let mut idx = 0usize;
    let mut reported_down: Option<String> = None;
    let n = conn.endpoints.len().max(1);
    loop {
        let endpoint = conn.endpoints[idx % n].clone();
        let attempt = async {
            let mut client = conn.connect_to(&endpoint).await?;
            if seen.is_none() {
                let snap = conn.snapshot(&mut client, &roots, None).await?;
                live = roots
                    .iter()
                    .filter(|r| !snap.unreadable().contains_key(*r))
                    .cloned()
                    .collect();
                seen = Some(vec![snap.revision(); live.len()]);
                let _ = tx.send(Event::Connected {
                    endpoint: endpoint.clone(),
                });
                let _ = tx.send(Event::Snapshot {
                    snapshot: snap,
                    reason,
                });
            }
            Ok::<Client, EtcdError>(client)
        };
        let mut client = match attempt.await {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                if reported_down.as_deref() != Some(&msg) {
                    let _ = tx.send(Event::Disconnected {
                        reason: msg.clone(),
                    });
                    reported_down = Some(msg);
                }
                idx += 1;
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let Some(seen_revs) = seen.as_mut() else {
            continue;
        };
        let end = watch(
            &conn,
            &mut client,
            &endpoint,
            &live,
            seen_revs,
            resync,
            &tx,
            &mut backoff,
            &mut reported_down,
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
                reason = SnapshotReason::Compacted;
            }
            WatchEnd::Compacted(rev) => {
                tracing::warn!(
                    compacted = rev,
                    "etcd compacted past our revision; taking a new snapshot"
                );
                seen = None;
                reason = SnapshotReason::Compacted;
            }
            WatchEnd::Broken(why) => {
                let msg = format!("etcd at {endpoint}: {why}");
                let _ = tx.send(Event::Disconnected {
                    reason: msg.clone(),
                });
                reported_down = Some(msg);
                idx += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    conn: &Connection,
    client: &mut Client,
    endpoint: &str,
    roots: &[String],
    seen: &mut [i64],
    resync: Duration,
    tx: &tokio::sync::mpsc::UnboundedSender<super::Event>,
    backoff: &mut super::Backoff,
    reported_down: &mut Option<String>,
) -> WatchEnd {
    use super::{Event, SnapshotReason};
    use crate::store::Change;
    use etcd_client::{EventType, WatchOptions};

    if roots.is_empty() {
        // Nothing to watch: stay "connected" and idle.
        let _ = tx.send(Event::Connected {
            endpoint: endpoint.to_string(),
        });
        std::future::pending::<()>().await;
    }
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
        Ok(Err(e)) => return WatchEnd::Broken(describe(&e)),
        Err(_) => return WatchEnd::Broken("no answer to the watch request".into()),
    };
    for (i, root) in roots.iter().enumerate().skip(1) {
        if let Err(e) = stream.watch(range_of(root).0, Some(opts(i))).await {
            return WatchEnd::Broken(describe(&e));
        }
    }
    let mut created = 0usize;
    // The first progress request waits a period: right after (re)creating
    // the watches they may still be catching up.
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_message = tokio::time::Instant::now();
    let stall = PROGRESS_EVERY * 2 + conn.request_timeout;
    let mut next_resync = (!resync.is_zero()).then(|| tokio::time::Instant::now() + resync);
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return WatchEnd::Broken("the watch stream was closed".into()),
                    Err(e) => return WatchEnd::Broken(describe(&e)),
                };
                last_message = tokio::time::Instant::now();
                if resp.compact_revision() > 0 {
                    return WatchEnd::Compacted(resp.compact_revision());
                }
                if resp.canceled() {
                    return WatchEnd::Broken(format!("watch canceled: {}", resp.cancel_reason()));
                }
                if resp.created() {
                    // etcd restored from an older backup, or rebuilt: its
                    // revision went back, so resuming would wait forever.
                    let current = resp.header().map(|h| h.revision()).unwrap_or(0);
                    let newest = seen.iter().copied().max().unwrap_or(0);
                    if current > 0 && current < newest {
                        return WatchEnd::Rewound { current, seen: newest };
                    }
                    created += 1;
                    if created == roots.len() {
                        backoff.reset();
                        *reported_down = None;
                        tracing::debug!(endpoint, watches = created, "watching");
                        let _ = tx.send(Event::Connected { endpoint: endpoint.to_string() });
                    }
                    continue;
                }
                let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                let id = resp.watch_id();
                let events = resp.events();
                if events.is_empty() {
                    // A progress notification. One for a given watch means
                    // that watch has delivered everything up to the header
                    // revision. The stream-wide answer to our progress
                    // request (id -1) only proves the stream is alive: etcd
                    // before 3.4.24 sends it even while a watch is still
                    // catching up (etcd-io/etcd#15220), so it must not move
                    // the resume point.
                    if let Some(i) = usize::try_from(id).ok().filter(|&i| i < seen.len()) {
                        seen[i] = seen[i].max(header_rev);
                    }
                    let _ = tx.send(Event::Progress { revision: header_rev });
                    continue;
                }
                let Some(i) = usize::try_from(id).ok().filter(|&i| i < roots.len()) else {
                    continue;
                };
                let mut changes = Vec::with_capacity(events.len());
                let mut rev = seen[i];
                for ev in events {
                    let Some(kv) = ev.kv() else { continue };
                    rev = rev.max(kv.mod_revision());
                    let Ok(key) = std::str::from_utf8(kv.key()) else {
                        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "ignoring a key that is not UTF-8");
                        continue;
                    };
                    if !is_at_or_below(key, &roots[i]) {
                        continue;
                    }
                    changes.push(match ev.event_type() {
                        EventType::Put => Change::Put(Key::from(key), Val::from(kv.value())),
                        EventType::Delete => Change::Delete(Key::from(key)),
                    });
                }
                seen[i] = rev;
                if !changes.is_empty() {
                    let _ = tx.send(Event::Changes { revision: rev, changes });
                }
            }
            _ = ticker.tick() => {
                if last_message.elapsed() > stall {
                    return WatchEnd::Broken(format!("no answer for {}s", stall.as_secs()));
                }
                if let Err(e) = stream.request_progress().await {
                    return WatchEnd::Broken(describe(&e));
                }
                if let Some(due) = next_resync
                    && tokio::time::Instant::now() >= due
                {
                    next_resync = Some(due + resync);
                    match resync_snapshot(conn, client, roots, seen).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_prefixes_merge() {
        let r = roots(&["/a/b".into(), "/a".into(), "/ab".into(), "/c/d".into()]);
        assert_eq!(r, ["/a", "/ab", "/c/d"]);
    }

    #[test]
    fn ranges_cover_the_prefix_and_below() {
        assert_eq!(range_of("/a"), (b"/a".to_vec(), b"/a0".to_vec()));
        assert_eq!(range_of(""), (vec![0], vec![0]));
    }
}
