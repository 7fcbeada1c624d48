//! DNS look-ups: SRV records (endpoint discovery, `lookup_srv`).
//!
//! Uses hickory's resolver with the system configuration
//! (`/etc/resolv.conf`), or one explicit nameserver (`dns_server` in
//! liveconf.toml, also what tests point at a local DNS server).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

/// Which nameserver to ask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

fn resolver(cfg: &DnsConfig) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match cfg.nameserver {
        Some(addr) => {
            let mut rc = ResolverConfig::new();
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            rc.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            TokioResolver::builder_with_config(rc, provider)
        }
        None => TokioResolver::builder(provider).map_err(|e| e.to_string())?,
    };
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 2;
    Ok(builder.build())
}

/// Looks up the SRV records of `name`, sorted by priority, weight, target.
pub async fn lookup_srv(cfg: &DnsConfig, name: &str) -> Result<Vec<SrvTarget>, String> {
    let r = resolver(cfg)?;
    let answer = r.srv_lookup(name).await.map_err(|e| {
        if e.is_no_records_found() {
            format!("no SRV record for {name}")
        } else {
            e.to_string()
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
        return Err("no SRV record".into());
    }
    Ok(out)
}

/// [`lookup_srv`] from synchronous code (template functions), on a
/// short-lived thread of its own so it never nests inside a runtime.
pub fn lookup_srv_blocking(cfg: &DnsConfig, name: &str) -> Result<Vec<SrvTarget>, String> {
    let cfg = cfg.clone();
    let name = name.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(lookup_srv(&cfg, &name))
    })
    .join()
    .map_err(|_| "the look-up thread failed".to_string())?
}
