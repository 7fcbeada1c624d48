//! DNS look-ups: SRV records (endpoint discovery), the addresses of SRV
//! targets when discovery uses an explicit nameserver, and the template
//! functions' look-ups ([`Query`]: addresses, SRV, TXT, URI), each answer
//! sorted and with its TTL, failures told apart as a real answer (the name
//! or the record does not exist) or a failure to get one.
//!
//! Uses hickory's resolver with the system configuration
//! (`/etc/resolv.conf`), or one explicit nameserver (`dns_server` in
//! liveconf.toml, also what tests point at a local DNS server).
//!
//! Every look-up in the process goes to one thread, `liveconf-dns`, which
//! runs a small runtime of its own and keeps one resolver per
//! [`DnsConfig`] (the system one is rebuilt when `/etc/resolv.conf`
//! changes, as libc re-reads it). Nothing is built per look-up, and
//! look-ups run concurrently there. Async callers (etcd discovery) await
//! the answer; synchronous callers (the template functions, on the render's
//! blocking thread) wait for it. Each look-up is bounded: hickory's own
//! timeout and attempts, and [`LOOKUP_LIMIT`] over the whole.
//!
//! The resolver keeps no cache (`cache_size = 0`): every look-up asks the
//! nameserver, so a changed record is seen by the next render.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// Which nameserver to ask.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsConfig {
    /// An explicit nameserver (UDP then TCP); `None` uses /etc/resolv.conf.
    pub nameserver: Option<SocketAddr>,
}

/// One SRV answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SrvTarget {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative weight among equal priorities.
    pub weight: u16,
    /// The host, without the trailing dot.
    pub target: String,
    /// The port.
    pub port: u16,
}

/// What a template function looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Addresses: A and AAAA (`lookup_ip`, `lookup_ipv4`, `lookup_ipv6`).
    Ip,
    /// SRV records.
    Srv,
    /// TXT records.
    Txt,
    /// URI records (RFC 7553, type 256).
    Uri,
}

impl Kind {
    /// The record type as people write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ip => "A/AAAA",
            Kind::Srv => "SRV",
            Kind::Txt => "TXT",
            Kind::Uri => "URI",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One look-up: a record type and a name (lower case, no trailing dot).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Query {
    /// The record type.
    pub kind: Kind,
    /// The name.
    pub name: String,
}

impl Query {
    /// `kind` records of `name`, named the canonical way (so "A.example."
    /// and "a.example" are one look-up).
    pub fn new(kind: Kind, name: &str) -> Query {
        Query {
            kind,
            name: name.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

/// Whether `name` can be looked up: a DNS name of labels (letters,
/// digits, `-` and `_`; an internationalised name as hickory converts
/// it) of 1 to 63 bytes, 253 bytes at most in all, an optional trailing
/// dot. Said in words before any query, instead of the resolver's
/// "proto error: Malformed label:".
pub fn check_name(name: &str) -> Result<(), DnsError> {
    let bad = |why: String| DnsError::BadName {
        name: name.to_string(),
        why,
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if bare.len() > 253 {
        return Err(bad(format!(
            "{} bytes: a name is never longer than 253 bytes",
            bare.len()
        )));
    }
    for (i, label) in bare.split('.').enumerate() {
        if label.is_empty() {
            return Err(bad(if i == 0 {
                "an empty label: it starts with a dot".into()
            } else {
                "an empty label: two dots in a row".into()
            }));
        }
        if label.len() > 63 {
            return Err(bad(format!(
                "a label is longer than 63 bytes: {} bytes in {label:?}",
                label.len()
            )));
        }
        if let Some(c) = label
            .chars()
            .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            let what = match c {
                ' ' => "a space".to_string(),
                c if c.is_ascii_graphic() => format!("\"{c}\""),
                c => format!("the character {:?}", c),
            };
            return Err(bad(format!(
                "{what} is not allowed in a name: letters, digits, '-' and '_' only"
            )));
        }
    }
    if !name.is_ascii() {
        // An internationalised name: hickory converts it (IDNA) or says why not.
        hickory_resolver::Name::from_utf8(name).map_err(|e| {
            bad(format!(
                "not a valid internationalised name: {}",
                without_proto(&e.to_string())
            ))
        })?;
    }
    Ok(())
}

/// `message` without hickory's "proto error: " in front.
fn without_proto(message: &str) -> &str {
    message.strip_prefix("proto error: ").unwrap_or(message)
}

/// One URI record (RFC 7553).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UriRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative weight among equal priorities.
    pub weight: u16,
    /// The URI, as the record holds it.
    pub target: String,
}

/// The records of one answer, sorted (so the same records in another
/// order are the same answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Records {
    /// Addresses, IPv4 first, each once.
    Ip(Vec<IpAddr>),
    /// By priority, weight, target, port.
    Srv(Vec<SrvTarget>),
    /// One string per record, its character-strings joined; sorted.
    Txt(Vec<String>),
    /// By priority, weight, target.
    Uri(Vec<UriRecord>),
}

impl Records {
    /// How many records.
    pub fn len(&self) -> usize {
        match self {
            Records::Ip(v) => v.len(),
            Records::Srv(v) => v.len(),
            Records::Txt(v) => v.len(),
            Records::Uri(v) => v.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records as one short line (status, logs).
    pub fn summary(&self) -> String {
        let items: Vec<String> = match self {
            Records::Ip(v) => v.iter().map(|a| a.to_string()).collect(),
            Records::Srv(v) => v
                .iter()
                .map(|s| format!("{} {} {}:{}", s.priority, s.weight, s.target, s.port))
                .collect(),
            Records::Txt(v) => v.iter().map(|t| format!("{t:?}")).collect(),
            Records::Uri(v) => v
                .iter()
                .map(|u| format!("{} {} {:?}", u.priority, u.weight, u.target))
                .collect(),
        };
        items.join(", ")
    }
}

/// An answer: its records and its TTL (the smallest of its records').
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The records, sorted.
    pub records: Records,
    /// Seconds the answer may be kept.
    pub ttl: u32,
}

/// Why a look-up found no SRV targets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// The name has no SRV record (NXDOMAIN, or no record of that type).
    #[error("no SRV record for {0}")]
    NoRecord(String),
    /// The name does not exist (NXDOMAIN): a real answer.
    #[error("no {kind} record for {name}: the name does not exist (NXDOMAIN)")]
    NoSuchName {
        /// The record type asked for.
        kind: Kind,
        /// The name.
        name: String,
        /// How long the answer may be kept (the SOA's negative-caching
        /// TTL, RFC 2308), when the nameserver sent one.
        ttl: Option<u32>,
    },
    /// The name exists but has no record of the type (NODATA): a real
    /// answer.
    #[error("no {kind} record for {name}: the name has none (NODATA)")]
    NoData {
        /// The record type asked for.
        kind: Kind,
        /// The name.
        name: String,
        /// How long the answer may be kept (the SOA's negative-caching
        /// TTL, RFC 2308), when the nameserver sent one.
        ttl: Option<u32>,
    },
    /// The name's SRV answer holds only the target "." (RFC 2782: the
    /// service is decidedly not available at this name): a real answer.
    #[error(
        "the service is not available at {name} (its SRV answer has only the target \".\", RFC 2782)"
    )]
    NotAvailable {
        /// The name.
        name: String,
        /// The TTL of the answer.
        ttl: u32,
    },
    /// The nameserver answered with an error code (SERVFAIL, REFUSED...):
    /// no answer.
    #[error("{servers} answered {code} for {name}")]
    Server {
        /// The response code.
        code: String,
        /// The name.
        name: String,
        /// The nameservers asked ([`Resolver::servers`]).
        servers: String,
    },
    /// No answer within the time limit.
    #[error(
        "no answer from {servers} within {}s{}",
        .within.as_secs(),
        .tries.map(|n| format!(", asked {n} times")).unwrap_or_default()
    )]
    Timeout {
        /// The nameservers asked ([`Resolver::servers`]).
        servers: String,
        /// How long each query waited (or the look-up as a whole).
        within: Duration,
        /// How many times the query was sent, when known.
        tries: Option<usize>,
    },
    /// No good answer for longer than `dns_max_stale` (the daemon).
    #[error("no good answer for {age} (dns_max_stale is {limit}); the last error: {last}")]
    Stale {
        /// Since the last good answer.
        age: String,
        /// `dns_max_stale`.
        limit: String,
        /// The last failure.
        last: String,
    },
    /// A name that is no DNS name (refused before any query).
    #[error("{name:?} is not a valid DNS name ({why})")]
    BadName {
        /// The name as given.
        name: String,
        /// Why, in words.
        why: String,
    },
    /// A URI record too short to hold its priority and weight.
    #[error("a URI record of {0} is malformed ({1} bytes of data)")]
    BadUri(String, usize),
    /// The name has no address (A or AAAA record).
    #[error("no address (A or AAAA record) for {0}")]
    NoAddress(String),
    /// An answer that holds no record.
    #[error("no SRV record")]
    EmptyAnswer,
    /// The look-up failed otherwise (the nameserver unreachable...).
    #[error("{servers}: {message}")]
    Lookup {
        /// The nameservers asked ([`Resolver::servers`]).
        servers: String,
        /// What failed, without hickory's "proto error: ".
        message: String,
    },
    /// Nothing came back within [`LOOKUP_LIMIT`].
    #[error("no answer within {}s", LOOKUP_LIMIT.as_secs())]
    NoAnswer,
    /// The DNS thread's runtime could not be built.
    #[error("cannot start the DNS runtime: {0}")]
    Runtime(Arc<std::io::Error>),
    /// The DNS thread could not be spawned.
    #[error("cannot start the DNS thread: {0}")]
    Thread(Arc<std::io::Error>),
    /// The DNS thread is gone (the process is ending).
    #[error("the DNS thread has stopped")]
    Stopped,
    /// The look-up was dropped without an answer.
    #[error("the look-up failed")]
    Dropped,
}

impl DnsError {
    /// Whether this is a real answer (the name, or its records of that
    /// type, do not exist), as opposed to a failure to get one (a
    /// timeout, SERVFAIL, an unreachable nameserver).
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            DnsError::NoSuchName { .. }
                | DnsError::NoData { .. }
                | DnsError::NoRecord(_)
                | DnsError::NotAvailable { .. }
        )
    }

    /// How long a real negative answer may be kept: the SOA's
    /// negative-caching TTL of NXDOMAIN and NODATA (when the nameserver
    /// sent an SOA), the records' TTL of an SRV answer of "." alone.
    pub fn negative_ttl(&self) -> Option<u32> {
        match self {
            DnsError::NoSuchName { ttl, .. } | DnsError::NoData { ttl, .. } => *ttl,
            DnsError::NotAvailable { ttl, .. } => Some(*ttl),
            _ => None,
        }
    }
}

/// How long one nameserver query waits (hickory's `timeout`).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a query that gets no answer is sent again (hickory's
/// `attempts`): a query is sent at most `ATTEMPTS + 1` times.
const ATTEMPTS: usize = 2;

/// The longest a look-up may take, whatever the nameservers do (hickory's
/// timeout × attempts stays well below it; this is the backstop).
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// A resolver, and the nameservers it asks in words (for errors).
struct Resolver {
    r: TokioResolver,
    /// "127.0.0.1:53 (dns_server)", "10.0.0.1:53, 10.0.0.2:53
    /// (/etc/resolv.conf)".
    servers: String,
}

/// The nameservers of `rc` (read from /etc/resolv.conf), each once.
fn system_servers(rc: &ResolverConfig) -> String {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for ns in rc.name_servers() {
        if !addrs.contains(&ns.socket_addr) {
            addrs.push(ns.socket_addr);
        }
    }
    if addrs.is_empty() {
        return format!("no nameserver ({RESOLV_CONF} lists none)");
    }
    let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    format!("{} ({RESOLV_CONF})", list.join(", "))
}

fn resolver(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
    let r = hickory(cfg)?;
    let servers = match cfg.nameserver {
        Some(addr) => format!("{addr} (dns_server)"),
        None => system_servers(r.config()),
    };
    Ok(Resolver { r, servers })
}

fn hickory(cfg: &DnsConfig) -> Result<TokioResolver, DnsError> {
    let provider = TokioConnectionProvider::default();
    let builder = match cfg.nameserver {
        Some(addr) => {
            let mut rc = ResolverConfig::new();
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            TokioResolver::builder_with_config(rc, provider)
        }
        None => match TokioResolver::builder(provider) {
            Ok(b) => b,
            // No nameserver configured (an empty or missing
            // /etc/resolv.conf: a machine without network): the hosts file
            // and `localhost` still answer, every other name fails.
            Err(e) => {
                tracing::warn!(
                    "no usable nameserver in {RESOLV_CONF} ({e}): DNS look-ups answer only from the hosts file and for localhost"
                );
                TokioResolver::builder_with_config(
                    ResolverConfig::new(),
                    TokioConnectionProvider::default(),
                )
            }
        },
    };
    Ok(tuned(builder))
}

/// The resolver `builder` makes, with liveconf's options.
fn tuned(mut builder: hickory_resolver::ResolverBuilder<TokioConnectionProvider>) -> TokioResolver {
    let o = builder.options_mut();
    o.timeout = QUERY_TIMEOUT;
    o.attempts = ATTEMPTS;
    o.cache_size = 0;
    // Both address families (the default asks AAAA only without an A).
    o.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    // One query at a time per look-up: the next nameserver (of
    // /etc/resolv.conf) only when one fails, as libc does. hickory's
    // default (2) sends every query to two nameservers at once.
    o.num_concurrent_reqs = 1;
    builder.build()
}

/// What `/etc/resolv.conf` looked like (device, inode, mtime, size).
type Stamp = (u64, u64, i64, i64, u64);

/// The stamp of `/etc/resolv.conf` now, when it can be read.
fn resolv_conf_stamp() -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(RESOLV_CONF).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// The resolvers of the DNS thread, one per configuration.
#[derive(Default)]
struct Resolvers {
    /// Each resolver, with the stamp of `/etc/resolv.conf` it was built
    /// from (`None` for an explicit nameserver).
    built: HashMap<DnsConfig, (Option<Stamp>, Arc<Resolver>)>,
}

impl Resolvers {
    fn get(&mut self, cfg: &DnsConfig) -> Result<Arc<Resolver>, DnsError> {
        let stamp = match cfg.nameserver {
            Some(_) => None,
            None => resolv_conf_stamp(),
        };
        if let Some((s, r)) = self.built.get(cfg)
            && *s == stamp
        {
            return Ok(r.clone());
        }
        let r = Arc::new(resolver(cfg)?);
        #[cfg(test)]
        BUILT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cfg.clone());
        self.built.insert(cfg.clone(), (stamp, r.clone()));
        Ok(r)
    }
}

/// Every configuration a resolver was built for (tests count them).
#[cfg(test)]
static BUILT: std::sync::Mutex<Vec<DnsConfig>> = std::sync::Mutex::new(Vec::new());

type SrvAnswer = Result<SrvTargets, DnsError>;

/// An SRV record's targets, as etcd discovery uses them.
#[derive(Clone, Debug)]
pub struct SrvTargets {
    /// Sorted by priority, weight, target, port.
    pub targets: Vec<SrvTarget>,
    /// Seconds the answer may be kept (the lowest TTL of its records).
    pub ttl: u32,
}

/// A look-up to run on the DNS thread with the resolver of its
/// configuration; it replies by itself.
type Run = Box<
    dyn FnOnce(
            Result<Arc<Resolver>, DnsError>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// One look-up for the DNS thread.
struct Job {
    cfg: DnsConfig,
    run: Run,
}

/// The DNS thread's queue (started on first use, for the life of the process).
fn service() -> Result<&'static UnboundedSender<Job>, DnsError> {
    static SERVICE: OnceLock<Result<UnboundedSender<Job>, DnsError>> = OnceLock::new();
    SERVICE.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn start() -> Result<UnboundedSender<Job>, DnsError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DnsError::Runtime(Arc::new(e)))?;
    let (tx, mut rx) = unbounded_channel::<Job>();
    std::thread::Builder::new()
        .name("liveconf-dns".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut resolvers = Resolvers::default();
                while let Some(job) = rx.recv().await {
                    let resolver = resolvers.get(&job.cfg);
                    // Look-ups run side by side: one slow name holds up
                    // only those who asked for it.
                    tokio::spawn((job.run)(resolver));
                }
            })
        })
        .map_err(|e| DnsError::Thread(Arc::new(e)))?;
    Ok(tx)
}

async fn srv(r: &Resolver, name: &str) -> SrvAnswer {
    check_name(name)?;
    let answer = r.r.srv_lookup(name).await.map_err(|e| {
        match classify(e, &Query::new(Kind::Srv, name), &r.servers) {
            DnsError::NoSuchName { .. } | DnsError::NoData { .. } => {
                DnsError::NoRecord(name.to_string())
            }
            other => other,
        }
    })?;
    let mut targets = srv_targets(&answer, name)?;
    targets.sort();
    if targets.is_empty() {
        return Err(DnsError::EmptyAnswer);
    }
    Ok(SrvTargets {
        targets,
        ttl: lowest_ttl(answer.as_lookup()),
    })
}

/// The SRV targets of an answer, without those whose target is "." (RFC
/// 2782: "." means the service is decidedly not available, and only means
/// something alone); an answer of "." alone is [`DnsError::NotAvailable`].
fn srv_targets(
    answer: &hickory_resolver::lookup::SrvLookup,
    name: &str,
) -> Result<Vec<SrvTarget>, DnsError> {
    let mut dot = false;
    let out: Vec<SrvTarget> = answer
        .iter()
        .filter(|srv| {
            let root = srv.target().is_root();
            dot |= root;
            !root
        })
        .map(|srv| SrvTarget {
            priority: srv.priority(),
            weight: srv.weight(),
            target: srv.target().to_utf8().trim_end_matches('.').to_string(),
            port: srv.port(),
        })
        .collect();
    if out.is_empty() && dot {
        return Err(DnsError::NotAvailable {
            name: name.trim_end_matches('.').to_string(),
            ttl: lowest_ttl(answer.as_lookup()),
        });
    }
    Ok(out)
}

/// The addresses of `name`, as the nameserver of `cfg` answers (IPv4
/// first).
async fn ips(r: &Resolver, name: &str) -> Result<Vec<IpAddr>, DnsError> {
    check_name(name)?;
    let answer = r.r.lookup_ip(name).await.map_err(|e| {
        match classify(e, &Query::new(Kind::Ip, name), &r.servers) {
            DnsError::NoSuchName { .. } | DnsError::NoData { .. } => {
                DnsError::NoAddress(name.to_string())
            }
            other => other,
        }
    })?;
    let mut out: Vec<IpAddr> = answer.iter().collect();
    out.sort_by_key(|a| a.is_ipv6());
    if out.is_empty() {
        return Err(DnsError::NoAddress(name.to_string()));
    }
    Ok(out)
}

/// What a failed look-up of `q` from `servers` means: a real answer
/// (NXDOMAIN, NODATA), an error code from the nameserver, or no answer
/// (a timeout, an unreachable nameserver), each naming the nameservers
/// and without hickory's "proto error: ".
fn classify(e: ResolveError, q: &Query, servers: &str) -> DnsError {
    use hickory_resolver::proto::ProtoErrorKind;
    use hickory_resolver::proto::op::ResponseCode;
    let servers = servers.to_string();
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound {
            response_code,
            negative_ttl,
            ..
        }) => {
            let (kind, name, ttl) = (q.kind, q.name.clone(), *negative_ttl);
            match *response_code {
                ResponseCode::NXDomain => DnsError::NoSuchName { kind, name, ttl },
                ResponseCode::NoError => DnsError::NoData { kind, name, ttl },
                code => DnsError::Server {
                    code: code.to_string(),
                    name,
                    servers,
                },
            }
        }
        Some(ProtoErrorKind::Timeout) => DnsError::Timeout {
            servers,
            within: QUERY_TIMEOUT,
            tries: Some(ATTEMPTS + 1),
        },
        Some(ProtoErrorKind::Io(io)) => DnsError::Lookup {
            servers,
            message: format!("cannot be reached: {io}"),
        },
        Some(ProtoErrorKind::NoConnections) => DnsError::Lookup {
            servers,
            message: "cannot be reached (no connection could be made)".into(),
        },
        _ => DnsError::Lookup {
            servers,
            message: without_proto(&e.to_string()).to_string(),
        },
    }
}

/// The lowest TTL of an answer's records (the answer's TTL).
fn lowest_ttl(l: &hickory_resolver::lookup::Lookup) -> u32 {
    l.records()
        .iter()
        .map(|r| r.ttl())
        .min()
        .unwrap_or(u32::MAX)
}

/// The records of `q`, sorted, with the answer's TTL.
async fn records(resolver: &Resolver, q: &Query) -> Result<Answer, DnsError> {
    use hickory_resolver::proto::rr::{RData, RecordType};
    check_name(&q.name)?;
    let (r, servers) = (&resolver.r, resolver.servers.as_str());
    // A fully qualified name: no search domains.
    let name = format!("{}.", q.name);
    let mut ttl = u32::MAX;
    let records = match q.kind {
        Kind::Ip => {
            let l = r
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| classify(e, q, servers))?;
            ttl = ttl.min(lowest_ttl(l.as_lookup()));
            let mut v: Vec<IpAddr> = l.iter().collect();
            v.sort();
            v.dedup();
            Records::Ip(v)
        }
        Kind::Srv => {
            let l = r
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| classify(e, q, servers))?;
            ttl = ttl.min(lowest_ttl(l.as_lookup()));
            let mut v = srv_targets(&l, &q.name)?;
            v.sort();
            v.dedup();
            Records::Srv(v)
        }
        Kind::Txt => {
            let l = r
                .txt_lookup(name.as_str())
                .await
                .map_err(|e| classify(e, q, servers))?;
            ttl = ttl.min(lowest_ttl(l.as_lookup()));
            let mut v: Vec<String> = l
                .iter()
                .map(|t| {
                    let bytes: Vec<u8> = t
                        .txt_data()
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .collect();
            v.sort();
            Records::Txt(v)
        }
        Kind::Uri => {
            let l = r
                .lookup(name.as_str(), RecordType::Unknown(URI_TYPE))
                .await
                .map_err(|e| classify(e, q, servers))?;
            let mut v = Vec::new();
            for rec in l.records() {
                // hickory has no URI type: its data comes as opaque bytes,
                // RFC 7553's priority (16 bits), weight (16 bits), target
                // (the rest).
                let RData::Unknown { code, rdata } = rec.data() else {
                    continue;
                };
                if u16::from(*code) != URI_TYPE {
                    continue;
                }
                ttl = ttl.min(rec.ttl());
                let b = rdata.anything();
                if b.len() < 4 {
                    return Err(DnsError::BadUri(q.name.clone(), b.len()));
                }
                v.push(UriRecord {
                    priority: u16::from_be_bytes([b[0], b[1]]),
                    weight: u16::from_be_bytes([b[2], b[3]]),
                    target: String::from_utf8_lossy(&b[4..]).into_owned(),
                });
            }
            v.sort();
            v.dedup();
            Records::Uri(v)
        }
    };
    if records.is_empty() {
        return Err(DnsError::NoData {
            kind: q.kind,
            name: q.name.clone(),
            ttl: (ttl != u32::MAX).then_some(ttl),
        });
    }
    Ok(Answer {
        records,
        ttl: if ttl == u32::MAX { 0 } else { ttl },
    })
}

/// The URI record's type (RFC 7553).
const URI_TYPE: u16 = 256;

/// Looks `q` up through the nameserver of `cfg`, on the DNS thread.
pub async fn resolve(cfg: &DnsConfig, q: &Query) -> Result<Answer, DnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let q2 = q.clone();
    submit(
        cfg,
        move |r| async move { records(&r, &q2).await },
        move |a| {
            let _ = tx.send(a);
        },
    )?;
    rx.await.map_err(|_| DnsError::Dropped)?
}

/// [`resolve`] from synchronous code (the template functions, on the
/// render's blocking thread). Never call it on an async worker thread.
pub fn resolve_blocking(cfg: &DnsConfig, q: &Query) -> Result<Answer, DnsError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let q2 = q.clone();
    submit(
        cfg,
        move |r| async move { records(&r, &q2).await },
        move |a| {
            let _ = tx.send(a);
        },
    )?;
    wait(rx)
}

fn wait<T>(rx: std::sync::mpsc::Receiver<Result<T, DnsError>>) -> Result<T, DnsError> {
    match rx.recv_timeout(LOOKUP_LIMIT + Duration::from_secs(1)) {
        Ok(a) => a,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(DnsError::NoAnswer),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(DnsError::Dropped),
    }
}

/// Hands a look-up to the DNS thread: `look` runs there with the resolver,
/// bounded by [`LOOKUP_LIMIT`]; `reply` is called with its answer.
fn submit<T, F>(
    cfg: &DnsConfig,
    look: impl FnOnce(Arc<Resolver>) -> F + Send + 'static,
    reply: impl FnOnce(Result<T, DnsError>) + Send + 'static,
) -> Result<(), DnsError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, DnsError>> + Send + 'static,
{
    let run: Run = Box::new(move |resolver| {
        Box::pin(async move {
            let answer = match resolver {
                Ok(r) => {
                    let servers = r.servers.clone();
                    match tokio::time::timeout(LOOKUP_LIMIT, look(r)).await {
                        Ok(a) => a,
                        Err(_) => Err(DnsError::Timeout {
                            servers,
                            within: LOOKUP_LIMIT,
                            tries: None,
                        }),
                    }
                }
                Err(e) => Err(e),
            };
            reply(answer);
        })
    });
    service()?
        .send(Job {
            cfg: cfg.clone(),
            run,
        })
        .map_err(|_| DnsError::Stopped)
}

async fn srv_job(r: Arc<Resolver>, name: String) -> SrvAnswer {
    srv(&r, &name).await
}

async fn ip_job(r: Arc<Resolver>, name: String) -> Result<Vec<IpAddr>, DnsError> {
    ips(&r, &name).await
}

/// Looks up the addresses of `name` (A and AAAA, IPv4 first) through the
/// nameserver of `cfg`: the SRV targets etcd discovery found through an
/// explicit `dns_server`, which the system resolver may not know.
pub async fn lookup_ip(cfg: &DnsConfig, name: &str) -> Result<Vec<IpAddr>, DnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = name.to_string();
    submit(
        cfg,
        move |r| ip_job(r, name),
        move |a| {
            let _ = tx.send(a);
        },
    )?;
    rx.await.map_err(|_| DnsError::Dropped)?
}

/// Looks up the SRV records of `name`, sorted by priority, weight, target.
pub async fn lookup_srv(cfg: &DnsConfig, name: &str) -> SrvAnswer {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = name.to_string();
    submit(
        cfg,
        move |r| srv_job(r, name),
        move |a| {
            let _ = tx.send(a);
        },
    )?;
    rx.await.map_err(|_| DnsError::Dropped)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A UDP nameserver on 127.0.0.1 answering every query with NXDOMAIN;
    /// counts the queries.
    fn nxdomain_server() -> (SocketAddr, Arc<AtomicUsize>) {
        negative_server(None)
    }

    /// A UDP nameserver on 127.0.0.1 answering every query with NXDOMAIN,
    /// with an SOA of TTL and MINIMUM `soa` in its authority section when
    /// given (a negative answer resolvers may trust and keep that long);
    /// counts the queries.
    fn negative_server(soa: Option<u32>) -> (SocketAddr, Arc<AtomicUsize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let q = &buf[..n];
                if n < 12 {
                    continue;
                }
                let mut i = 12;
                while i < n && q[i] != 0 {
                    i += 1 + q[i] as usize;
                }
                let end = (i + 5).min(n);
                let mut r = Vec::with_capacity(end);
                r.extend_from_slice(&q[0..2]);
                r.push(0x80 | (q[2] & 0x79) | 0x04);
                r.push(0x80 | 3);
                let ns = u8::from(soa.is_some());
                r.extend_from_slice(&[0, 1, 0, 0, 0, ns, 0, 0]);
                r.extend_from_slice(&q[12..end]);
                if let Some(ttl) = soa {
                    // The question's name (a pointer to it), SOA, IN, TTL;
                    // MNAME and RNAME the root, then serial, refresh,
                    // retry, expire, minimum.
                    r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
                    r.extend_from_slice(&ttl.to_be_bytes());
                    r.extend_from_slice(&22u16.to_be_bytes());
                    r.extend_from_slice(&[0, 0]);
                    for v in [1u32, 60, 60, 600, ttl] {
                        r.extend_from_slice(&v.to_be_bytes());
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = sock.send_to(&r, peer);
            }
        });
        (addr, seen)
    }

    fn lookup_srv_blocking(cfg: &DnsConfig, name: &str) -> Result<Answer, DnsError> {
        resolve_blocking(cfg, &Query::new(Kind::Srv, name))
    }

    fn builds_of(cfg: &DnsConfig) -> usize {
        BUILT.lock().unwrap().iter().filter(|c| *c == cfg).count()
    }

    /// Trial finding 3: one query goes out per look-up, to one
    /// nameserver: with two nameservers (as /etc/resolv.conf may list),
    /// the second is asked only when the first fails; an explicit
    /// `dns_server` (UDP and TCP) gets one query.
    #[test]
    fn one_query_goes_out_per_look_up() {
        // Negative answers with an SOA: trusted, so the other nameserver
        // is not asked for a second opinion.
        let (a, qa) = negative_server(Some(30));
        let (b, qb) = negative_server(Some(30));
        let mut rc = ResolverConfig::new();
        for addr in [a, b] {
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        }
        let r = Resolver {
            r: tuned(TokioResolver::builder_with_config(
                rc,
                TokioConnectionProvider::default(),
            )),
            servers: "test".into(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for i in 0..3 {
            let q = Query::new(Kind::Txt, &format!("n{i}.one.example.test"));
            let e = rt.block_on(records(&r, &q)).unwrap_err();
            assert!(e.is_answer(), "{e}");
        }
        let sent = qa.load(Ordering::SeqCst) + qb.load(Ordering::SeqCst);
        assert_eq!(
            sent,
            3,
            "3 look-ups sent {sent} queries ({} + {})",
            qa.load(Ordering::SeqCst),
            qb.load(Ordering::SeqCst)
        );
        let cfg = DnsConfig {
            nameserver: Some(a),
        };
        let before = qa.load(Ordering::SeqCst);
        for i in 0..2 {
            let q = Query::new(Kind::Srv, &format!("_x._tcp.n{i}.one.example.test"));
            assert!(resolve_blocking(&cfg, &q).unwrap_err().is_answer());
        }
        assert_eq!(qa.load(Ordering::SeqCst) - before, 2);
    }

    /// Trial finding 8: a negative answer's TTL is the SOA's negative
    /// caching TTL when the nameserver sends an SOA, and unknown without.
    #[test]
    fn a_negative_answer_has_the_ttl_of_its_soa_or_none() {
        for (soa, want) in [(Some(45), Some(45)), (None, None)] {
            let (addr, _) = negative_server(soa);
            let cfg = DnsConfig {
                nameserver: Some(addr),
            };
            let e =
                resolve_blocking(&cfg, &Query::new(Kind::Txt, "gone.example.test")).unwrap_err();
            assert!(matches!(e, DnsError::NoSuchName { .. }), "{e}");
            assert_eq!(e.negative_ttl(), want, "{soa:?}");
        }
    }

    #[test]
    fn one_resolver_per_config_and_every_look_up_asks_the_nameserver() {
        let (addr, queries) = nxdomain_server();
        let cfg = DnsConfig {
            nameserver: Some(addr),
        };
        for i in 0..3 {
            let name = format!("_x._tcp.n{i}.example.test");
            let e = lookup_srv_blocking(&cfg, &name).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("no SRV record for {name}: the name does not exist (NXDOMAIN)")
            );
            assert!(e.is_answer());
        }
        // The same name again is asked again (no cache: a changed record
        // is seen by the next render).
        let e = lookup_srv_blocking(&cfg, "_x._tcp.n0.example.test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no SRV record"), "{e}");
        assert!(queries.load(Ordering::SeqCst) >= 4);
        // From async code too, on the caller's runtime, same resolver.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(lookup_srv(&cfg, "_x._tcp.async.example.test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no SRV record"), "{e}");
        assert_eq!(builds_of(&cfg), 1);
    }

    /// The MediaWiki example's DNS-fed resource looks up `localhost`: it
    /// must answer on a machine whose nameserver never does (no network).
    #[test]
    fn localhost_answers_without_asking_the_nameserver() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = DnsConfig {
            nameserver: Some(silent.local_addr().unwrap()),
        };
        let t = Instant::now();
        let a = resolve_blocking(&cfg, &Query::new(Kind::Ip, "localhost")).unwrap();
        assert!(t.elapsed() < QUERY_TIMEOUT, "took {:?}", t.elapsed());
        let Records::Ip(ips) = a.records else {
            panic!("{a:?}")
        };
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{ips:?}");
        drop(silent);
    }

    /// Trial finding 5: a nameserver that does not answer is named, with
    /// where it comes from, and hickory's "proto error:" is not shown.
    #[test]
    fn a_look_up_that_gets_no_answer_names_the_nameserver() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let cfg = DnsConfig {
            nameserver: Some(addr),
        };
        let e = resolve_blocking(&cfg, &Query::new(Kind::Txt, "t.silent.example.test"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("no answer from {addr} (dns_server) within 2s, asked 3 times")
        );
        drop(silent);
        // A port nobody listens on.
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let cfg = DnsConfig {
            nameserver: Some(addr),
        };
        let e = resolve_blocking(&cfg, &Query::new(Kind::Txt, "t.gone.example.test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{addr} (dns_server)")), "{e}");
        assert!(!e.contains("proto error"), "{e}");
        // The nameservers of /etc/resolv.conf, each once, said so.
        let mut rc = ResolverConfig::new();
        for a in ["10.0.0.1:53", "10.0.0.2:53"] {
            let a: SocketAddr = a.parse().unwrap();
            rc.add_name_server(NameServerConfig::new(a, Protocol::Udp));
            rc.add_name_server(NameServerConfig::new(a, Protocol::Tcp));
        }
        assert_eq!(
            system_servers(&rc),
            "10.0.0.1:53, 10.0.0.2:53 (/etc/resolv.conf)"
        );
        assert_eq!(
            system_servers(&ResolverConfig::new()),
            "no nameserver (/etc/resolv.conf lists none)"
        );
    }

    #[test]
    fn a_nameserver_that_never_answers_is_bounded_and_holds_up_no_other_look_up() {
        // Bound, never read: queries go unanswered.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let slow = DnsConfig {
            nameserver: Some(silent.local_addr().unwrap()),
        };
        let (addr, _) = nxdomain_server();
        let fast = DnsConfig {
            nameserver: Some(addr),
        };
        let start = Instant::now();
        let hung: Vec<_> = (0..2)
            .map(|i| {
                let slow = slow.clone();
                std::thread::spawn(move || {
                    lookup_srv_blocking(&slow, &format!("_x._tcp.h{i}.example.test"))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let e = lookup_srv_blocking(&fast, "_x._tcp.fast.example.test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no SRV record"), "{e}");
        assert!(
            t.elapsed() < QUERY_TIMEOUT,
            "a look-up waited {:?} behind hung ones",
            t.elapsed()
        );
        for h in hung {
            assert!(h.join().unwrap().is_err());
        }
        assert!(
            start.elapsed() < LOOKUP_LIMIT + Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        drop(silent);
    }
}
