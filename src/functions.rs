//! The template functions and filters liveconf adds to Tera.
//!
//! Tera functions are registered once per template set, but each render
//! reads a different snapshot under a different prefix. The renderer
//! therefore installs a [`Scope`] in a thread-local for the duration of one
//! (synchronous) render, and the functions read it. Keys given to and
//! returned by the functions are relative to the resource's prefix; a key
//! outside the resource's watched `keys` is an error, because the daemon
//! would not re-render when it changes.

use std::cell::RefCell;
use std::net::ToSocketAddrs;

use globset::GlobBuilder;
use tera::{Error, Kwargs, State, TeraResult, Value};

use crate::encode::{self, Decode};
use crate::keypath;
use crate::store::{Snapshot, is_at_or_below};

/// What the functions of one render may read.
pub struct Scope {
    /// The snapshot being rendered.
    pub snapshot: Snapshot,
    /// The resource's absolute prefix (normalised, "" for the root).
    pub prefix: String,
    /// The absolute prefixes the resource watches.
    pub watched: Vec<String>,
    /// DNS settings for `lookup_srv`.
    pub dns: crate::dns::DnsConfig,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` with `scope` visible to the template functions on this thread.
pub fn with_scope<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SCOPE.with(|s| s.borrow_mut().take());
        }
    }
    SCOPE.with(|s| *s.borrow_mut() = Some(scope));
    let _reset = Reset;
    f()
}

fn scoped<R>(f: impl FnOnce(&Scope) -> TeraResult<R>) -> TeraResult<R> {
    SCOPE.with(|s| match &*s.borrow() {
        Some(scope) => f(scope),
        None => Err(Error::message(
            "key functions are only available while rendering a resource",
        )),
    })
}

impl Scope {
    fn abs(&self, rel: &str) -> String {
        keypath::absolute(&self.prefix, rel)
    }

    fn rel<'a>(&self, abs: &'a str) -> &'a str {
        keypath::relative(&self.prefix, abs).unwrap_or(abs)
    }

    fn watched_key(&self, rel: &str) -> TeraResult<String> {
        let abs = self.abs(rel);
        if self.watched.iter().any(|w| is_at_or_below(&abs, w)) {
            Ok(abs)
        } else {
            Err(Error::message(format!(
                "key {rel} ({abs}) is outside this resource's keys; add its prefix to `keys` so changes to it are watched"
            )))
        }
    }

    fn text(&self, abs: &str) -> TeraResult<Option<String>> {
        match self.snapshot.get(abs) {
            None => Ok(None),
            Some(v) => encode::value_str(self.rel(abs), v)
                .map(|s| Some(s.to_string()))
                .map_err(|e| Error::message(e.to_string())),
        }
    }

    /// Keys under the absolute `dir` that are also watched, in order.
    fn keys_below<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.snapshot
            .subtree(dir)
            .filter(move |(k, _)| self.watched.iter().any(|w| is_at_or_below(k, w)))
            .map(|(k, v)| (&**k, &**v))
    }

    fn glob(&self, pattern: &str) -> TeraResult<Vec<(String, String)>> {
        let rel_pattern = if pattern.starts_with('/') {
            pattern.to_string()
        } else {
            format!("/{pattern}")
        };
        let matcher = GlobBuilder::new(&rel_pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::message(format!("invalid pattern {pattern:?}: {e}")))?
            .compile_matcher();
        let dir = self.abs(keypath::glob_literal_dir(&rel_pattern));
        let dir = dir.trim_end_matches('/');
        let mut out = Vec::new();
        for (k, v) in self.keys_below(dir) {
            let rel = self.rel(k);
            if matcher.is_match(rel) {
                let s = encode::value_str(rel, v).map_err(|e| Error::message(e.to_string()))?;
                out.push((rel.to_string(), s.to_string()));
            }
        }
        Ok(out)
    }

    /// Names of the direct children of the relative `path`, sorted, and
    /// whether each has children. (Keys arrive in byte order, where
    /// `/a-b` sorts between `/a` and `/a/x`, so names are merged in a map.)
    fn children(&self, path: &str) -> Vec<(String, bool)> {
        let dir = self.abs(path);
        let dir = dir.trim_end_matches('/').to_string();
        let mut out: std::collections::BTreeMap<String, bool> = std::collections::BTreeMap::new();
        for (k, _) in self.keys_below(&dir) {
            let Some(rest) = keypath::relative(&dir, k) else {
                continue;
            };
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            if rest.is_empty() {
                continue;
            }
            let (name, deeper) = match rest.split_once('/') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            *out.entry(name.to_string()).or_default() |= deeper;
        }
        out.into_iter().collect()
    }
}

fn pair(key: &str, value: &str) -> Value {
    let mut m = tera::Map::new();
    m.insert("key".into(), Value::from(key));
    m.insert("value".into(), Value::from(value));
    Value::from(m)
}

/// `getv(key=K, default=D?)`: the value, or the default, or an error.
pub fn getv(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let key: &str = kwargs.must_get("key")?;
    let default: Option<&str> = kwargs.get("default")?;
    scoped(|s| {
        let abs = s.watched_key(key)?;
        match (s.text(&abs)?, default) {
            (Some(v), _) => Ok(Value::from(v)),
            (None, Some(d)) => Ok(Value::from(d)),
            (None, None) => Err(Error::message(format!("key {key} not found ({abs})"))),
        }
    })
}

/// `get(key=K)`: `{key, value}`, or an error when missing.
pub fn get(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let key: &str = kwargs.must_get("key")?;
    scoped(|s| {
        let abs = s.watched_key(key)?;
        match s.text(&abs)? {
            Some(v) => Ok(pair(s.rel(&abs), &v)),
            None => Err(Error::message(format!("key {key} not found ({abs})"))),
        }
    })
}

/// `exists(key=K)`: whether the key holds a value.
pub fn exists(kwargs: Kwargs, _: &State) -> TeraResult<bool> {
    let key: &str = kwargs.must_get("key")?;
    scoped(|s| {
        let abs = s.watched_key(key)?;
        Ok(s.snapshot.get(&abs).is_some())
    })
}

/// `gets(pattern=GLOB)`: `[{key, value}]` sorted by key.
pub fn gets(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let pattern: &str = kwargs.must_get("pattern")?;
    scoped(|s| {
        let items = s.glob(pattern)?;
        Ok(Value::from(
            items.iter().map(|(k, v)| pair(k, v)).collect::<Vec<_>>(),
        ))
    })
}

/// `getvs(pattern=GLOB)`: values sorted by key.
pub fn getvs(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let pattern: &str = kwargs.must_get("pattern")?;
    scoped(|s| {
        let items = s.glob(pattern)?;
        Ok(Value::from(
            items
                .into_iter()
                .map(|(_, v)| Value::from(v))
                .collect::<Vec<_>>(),
        ))
    })
}

/// `ls(path=P)`: sorted names of the children of P.
pub fn ls(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let path: &str = kwargs.get("path")?.unwrap_or("/");
    scoped(|s| {
        Ok(Value::from(
            s.children(path)
                .into_iter()
                .map(|(n, _)| Value::from(n))
                .collect::<Vec<_>>(),
        ))
    })
}

/// `lsdir(path=P)`: sorted names of the children of P that have children.
pub fn lsdir(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let path: &str = kwargs.get("path")?.unwrap_or("/");
    scoped(|s| {
        Ok(Value::from(
            s.children(path)
                .into_iter()
                .filter(|(_, dir)| *dir)
                .map(|(n, _)| Value::from(n))
                .collect::<Vec<_>>(),
        ))
    })
}

/// `tree(prefix=P, decode="json"?)`: the nested map of the subtree at P.
pub fn tree(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let path: &str = kwargs.get("prefix")?.unwrap_or("/");
    let decode = match kwargs.get::<&str>("decode")? {
        None | Some("string") | Some("") => Decode::String,
        Some("json") => Decode::Json,
        Some(other) => {
            return Err(Error::message(format!(
                "tree: decode must be \"json\" or \"string\", not {other:?}"
            )));
        }
    };
    scoped(|s| {
        let base = s.abs(path);
        let base = base.trim_end_matches('/');
        let entries = s
            .keys_below(base)
            .map(|(k, v)| (keypath::relative(base, k).unwrap_or(k), v));
        let json = encode::build_tree(entries, decode).map_err(|e| {
            Error::message(match e {
                encode::EncodeError::SingleKey => format!("tree(prefix={path:?}): {path} {e}"),
                e => format!("tree(prefix={path:?}): {e} (relative to {path})"),
            })
        })?;
        Ok(encode::to_tera(&json))
    })
}

/// `getenv(name=N, default=D?)`: an environment variable.
pub fn getenv(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let name: &str = kwargs.must_get("name")?;
    let default: Option<&str> = kwargs.get("default")?;
    match (std::env::var(name), default) {
        (Ok(v), _) => Ok(Value::from(v)),
        (Err(_), Some(d)) => Ok(Value::from(d)),
        (Err(_), None) => Err(Error::message(format!(
            "environment variable {name} is not set (give default=... to allow that)"
        ))),
    }
}

/// `lookup_ip(host=H)`: the host's addresses, sorted.
pub fn lookup_ip(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let host: &str = kwargs.must_get("host")?;
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| Error::message(format!("lookup_ip({host}): {e}")))?;
    let mut ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(Error::message(format!("lookup_ip({host}): no address")));
    }
    Ok(Value::from(
        ips.into_iter()
            .map(|ip| Value::from(ip.to_string()))
            .collect::<Vec<_>>(),
    ))
}

/// `lookup_srv(name=N)`: the SRV targets as `{target, port, priority, weight}`, sorted.
pub fn lookup_srv(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let name: &str = kwargs.must_get("name")?;
    let dns = scoped(|s| Ok(s.dns.clone())).unwrap_or_default();
    let records = crate::dns::lookup_srv_blocking(&dns, name)
        .map_err(|e| Error::message(format!("lookup_srv({name}): {e}")))?;
    Ok(Value::from(
        records
            .into_iter()
            .map(|r| {
                let mut m = tera::Map::new();
                m.insert("target".into(), Value::from(r.target));
                m.insert("port".into(), Value::from(r.port));
                m.insert("priority".into(), Value::from(r.priority));
                m.insert("weight".into(), Value::from(r.weight));
                Value::from(m)
            })
            .collect::<Vec<_>>(),
    ))
}

/// Filter `json_decode`: parses a JSON string; the error names the key it came from.
pub fn json_decode(input: &str, _: Kwargs, _: &State) -> TeraResult<Value> {
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(v) => Ok(encode::to_tera(&v)),
        Err(e) => {
            let origin = scoped(|s| {
                Ok(s.snapshot
                    .subtree(&s.prefix)
                    .find(|(_, v)| &***v == input.as_bytes())
                    .map(|(k, _)| s.rel(k).to_string()))
            })
            .ok()
            .flatten();
            Err(Error::message(match origin {
                Some(key) => format!("json_decode: value of key {key} is not valid JSON: {e}"),
                None => format!("json_decode: value is not valid JSON: {e}"),
            }))
        }
    }
}

/// Filter `json_encode(pretty=false)`: the value as JSON.
pub fn json_encode(input: &Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    if input.is_undefined() {
        return Err(Error::message("json_encode: the value is undefined"));
    }
    if let Some(f) = first_non_finite(input) {
        // serde_json would write null: the data would change silently.
        return Err(Error::message(format!(
            "json_encode: {f} has no JSON form (JSON numbers are finite)"
        )));
    }
    let pretty = kwargs.get::<bool>("pretty")?.unwrap_or(false);
    let out = if pretty {
        serde_json::to_string_pretty(input)
    } else {
        serde_json::to_string(input)
    };
    out.map(Value::from)
        .map_err(|e| Error::message(format!("json_encode: {e}")))
}

fn first_non_finite(v: &Value) -> Option<f64> {
    use tera::value::ValueKind;
    match v.kind() {
        ValueKind::F64 => v.as_f64().filter(|f| !f.is_finite()),
        ValueKind::Array => v.as_array()?.iter().find_map(first_non_finite),
        ValueKind::Map => v.as_map()?.values().find_map(first_non_finite),
        _ => None,
    }
}

/// Filter `php`: the value as a PHP literal.
pub fn php(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    encode::php_literal(input)
        .map(Value::from)
        .map_err(|e| Error::message(format!("php: {e}")))
}

/// Registers every function and filter on `tera`.
pub fn register(tera: &mut tera::Tera) {
    tera.register_function("getv", getv);
    tera.register_function("get", get);
    tera.register_function("exists", exists);
    tera.register_function("gets", gets);
    tera.register_function("getvs", getvs);
    tera.register_function("ls", ls);
    tera.register_function("lsdir", lsdir);
    tera.register_function("tree", tree);
    tera.register_function("getenv", getenv);
    tera.register_function("lookup_ip", lookup_ip);
    tera.register_function("lookup_srv", lookup_srv);
    tera.register_filter("json_decode", json_decode);
    tera.register_filter("json_encode", json_encode);
    tera.register_filter("php", php);
}
