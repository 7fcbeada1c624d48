//! DNS look-ups: SRV records (endpoint discovery, `lookup_srv`), and the
//! addresses of SRV targets when discovery uses an explicit nameserver.
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

/// Why a look-up found no SRV targets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// The name has no SRV record (NXDOMAIN, or no record of that type).
    #[error("no SRV record for {0}")]
    NoRecord(String),
    /// The name has no address (A or AAAA record).
    #[error("no address (A or AAAA record) for {0}")]
    NoAddress(String),
    /// An answer that holds no record.
    #[error("no SRV record")]
    EmptyAnswer,
    /// The look-up failed (a nameserver's error, its timeout).
    #[error("{0}")]
    Lookup(ResolveError),
    /// Nothing came back within [`LOOKUP_LIMIT`].
    #[error("no answer within {}s", LOOKUP_LIMIT.as_secs())]
    NoAnswer,
    /// The resolver could not be set up (the system configuration).
    #[error("{0}")]
    Resolver(ResolveError),
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

/// How long one nameserver query waits (hickory's `timeout`).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a look-up may take, whatever the nameservers do (hickory's
/// timeout × attempts stays well below it; this is the backstop).
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

const RESOLV_CONF: &str = "/etc/resolv.conf";

fn resolver(cfg: &DnsConfig) -> Result<TokioResolver, DnsError> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match cfg.nameserver {
        Some(addr) => {
            let mut rc = ResolverConfig::new();
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            TokioResolver::builder_with_config(rc, provider)
        }
        None => TokioResolver::builder(provider).map_err(DnsError::Resolver)?,
    };
    builder.options_mut().timeout = QUERY_TIMEOUT;
    builder.options_mut().attempts = 2;
    builder.options_mut().cache_size = 0;
    Ok(builder.build())
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
    built: HashMap<DnsConfig, (Option<Stamp>, Arc<TokioResolver>)>,
}

impl Resolvers {
    fn get(&mut self, cfg: &DnsConfig) -> Result<Arc<TokioResolver>, DnsError> {
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

type Answer = Result<Vec<SrvTarget>, DnsError>;

/// A look-up to run on the DNS thread with the resolver of its
/// configuration; it replies by itself.
type Run = Box<
    dyn FnOnce(
            Result<Arc<TokioResolver>, DnsError>,
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

async fn srv(r: &TokioResolver, name: &str) -> Answer {
    let answer = r.srv_lookup(name).await.map_err(|e| {
        if e.is_no_records_found() {
            DnsError::NoRecord(name.to_string())
        } else {
            DnsError::Lookup(e)
        }
    })?;
    let mut out: Vec<SrvTarget> = answer
        .iter()
        .map(|srv| SrvTarget {
            priority: srv.priority(),
            weight: srv.weight(),
            target: srv.target().to_utf8().trim_end_matches('.').to_string(),
            port: srv.port(),
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(DnsError::EmptyAnswer);
    }
    Ok(out)
}

/// The addresses of `name`, as the nameserver of `cfg` answers (IPv4
/// first).
async fn ips(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, DnsError> {
    let answer = r.lookup_ip(name).await.map_err(|e| {
        if e.is_no_records_found() {
            DnsError::NoAddress(name.to_string())
        } else {
            DnsError::Lookup(e)
        }
    })?;
    let mut out: Vec<IpAddr> = answer.iter().collect();
    out.sort_by_key(|a| a.is_ipv6());
    if out.is_empty() {
        return Err(DnsError::NoAddress(name.to_string()));
    }
    Ok(out)
}

/// Hands a look-up to the DNS thread: `look` runs there with the resolver,
/// bounded by [`LOOKUP_LIMIT`]; `reply` is called with its answer.
fn submit<T, F>(
    cfg: &DnsConfig,
    name: &str,
    look: fn(Arc<TokioResolver>, String) -> F,
    reply: impl FnOnce(Result<T, DnsError>) + Send + 'static,
) -> Result<(), DnsError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, DnsError>> + Send + 'static,
{
    let name = name.to_string();
    let run: Run = Box::new(move |resolver| {
        Box::pin(async move {
            let answer = match resolver {
                Ok(r) => match tokio::time::timeout(LOOKUP_LIMIT, look(r, name)).await {
                    Ok(a) => a,
                    Err(_) => Err(DnsError::NoAnswer),
                },
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

async fn srv_job(r: Arc<TokioResolver>, name: String) -> Answer {
    srv(&r, &name).await
}

async fn ip_job(r: Arc<TokioResolver>, name: String) -> Result<Vec<IpAddr>, DnsError> {
    ips(&r, &name).await
}

/// Looks up the addresses of `name` (A and AAAA, IPv4 first) through the
/// nameserver of `cfg`: the SRV targets etcd discovery found through an
/// explicit `dns_server`, which the system resolver may not know.
pub async fn lookup_ip(cfg: &DnsConfig, name: &str) -> Result<Vec<IpAddr>, DnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(cfg, name, ip_job, move |a| {
        let _ = tx.send(a);
    })?;
    rx.await.map_err(|_| DnsError::Dropped)?
}

/// Looks up the SRV records of `name`, sorted by priority, weight, target.
pub async fn lookup_srv(cfg: &DnsConfig, name: &str) -> Answer {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(cfg, name, srv_job, move |a| {
        let _ = tx.send(a);
    })?;
    rx.await.map_err(|_| DnsError::Dropped)?
}

/// [`lookup_srv`] from synchronous code (the template functions, on the
/// render's blocking thread): waits for the DNS thread's answer. Never call
/// it on an async worker thread — it blocks for as long as the look-up
/// takes (at most [`LOOKUP_LIMIT`]).
pub fn lookup_srv_blocking(cfg: &DnsConfig, name: &str) -> Answer {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    submit(cfg, name, srv_job, move |a| {
        let _ = tx.send(a);
    })?;
    match rx.recv_timeout(LOOKUP_LIMIT + Duration::from_secs(1)) {
        Ok(a) => a,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(DnsError::NoAnswer),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(DnsError::Dropped),
    }
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
                r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
                r.extend_from_slice(&q[12..end]);
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = sock.send_to(&r, peer);
            }
        });
        (addr, seen)
    }

    fn builds_of(cfg: &DnsConfig) -> usize {
        BUILT.lock().unwrap().iter().filter(|c| *c == cfg).count()
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
            assert_eq!(e.to_string(), format!("no SRV record for {name}"));
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
