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

/// Keys fetched per range request.
pub const PAGE: i64 = 5_000;

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
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| EtcdError::Settings(format!("cannot read {what} {}: {e}", path.display())))
}

/// Describes an etcd-client error in one line, without secrets.
pub fn describe(e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message();
            if msg.is_empty() {
                format!("{:?}", s.code())
            } else {
                msg.to_string()
            }
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
            let name = format!("{}.{}", s.srv_record.trim_end_matches('.'), domain.trim_end_matches('.'));
            let cfg = DnsConfig {
                nameserver: s.dns_server,
            };
            let targets = dns::lookup_srv(&cfg, &name)
                .await
                .map_err(|e| EtcdError::Settings(format!("SRV discovery of {name}: {e}")))?;
            let scheme = if tls_wanted || s.srv_record.contains("-ssl") { "https" } else { "http" };
            endpoints.extend(targets.into_iter().map(|t| format!("{scheme}://{}:{}", t.target, t.port)));
        }
        if endpoints.is_empty() {
            endpoints.push("http://127.0.0.1:2379".into());
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
                    tls = tls.identity(Identity::from_pem(read(c, "certificate")?, read(k, "key")?));
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
            let pw = String::from_utf8_lossy(&read(pw_file, "password file")?)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            options = options.with_user(user.clone(), pw).with_auto_token_refresh(true);
        }
        Ok(Connection {
            endpoints,
            options,
            request_timeout: s.request_timeout,
            connect_timeout: s.connect_timeout,
        })
    }

    fn unavailable(&self, message: String) -> EtcdError {
        EtcdError::Unavailable {
            endpoints: self.endpoints.join(","),
            message,
        }
    }

    /// Connects (and authenticates), within the connect timeout.
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        let limit = self.connect_timeout + self.request_timeout;
        match tokio::time::timeout(limit, Client::connect(&self.endpoints, Some(self.options.clone()))).await {
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
            let resp = self.get(client, b"\0".to_vec(), GetOptions::new().with_count_only(), 0).await?;
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        for root in roots {
            let (mut start, end) = range_of(&root);
            loop {
                let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                let mut resp = self.get(client, start.clone(), opts, revision).await?;
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
        Ok(Snapshot::from_pairs(revision, pairs))
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
        match tokio::time::timeout(self.request_timeout, client.get(key, Some(opts))).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                if s.message().contains("compacted") =>
            {
                Err(EtcdError::Compacted(revision))
            }
            Ok(Err(e)) => Err(self.unavailable(describe(&e))),
            Err(_) => Err(self.unavailable(format!(
                "no answer within {}",
                humantime::format_duration(self.request_timeout)
            ))),
        }
    }
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
