//! The etcd v3 backend: connecting, and consistent snapshots.
//!
//! Connecting resolves the endpoints (a list, or DNS SRV discovery), sets up
//! TLS (CA, client certificate) and username/password auth (with automatic
//! token refresh), all bounded by the connect and request timeouts. A
//! snapshot reads every watched prefix at one revision (the first range's),
//! paginated so a large prefix never needs one huge response. The watcher
//! task that follows changes lives in [`super::etcd_watch`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::dns::{self, DnsConfig};
use crate::settings::Settings;
pub use crate::store::roots;
use crate::store::{Entry, Key, Snapshot, Val, is_at_or_below};

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

/// How to reach etcd: resolved when made; with SRV discovery, the daemon's
/// watcher resolves it again ([`Connection::rediscover`]) before each
/// attempt that follows a failure.
#[derive(Clone)]
pub struct Connection {
    /// Endpoint URLs.
    pub endpoints: Vec<String>,
    /// How to dial the endpoints SRV discovery found through an explicit
    /// `dns_server`: their target's address, as that nameserver gave it.
    dial: HashMap<String, Dial>,
    /// The settings discovery reads again, when SRV discovery is used.
    discovery: Option<Arc<Settings>>,
    /// The TTL of the SRV answer the endpoints came from (when discovered):
    /// when the record is worth looking up again.
    pub srv_ttl: Option<u32>,
    /// The TLS set-up, for an endpoint dialled by address but verified by
    /// its target's name.
    tls_options: Option<TlsOptions>,
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
            crate::logging::push_causes(&mut msg, std::error::Error::source(s));
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

/// An endpoint SRV discovery found through an explicit nameserver, whose
/// target that nameserver resolved: dialled at `url` (the address), and
/// verified by TLS as `host` (the target's name).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dial {
    url: String,
    host: String,
}

/// The endpoints to try: those given, then those SRV discovery finds
/// (`https` when TLS is configured or the record's name says `-ssl`);
/// etcd's default when there are none. Each must be http(s) and carry no
/// credentials; with TLS, `http://` becomes `https://`. With an explicit
/// `dns_server`, each SRV target is resolved through it too (the system
/// resolver may not know names only that nameserver serves): a target it
/// has no address for is left out, and none at all is an error.
/// The endpoints of the settings (SRV discovery included), how to dial
/// those found through an explicit `dns_server`, and the SRV answer's TTL
/// (when discovered).
async fn endpoints(
    s: &Settings,
    tls_wanted: bool,
) -> Result<(Vec<String>, HashMap<String, Dial>, Option<u32>), EtcdError> {
    let mut endpoints = s.endpoints.clone();
    // Index in `endpoints`, target and port of each discovered one.
    let mut discovered: Vec<(usize, String, u16)> = Vec::new();
    let cfg = DnsConfig {
        nameserver: s.dns_server,
    };
    let name = srv_name(s);
    let mut srv_ttl = None;
    if let Some(name) = &name {
        let answer = dns::lookup_srv(&cfg, name)
            .await
            .map_err(|e| EtcdError::Unavailable {
                endpoints: format!("SRV {name}"),
                message: format!("discovery failed: {e}"),
            })?;
        srv_ttl = Some(answer.ttl);
        let targets = answer.targets;
        let scheme = if tls_wanted || s.srv_record.contains("-ssl") {
            "https"
        } else {
            "http"
        };
        for t in targets {
            discovered.push((endpoints.len(), t.target.clone(), t.port));
            endpoints.push(format!("{scheme}://{}:{}", t.target, t.port));
        }
    }
    if endpoints.is_empty() {
        endpoints.push("http://127.0.0.1:2379".into());
    }
    check_urls(&endpoints)?;
    if tls_wanted {
        for e in &mut endpoints {
            if let Some(rest) = e.strip_prefix("http://") {
                *e = format!("https://{rest}");
            } else if !e.contains("://") {
                *e = format!("https://{e}");
            }
        }
    }
    let mut dial = HashMap::new();
    let (Some(name), Some(_)) = (&name, s.dns_server) else {
        return Ok((endpoints, dial, srv_ttl));
    };
    let mut unresolved: Vec<(usize, String)> = Vec::new();
    for (i, host, port) in discovered {
        if host.parse::<IpAddr>().is_ok() {
            continue;
        }
        match dns::lookup_ip(&cfg, &host).await {
            Ok(ips) => {
                let ip = match ips[0] {
                    IpAddr::V6(a) => format!("[{a}]"),
                    IpAddr::V4(a) => a.to_string(),
                };
                let scheme = endpoints[i].split("://").next().unwrap_or("http");
                let url = format!("{scheme}://{ip}:{port}");
                dial.insert(endpoints[i].clone(), Dial { url, host });
            }
            Err(e) => unresolved.push((i, format!("target {host}: {e}"))),
        }
    }
    if unresolved.is_empty() {
        return Ok((endpoints, dial, srv_ttl));
    }
    let why: Vec<&str> = unresolved.iter().map(|(_, w)| w.as_str()).collect();
    if unresolved.len() == endpoints.len() {
        return Err(EtcdError::Unavailable {
            endpoints: format!("SRV {name}"),
            message: format!("discovery failed: {}", why.join("; ")),
        });
    }
    tracing::warn!(
        "etcd discovery (SRV {name}): left out the targets {} has no address for: {}",
        cfg.nameserver.map(|a| a.to_string()).unwrap_or_default(),
        why.join("; ")
    );
    let skip: Vec<usize> = unresolved.iter().map(|(i, _)| *i).collect();
    let endpoints = endpoints
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, e)| e)
        .collect();
    Ok((endpoints, dial, srv_ttl))
}

/// `SRV_RECORD.SRV_DOMAIN`, when SRV discovery is configured.
fn srv_name(s: &Settings) -> Option<String> {
    s.srv_domain.as_ref().map(|domain| {
        format!(
            "{}.{}",
            s.srv_record.trim_end_matches('.'),
            domain.trim_end_matches('.')
        )
    })
}

/// Each endpoint URL is http(s) and carries no credentials.
fn check_urls(endpoints: &[String]) -> Result<(), EtcdError> {
    for e in endpoints {
        if let Some((scheme, _)) = e.split_once("://")
            && scheme != "http"
            && scheme != "https"
        {
            return Err(EtcdError::Settings(format!(
                "endpoint {e:?}: the scheme must be http or https"
            )));
        }
    }
    for e in endpoints {
        if let Some((scheme_user, _)) = e.split_once('@') {
            let scheme = scheme_user.split("://").next().unwrap_or("http");
            return Err(EtcdError::Settings(format!(
                "endpoint {scheme}://***@{}: credentials do not belong in an endpoint URL; use username and password_file",
                e.rsplit('@').next().unwrap_or("")
            )));
        }
    }
    Ok(())
}

/// The connection settings that can never work, found without connecting
/// or looking anything up: a bad endpoint URL, an unreadable CA file,
/// certificate or key (or one without the other), a user without a
/// password. What `check` and `render --once` refuse (exit 3), and the
/// daemon too, at start and on SIGHUP.
pub fn check_settings(s: &Settings) -> Result<(), EtcdError> {
    check_urls(&s.endpoints)?;
    if s.ca_file.is_some() || s.cert_file.is_some() || s.key_file.is_some() {
        tls_options(s)?;
    }
    if let Some(user) = &s.username {
        read_password(s, user)?;
    }
    Ok(())
}

/// The CA and client certificate, read.
fn tls_options(s: &Settings) -> Result<TlsOptions, EtcdError> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &s.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
    }
    match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => {
            tls = tls.identity(Identity::from_pem(read(c, "certificate")?, read(k, "key")?));
        }
        (None, None) => {}
        _ => {
            return Err(EtcdError::Settings(
                "cert_file and key_file (--cert-file, --key-file) go together: give both or neither".into(),
            ));
        }
    }
    Ok(tls)
}

/// `user`'s password. A password file (flag or liveconf.toml) wins over an
/// inline password (confd.toml's, held in memory only).
fn password(s: &Settings, user: &str) -> Result<String, EtcdError> {
    if let Some(pw_file) = &s.password_file
        && let Ok(meta) = std::fs::metadata(pw_file)
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by others (mode {:04o}); chmod 600 it",
                pw_file.display(),
                meta.permissions().mode() & 0o7777
            );
        }
    }
    read_password(s, user)
}

/// [`password`], without a word about the file's mode.
fn read_password(s: &Settings, user: &str) -> Result<String, EtcdError> {
    match (&s.password_file, &s.password) {
        (Some(pw_file), _) => Ok(String::from_utf8_lossy(&read(pw_file, "password file")?)
            .trim_end_matches(['\n', '\r'])
            .to_string()),
        (None, Some(pw)) => Ok(pw.expose().to_string()),
        (None, None) => Err(EtcdError::Settings(format!(
            "username {user:?} needs password_file (--username needs --password-file; \
             in a confd.toml, password)"
        ))),
    }
}

impl Connection {
    /// Resolves endpoints and builds the connect options from the settings.
    pub async fn from_settings(s: &Settings) -> Result<Connection, EtcdError> {
        let tls_wanted = s.ca_file.is_some() || s.cert_file.is_some() || s.key_file.is_some();
        // Settings before the network: a bad one is said as such (exit 3),
        // not hidden behind a discovery failure.
        check_settings(s)?;
        let (endpoints, dial, srv_ttl) = endpoints(s, tls_wanted).await?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(s.connect_timeout)
            .with_timeout(s.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let mut tls = None;
        if tls_wanted {
            let t = tls_options(s)?;
            options = options.with_tls(t.clone());
            tls = Some(t);
        }
        if let Some(user) = &s.username {
            options = options
                .with_user(user.clone(), password(s, user)?)
                .with_auto_token_refresh(true);
        }
        Ok(Connection {
            endpoints,
            dial,
            discovery: s.srv_domain.is_some().then(|| Arc::new(s.clone())),
            srv_ttl,
            tls_options: tls,
            options,
            request_timeout: s.request_timeout,
            connect_timeout: s.connect_timeout,
            username: s.username.clone(),
            tls: tls_wanted.then_some(s.cert_file.is_some()),
        })
    }

    /// Whether the endpoints come from SRV discovery, to be looked up
    /// again after a failure.
    pub fn discovers(&self) -> bool {
        self.discovery.is_some()
    }

    /// The SRV record the endpoints are discovered from, if they are.
    pub fn srv_name(&self) -> Option<String> {
        self.discovery.as_deref().and_then(srv_name)
    }

    /// The nameserver discovery asks (`None`: the system's).
    pub fn dns_server(&self) -> Option<std::net::SocketAddr> {
        self.discovery.as_ref().and_then(|s| s.dns_server)
    }

    /// Looks the SRV record (and, through an explicit `dns_server`, its
    /// targets) up again: the daemon's watcher does it before each attempt
    /// that follows a failure, so a record or an address fixed in DNS is
    /// followed without a restart. Whether the endpoints changed.
    pub async fn rediscover(&mut self) -> Result<bool, EtcdError> {
        let Some(s) = self.discovery.clone() else {
            return Ok(false);
        };
        let (endpoints, dial, srv_ttl) = endpoints(&s, self.tls_options.is_some()).await?;
        let changed = endpoints != self.endpoints || dial != self.dial;
        self.endpoints = endpoints;
        self.dial = dial;
        self.srv_ttl = srv_ttl;
        Ok(changed)
    }

    fn unavailable(&self, message: String) -> EtcdError {
        EtcdError::Unavailable {
            endpoints: self.endpoints.join(","),
            message: self.explain(message),
        }
    }

    /// Adds what a closed connection usually means to `message`.
    pub(crate) fn explain(&self, mut message: String) -> String {
        // With TLS 1.3 a server that rejects our certificate just closes the
        // connection after the handshake: say what that usually means.
        // The words are matched in the transport's message because there is
        // nothing typed to match: the cause arrives as a chain of boxed
        // errors from tonic, hyper, h2 and rustls (or as a gRPC status
        // wrapping them), which `describe` flattens to this text.
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
            // etcd's grpc-proxy passes its own client's state through when
            // it cannot reach etcd: gRPC's words for it name neither.
            _ if message.contains("SubConns are in TransientFailure") => message.push_str(
                " (a grpc-proxy at this endpoint answered, but cannot reach etcd behind it)",
            ),
            // Plain text: the peer went away mid-stream (an etcd member or
            // a grpc-proxy stopped or restarted); h2's own words for it
            // ("stream closed because of a broken pipe") say nothing of that.
            None if ["broken pipe", "connection reset", "connection closed"]
                .iter()
                .any(|m| message.contains(m)) =>
            {
                message.push_str(
                    " (the connection was lost: the etcd member or proxy at this endpoint stopped, restarted or closed it)",
                )
            }
            // Nothing listens at the address: the wrong address or port,
            // or etcd not running there.
            _ if message.contains("Connection refused") => message.push_str(
                " (nothing listens there: is etcd (or its grpc-proxy) running at this address, and are the endpoints right?)",
            ),
            _ => {}
        }
        message
    }

    /// Connects to the first endpoint that answers (and authenticates), in
    /// the order given; each gets the connect timeout. One dead member of
    /// the cluster must not fail a `render --once` or a `fleet`.
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let probed = match self.connect_to(endpoint).await {
                Ok(c) => self.probe(c, endpoint).await,
                Err(e) => Err(e),
            };
            match probed {
                Ok(c) => {
                    if !failures.is_empty() {
                        let down: Vec<String> =
                            failures.iter().map(|(e, m)| format!("{e}: {m}")).collect();
                        tracing::warn!("etcd: using {endpoint}; unreachable: {}", down.join("; "));
                    }
                    return Ok(c);
                }
                Err(EtcdError::Unavailable { endpoints, message }) => {
                    failures.push((endpoints, message));
                }
                Err(other) => return Err(other),
            }
        }
        Err(match failures.len() {
            1 => {
                let (endpoints, message) = failures.remove(0);
                EtcdError::Unavailable { endpoints, message }
            }
            _ => EtcdError::Unavailable {
                endpoints: self.endpoints.join(","),
                message: format!(
                    "no endpoint answered ({})",
                    failures
                        .iter()
                        .map(|(e, m)| format!("{e}: {m}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        })
    }

    /// Asks `endpoint` for its status: a connection is made lazily, so
    /// only an answer proves the member is there. An answer that is an
    /// error (a permission) still proves it.
    async fn probe(&self, mut client: Client, endpoint: &str) -> Result<Client, EtcdError> {
        let down = |message: String| EtcdError::Unavailable {
            endpoints: endpoint.to_string(),
            message: self.explain(message),
        };
        match tokio::time::timeout(self.connect_timeout, client.status()).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(etcd_client::Error::GRpcStatus(st)))
                if !matches!(
                    st.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
            {
                Ok(client)
            }
            Ok(Err(e)) => Err(down(describe(&e))),
            Err(_) => Err(down(format!(
                "no answer within {}",
                humantime::format_duration(self.connect_timeout)
            ))),
        }
    }

    /// Connects to this one endpoint (the daemon picks endpoints itself, so
    /// it knows which one it uses and can move on when it fails).
    pub async fn connect_to(&self, endpoint: &str) -> Result<Client, EtcdError> {
        let (url, options) = match self.dial.get(endpoint) {
            Some(d) => {
                let mut o = self.options.clone();
                if let Some(tls) = &self.tls_options {
                    o = o.with_tls(tls.clone().domain_name(d.host.clone()));
                }
                (d.url.clone(), o)
            }
            None => (endpoint.to_string(), self.options.clone()),
        };
        self.connect_endpoints(std::slice::from_ref(&url), options)
            .await
            .map_err(|e| match e {
                EtcdError::Unavailable { message, .. } => EtcdError::Unavailable {
                    endpoints: endpoint.to_string(),
                    message,
                },
                other => other,
            })
    }

    async fn connect_endpoints(
        &self,
        endpoints: &[String],
        options: ConnectOptions,
    ) -> Result<Client, EtcdError> {
        let limit = self.connect_timeout + self.request_timeout;
        let opts = options.with_require_leader(true);
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
    ///
    /// Pages are pipelined: while one page's keys go into the snapshot (on
    /// the blocking pool), the next page is already being requested and
    /// decoded. The first page is [`PAGE`] keys; the next ones are sized
    /// from the average size of the keys read so far to about
    /// [`PAGE_BYTES`], so a prefix of small values takes a few large pages
    /// (etcd 3.4 walks its index over the whole rest of the range for every
    /// page, so many small pages cost it quadratic time) and one of large
    /// values stays within the message limit.
    pub async fn snapshot(
        &self,
        client: &mut Client,
        prefixes: &[String],
        at: Option<i64>,
    ) -> Result<Snapshot, EtcdError> {
        self.read(client, prefixes, at, false).await
    }

    /// [`Connection::snapshot`] at the current revision for a run that
    /// reads it once (`render --once`, `check`): the decoded keys and
    /// values become a sorted list ([`Snapshot::from_sorted`]) where they
    /// are, without a tree or a copy of each (at 100,000 keys, ~40 ms of
    /// the run and ~15 MiB).
    pub async fn snapshot_once(
        &self,
        client: &mut Client,
        prefixes: &[String],
    ) -> Result<Snapshot, EtcdError> {
        self.read(client, prefixes, None, true).await
    }

    /// [`Connection::snapshot`], as a sorted list when `flat`.
    async fn read(
        &self,
        client: &mut Client,
        prefixes: &[String],
        at: Option<i64>,
        flat: bool,
    ) -> Result<Snapshot, EtcdError> {
        let mut revision = at.unwrap_or(0);
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
        // A database whose keys in use all fit in one page is read in one
        // request (no limit): the first page of `PAGE` keys, which only
        // sizes the next one, would cost etcd a walk of the range's whole
        // index and a round trip (~30 ms at 100,000 keys). Every current
        // key is stored in full in the database, so the answer is no
        // larger than the database in use. Unknown (an error, an old etcd):
        // paged as usual.
        let small = !roots.is_empty()
            && matches!(self.db_in_use(client).await, Some(n) if n <= ONE_PAGE_DB);
        let mut page = if small { 0 } else { PAGE };
        // Bytes of key and value read so far, and how many keys: the
        // average sizes the next page.
        let (mut bytes, mut count) = (0usize, 0usize);
        // The snapshot being filled, or the blocking task filling it.
        let mut filling = Filling::Idle(Snapshot::new(0));
        // Or, `flat`, the keys read so far.
        let mut entries: Vec<Entry> = Vec::new();
        'roots: for root in roots {
            let root: Arc<str> = Arc::from(root);
            let (mut start, end) = range_of(&root);
            loop {
                let opts = GetOptions::new().with_range(end.clone()).with_limit(page);
                let mut resp = match self.get(client, start.clone(), opts, revision).await {
                    Ok(r) => r,
                    Err(EtcdError::TooLarge(why)) if page == 0 || page > 1 => {
                        page = if page == 0 { PAGE } else { (page / 4).max(1) };
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
                        unreadable.push((root.to_string(), format!(
                            "etcd refused to read {root}{user} ({why}); the role must allow reading the range [{root}, {root}0)"
                        )));
                        continue 'roots;
                    }
                    Err(e) => return Err(e),
                };
                crate::once::mark("page received");
                if revision == 0 {
                    revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                }
                let more = resp.more();
                let kvs = resp.take_kvs();
                for kv in &kvs {
                    bytes += kv.key().len() + kv.value().len();
                }
                count += kvs.len();
                let next = match (more, kvs.last()) {
                    (true, Some(last)) => {
                        let mut l = last.key().to_vec();
                        l.push(0);
                        Some(l)
                    }
                    _ => None,
                };
                if flat {
                    // Moved, not copied: cheap enough not to leave this thread.
                    flat_page(&mut entries, &root, kvs);
                    crate::once::mark("page added");
                } else {
                    // The previous page is in by now (it had the whole round
                    // trip of this one); this one goes in while the next is
                    // fetched.
                    let mut snap = filling.settle().await.ok_or_else(|| self.interrupted())?;
                    let under = root.clone();
                    filling = Filling::Busy(tokio::task::spawn_blocking(move || {
                        add_page(&mut snap, &under, kvs);
                        crate::once::mark("page added");
                        snap
                    }));
                }
                match next {
                    Some(n) => start = n,
                    None => break,
                }
                if page >= PAGE {
                    page = next_page(bytes, count);
                }
            }
        }
        let mut snap = if flat {
            entries.shrink_to_fit();
            Snapshot::from_sorted(revision, entries)
        } else {
            filling.settle().await.ok_or_else(|| self.interrupted())?
        };
        snap.set_revision(revision);
        for (root, why) in unreadable {
            snap.mark_unreadable(&root, why);
        }
        Ok(snap)
    }

    /// The bytes of etcd's database in use, as the member answering says
    /// (`None` when it does not answer within the request timeout).
    async fn db_in_use(&self, client: &mut Client) -> Option<i64> {
        match tokio::time::timeout(self.request_timeout, client.status()).await {
            Ok(Ok(st)) => Some(st.raft_used_db_size()).filter(|&n| n > 0),
            _ => None,
        }
    }

    /// The snapshot was interrupted by the runtime shutting down.
    fn interrupted(&self) -> EtcdError {
        self.unavailable("interrupted: shutting down".to_string())
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
        // etcd's gRPC API says what went wrong only in a status code and a
        // message, and the codes are shared (OutOfRange is both tonic's
        // "message length too large" and etcd's "required revision has been
        // compacted"): the message is all there is to tell them apart.
        match tokio::time::timeout(self.request_timeout, kv.get(key, Some(opts))).await {
            Ok(Ok(r)) => Ok(r),
            // Compaction first: etcd reports it as OutOfRange too.
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message().contains("compacted") => {
                Err(EtcdError::Compacted(revision))
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                if s.code() == tonic::Code::OutOfRange || s.message().contains("too large") =>
            {
                Err(EtcdError::TooLarge(s.message().to_string()))
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

/// About how many bytes of keys and values one range page after the first
/// carries (see [`Connection::snapshot`]).
pub const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// A database at most this large in use (etcd's `dbSizeInUse`) is read in
/// one request per prefix, without a first page to size the others.
pub const ONE_PAGE_DB: i64 = 32 * 1024 * 1024;

/// The most keys one page asks for.
const MAX_PAGE: i64 = 1_000_000;

/// The size of the next page, from `bytes` of keys and values in `count`
/// keys read so far: about [`PAGE_BYTES`], never fewer than [`PAGE`] keys.
fn next_page(bytes: usize, count: usize) -> i64 {
    // Each key also costs its revisions and framing in the answer.
    let per_key = (bytes / count.max(1)).max(1) + 32;
    ((PAGE_BYTES / per_key) as i64).clamp(PAGE, MAX_PAGE)
}

/// A snapshot being built from pages: idle, or a blocking task adding a
/// page to it.
enum Filling {
    Idle(Snapshot),
    Busy(tokio::task::JoinHandle<Snapshot>),
}

impl Filling {
    /// The snapshot, once the page being added is in (`None` if the
    /// runtime is shutting down).
    async fn settle(self) -> Option<Snapshot> {
        match self {
            Filling::Idle(s) => Some(s),
            Filling::Busy(task) => match task.await {
                Ok(s) => Some(s),
                // Adding keys to a map does not fail; a panic is a bug and
                // stays one.
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => None,
                },
            },
        }
    }
}

/// Adds one page of a range read below `root` to `snap`: keys that are not
/// UTF-8 are skipped (and logged), and so are keys such as `root!x` that the
/// range covers but that are not below `root`.
fn add_page(snap: &mut Snapshot, root: &str, kvs: Vec<etcd_client::KeyValue>) {
    snap.extend(kvs.into_iter().filter_map(|kv| {
        let Ok(k) = std::str::from_utf8(kv.key()) else {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
            return None;
        };
        is_at_or_below(k, root).then(|| (Key::from(k), Val::from(kv.value())))
    }));
}

/// Adds one page of a range read below `root` to the sorted list `out`,
/// as [`add_page`] does to a tree, moving each key and value (the page's
/// list becomes `out` when it is the first).
fn flat_page(out: &mut Vec<Entry>, root: &str, kvs: Vec<etcd_client::KeyValue>) {
    // Collected in place: the page's own allocation holds the entries.
    let page: Vec<Entry> = kvs
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.into_key_value();
            match String::from_utf8(k) {
                Ok(k) => is_at_or_below(&k, root)
                    .then(|| (k.into_boxed_str(), v.into_boxed_slice())),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(e.as_bytes()), "skipping a key that is not UTF-8");
                    None
                }
            }
        })
        .collect();
    if out.is_empty() {
        *out = page;
    } else {
        out.extend(page);
    }
}

/// etcd as a [`super::Backend`]: the settings that make its connection.
pub struct EtcdBackend {
    /// The settings the connection is built from (endpoints or SRV, TLS,
    /// auth, timeouts, resync period).
    settings: Settings,
}

impl EtcdBackend {
    /// The etcd backend the settings describe (nothing is dialled yet).
    pub fn new(s: &Settings) -> EtcdBackend {
        EtcdBackend {
            settings: s.clone(),
        }
    }
}

impl super::Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        let mut e = s.endpoints.clone();
        if let Some(domain) = &s.srv_domain {
            e.push(format!("SRV {}.{domain}", s.srv_record));
        }
        if e.is_empty() {
            e.push("http://127.0.0.1:2379".into());
        }
        e.join(",")
    }

    fn identity(&self) -> String {
        let s = &self.settings;
        format!(
            "etcd {:?}",
            (
                &s.endpoints,
                &s.srv_domain,
                &s.srv_record,
                s.dns_server,
                (&s.ca_file, &s.cert_file, &s.key_file),
                (&s.username, &s.password_file, &s.password),
                (s.connect_timeout, s.request_timeout, s.resync_interval),
            )
        )
    }

    fn while_unavailable(&self) -> &'static str {
        "retrying"
    }

    fn check(&self) -> Result<(), super::BackendError> {
        Ok(check_settings(&self.settings)?)
    }

    fn idle_is_current(&self) -> bool {
        false
    }

    fn snapshot<'a>(
        &'a self,
        watched: &'a [String],
    ) -> super::BoxFuture<'a, Result<Snapshot, super::BackendError>> {
        Box::pin(async move { Ok(snapshot_once(&self.settings, watched).await?) })
    }

    fn watch(
        &self,
        watched: Vec<String>,
        after: i64,
        tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
    ) -> super::BoxFuture<'static, ()> {
        self.watch_replacing(watched, after, tx, super::Handover::default())
    }

    fn discovery(&self) -> Option<String> {
        srv_name(&self.settings)
    }

    /// Finds the endpoints (SRV discovery), then stops the watcher it
    /// replaces and watches. While the watcher replaced still runs (a new
    /// connection to the same SRV record: a SIGHUP changed `dns_server`,
    /// say), a failed look-up keeps it, said once (then reminded at most
    /// every [`super::REMIND_EVERY`]), and is retried with backoff.
    fn watch_replacing(
        &self,
        watched: Vec<String>,
        _after: i64,
        tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
        replaced: super::Handover,
    ) -> super::BoxFuture<'static, ()> {
        let s = self.settings.clone();
        Box::pin(async move {
            // Attempts at most RECONNECT_CAP apart, as the watcher's: a
            // host is back within that of its nameserver answering.
            let mut backoff =
                super::Backoff::new(Duration::from_secs(1), super::etcd_watch::RECONNECT_CAP);
            // Failures to connect (said as the backend being unavailable),
            // and failed look-ups while the replaced watcher is kept.
            let mut outage = super::Outage::default();
            let mut kept = super::Outage::default();
            loop {
                match Connection::from_settings(&s).await {
                    Ok(conn) => {
                        replaced.take_over();
                        if kept.over() > 0 {
                            tracing::info!(
                                "etcd discovery (SRV {}) through {} answers: moving to the new connection",
                                srv_name(&s).unwrap_or_default(),
                                nameserver(&s)
                            );
                        }
                        super::etcd_watch::run(conn, watched, s.resync_interval, tx, outage).await;
                        return;
                    }
                    Err(e) if replaced.is_pending() => {
                        let name = srv_name(&s).unwrap_or_default();
                        let why = match &e {
                            EtcdError::Unavailable { message, .. } => message.clone(),
                            other => other.to_string(),
                        };
                        let through = nameserver(&s);
                        match kept.failed() {
                            super::Say::First => tracing::warn!(
                                "etcd discovery (SRV {name}) through {through}: {why}; keeping the connection in use and its endpoints until a look-up succeeds (retrying with backoff)"
                            ),
                            super::Say::Again(lasted) => tracing::warn!(
                                "etcd discovery (SRV {name}) through {through} still fails ({lasted}): {why}; keeping the connection in use and its endpoints"
                            ),
                            super::Say::Quiet => tracing::debug!(
                                "etcd discovery (SRV {name}) through {through}: {why}; still keeping the connection in use"
                            ),
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Err(e) => {
                        // Settings that cannot work (unreadable certificate,
                        // SRV name without records): say so and retry, as
                        // the file or DNS may be fixed without a restart.
                        super::etcd_watch::unavailable(&tx, &mut outage, e.to_string());
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        })
    }
}

/// The nameserver SRV discovery asks, in words.
fn nameserver(s: &Settings) -> String {
    match s.dns_server {
        Some(a) => format!("dns_server {a}"),
        None => "the system resolver".into(),
    }
}

/// `render --once` against etcd: connect, one snapshot, done.
pub async fn snapshot_once(s: &Settings, prefixes: &[String]) -> Result<Snapshot, EtcdError> {
    let conn = Connection::from_settings(s).await?;
    let mut client = conn.connect().await?;
    crate::once::mark("connected");
    conn.snapshot_once(&mut client, prefixes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real etcd on loopback ports, killed on drop.
    struct Etcd(
        std::process::Child,
        #[allow(dead_code)] tempfile::TempDir,
        String,
    );

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    fn start_etcd() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (c, p) = (port(), port());
        let url = format!("http://127.0.0.1:{c}");
        let child = std::process::Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{p}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run etcd (scripts/ensure-deps etcd)");
        Etcd(child, dir, url)
    }

    /// A started etcd, the confdir its settings name, a connection and a
    /// client that has reached it (bounded wait).
    async fn connected_etcd() -> (Etcd, tempfile::TempDir, Connection, Client) {
        let etcd = start_etcd();
        let dir = tempfile::tempdir().unwrap();
        let layer = crate::settings::Layer {
            confdir: Some(dir.path().to_path_buf()),
            endpoints: Some(vec![etcd.2.clone()]),
            ..Default::default()
        };
        let settings = Settings::load(None, layer).unwrap();
        let conn = Connection::from_settings(&settings).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            match conn.connect().await {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > deadline => panic!("etcd: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        (etcd, dir, conn, client)
    }

    #[tokio::test]
    async fn a_read_at_a_compacted_revision_is_compaction_not_too_large() {
        let (_etcd, _dir, conn, mut client) = connected_etcd().await;
        let mut revs = Vec::new();
        for i in 0..3 {
            let r = client.put("/a/k", format!("{i}"), None).await.unwrap();
            revs.push(r.header().unwrap().revision());
        }
        client.compact(revs[2], None).await.unwrap();
        let prefixes = vec!["/a".to_string()];
        let got = conn.snapshot(&mut client, &prefixes, Some(revs[0])).await;
        assert!(
            matches!(got, Err(EtcdError::Compacted(r)) if r == revs[0]),
            "{:?}",
            got.err().map(|e| e.to_string())
        );
        let now = conn.snapshot(&mut client, &prefixes, None).await.unwrap();
        assert_eq!(now.revision(), revs[2]);
    }

    /// A one-shot run's snapshot (a sorted list) holds what the daemon's
    /// (a tree) does: prefixes whose ranges interleave (`/a` then `/a!b`,
    /// whose keys sort between `/a` and `/a/x`), keys the range covers but
    /// that are not below the prefix, a key that is not UTF-8.
    #[tokio::test]
    async fn a_one_shot_snapshot_holds_what_the_tree_does() {
        let (_etcd, _dir, conn, mut client) = connected_etcd().await;
        for k in [
            "/a", "/a/x", "/a/y/z", "/a!b", "/a!b/c", "/a!bc", "/ab", "/b",
        ] {
            client.put(k, format!("v{k}"), None).await.unwrap();
        }
        client
            .put(b"/a/\xff".to_vec(), "not utf-8", None)
            .await
            .unwrap();
        let prefixes = vec!["/a".to_string(), "/a!b".to_string()];
        let tree = conn.snapshot(&mut client, &prefixes, None).await.unwrap();
        let flat = conn.snapshot_once(&mut client, &prefixes).await.unwrap();
        assert_eq!(tree, flat);
        let keys: Vec<&str> = flat.entries().map(|(k, _)| k).collect();
        assert_eq!(keys, ["/a", "/a!b", "/a!b/c", "/a/x", "/a/y/z"]);
        assert_eq!(flat.get("/a!b/c"), Some(&b"v/a!b/c"[..]));
        assert!(flat.revision() > 0);
    }

    #[test]
    fn ranges_cover_the_prefix_and_below() {
        assert_eq!(range_of("/a"), (b"/a".to_vec(), b"/a0".to_vec()));
        assert_eq!(range_of(""), (vec![0], vec![0]));
    }
}
