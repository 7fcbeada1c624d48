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

use globset::GlobBuilder;
use tera::value::Key;
use tera::{Error, Kwargs, State, TeraResult, Value};

use crate::encode::{self, Decode};
use crate::keypath;
use crate::store::{Snapshot, is_at_or_below};

/// What the functions of one render may read, in either engine (the Go
/// engine's functions read it as confd's store: [`crate::gotemplate::View`]).
pub struct Scope {
    /// The snapshot being rendered.
    pub snapshot: Snapshot,
    /// The resource's absolute prefix (normalised, "" for the root).
    pub prefix: String,
    /// The absolute prefixes the resource watches.
    pub watched: Vec<String>,
    /// How the DNS functions look names up (and record them).
    pub dns: crate::dnsdeps::Lookups,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` with `scope` visible to the template functions (Tera's and the
/// Go engine's) on this thread.
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

/// `f` of the scope [`with_scope`] installed, if one is.
pub(crate) fn current<R>(f: impl FnOnce(Option<&Scope>) -> R) -> R {
    SCOPE.with(|s| f(s.borrow().as_ref()))
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
    fn keys_below<'a, 'd>(
        &'a self,
        dir: &'d str,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a, 'd> {
        // Under a watched prefix, every key below `dir` is watched: no
        // per-key check (two passes over 100,000 keys for two `gets`).
        let covered = self.watched.iter().any(|w| is_at_or_below(dir, w));
        self.snapshot
            .subtree(dir)
            .filter(move |(k, _)| covered || self.watched.iter().any(|w| is_at_or_below(k, w)))
    }

    /// The (relative key, value) pairs whose relative key matches the glob
    /// `pattern`, in key order, borrowed from the snapshot.
    fn glob(&self, pattern: &str) -> TeraResult<Vec<(&str, &str)>> {
        let rel_pattern = if pattern.starts_with('/') {
            pattern.to_string()
        } else {
            format!("/{pattern}")
        };
        // `/*`, `/a/*/b`: matched segment by segment, without the regex
        // (and not compiled: anything globset could refuse goes to it).
        let matcher = match simple_glob(&rel_pattern, &['?', '[', ']', '{', '}', '\\']) {
            Some(segs) => Match::Simple(segs),
            None => Match::Glob(
                GlobBuilder::new(&rel_pattern)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| Error::message(format!("invalid pattern {pattern:?}: {e}")))?
                    .compile_matcher(),
                // With `/` matched only by a literal `/`, a pattern without
                // `**`, alternatives or classes matches only keys with as
                // many `/` as it has (an escaped `\/` is one too): the
                // others are not matched.
                (!rel_pattern.contains("**") && !rel_pattern.contains(['{', '[']))
                    .then(|| slash_count(&rel_pattern)),
            ),
        };
        let dir = self.abs(keypath::glob_literal_dir(&rel_pattern));
        let dir = dir.trim_end_matches('/');
        let mut out = Vec::new();
        // Every key below `dir` is below the prefix: its relative key is
        // the rest, as `keypath::relative` would say (`/` for the prefix).
        let at = self.prefix.len();
        for (k, v) in self.keys_below(dir) {
            let rel = match k.as_bytes().get(at) {
                None if k.len() == at => "/",
                Some(b'/') => &k[at..],
                _ => self.rel(k),
            };
            let matched = match &matcher {
                Match::Simple(segs) => simple_match(segs, rel),
                Match::Glob(m, slashes) => {
                    slashes.is_none_or(|n| slash_count(rel) == n) && m.is_match(rel)
                }
            };
            if !matched {
                continue;
            }
            let s = encode::value_str(rel, v).map_err(|e| Error::message(e.to_string()))?;
            out.push((rel, s));
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
        // Each `{key, value}` map built once, in place (a `pair` per item
        // built every map twice: `Value::from` copies a map).
        let v = Value::try_from_serializable(&Pairs(&items))?;
        // The list is an `Arc`: kept, the template dropping it frees nothing.
        keep(items.len(), || v.clone());
        Ok(v)
    })
}

/// Whether template values are being kept ([`keep_values`]).
static KEEPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Template values kept alive until [`forget_kept`], and how many items they hold.
static KEPT: std::sync::Mutex<(Vec<Box<dyn std::any::Any + Send>>, usize)> =
    std::sync::Mutex::new((Vec::new(), 0));
/// The most items kept: past it, values are freed as usual (peak memory).
const KEEP_ITEMS: usize = 400_000;

/// `render --once`: keeps the lists `gets` returns (both engines) alive
/// until [`forget_kept`], so the end of a template does not free them item
/// by item (at 100,000 keys, ~10 % of the run) just before the process
/// exits anyway. Off in the daemon, which frees them as it goes.
pub fn keep_values(on: bool) {
    KEEPING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Keeps `value()` (a cheap clone of a list of `items` items) when keeping.
pub(crate) fn keep<T: std::any::Any + Send>(items: usize, value: impl FnOnce() -> T) {
    if !KEEPING.load(std::sync::atomic::Ordering::Relaxed) || items < 64 {
        return;
    }
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if kept.1 + items <= KEEP_ITEMS {
        kept.1 += items;
        kept.0.push(Box::new(value()));
    }
}

/// Forgets the kept values without freeing them: the process exits next.
pub fn forget_kept() {
    KEEPING.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::forget(std::mem::take(&mut kept.0));
    kept.1 = 0;
}

/// `gets`'s answer: a list of `{key, value}` maps, in this order.
struct Pairs<'a>(&'a [(&'a str, &'a str)]);

/// One `{key, value}` map of [`Pairs`].
#[derive(serde::Serialize)]
struct Pair<'a> {
    key: &'a str,
    value: &'a str,
}

impl serde::Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for &(key, value) in self.0 {
            seq.serialize_element(&Pair { key, value })?;
        }
        seq.end()
    }
}

/// How [`Scope::glob`] matches a relative key.
enum Match<'p> {
    /// The segments of a [`simple_glob`].
    Simple(Vec<&'p str>),
    /// globset's matcher, and the number of `/` a key must have to match,
    /// when that is known from the pattern.
    Glob(globset::GlobMatcher, Option<usize>),
}

/// The segments of a glob whose only wildcards are whole-segment `*`s
/// (`/*`, `/a/*/b`), or `None` when it has any other (`metas`, `**`, `a*`).
/// Such a pattern matches a key with as many segments, each equal to the
/// pattern's or matched by its `*` (anything without a `/`, empty too),
/// which is what both glob engines (globset with a literal separator, Go's
/// `path.Match`) decide for it.
pub(crate) fn simple_glob<'p>(pattern: &'p str, metas: &[char]) -> Option<Vec<&'p str>> {
    if pattern.contains(metas) {
        return None;
    }
    let segs: Vec<&str> = pattern.split('/').collect();
    segs.iter()
        .all(|s| *s == "*" || !s.contains('*'))
        .then_some(segs)
}

/// Whether `key` matches the segments of a [`simple_glob`].
pub(crate) fn simple_match(segs: &[&str], key: &str) -> bool {
    // On bytes: called for every key under the glob's directory.
    let mut rest = key.as_bytes();
    let Some((last, inner)) = segs.split_last() else {
        return false;
    };
    for s in inner {
        let Some(at) = rest.iter().position(|&b| b == b'/') else {
            return false;
        };
        if *s != "*" && s.as_bytes() != &rest[..at] {
            return false;
        }
        rest = &rest[at + 1..];
    }
    !rest.contains(&b'/') && (*last == "*" || last.as_bytes() == rest)
}

/// The number of `/` in `s`.
fn slash_count(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count()
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
        let json = encode::tree(s.keys_below(base), base, decode).map_err(|e| {
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

/// Looks `q` up for the render in progress (through the daemon's DNS
/// dependencies, which record it, or directly); `func` names the function
/// in the error.
fn dns_lookup(func: &str, q: &crate::dns::Query) -> TeraResult<crate::dns::Records> {
    let lookups = current(|s| s.map(|s| s.dns.clone())).unwrap_or_default();
    lookups
        .lookup(q)
        .map_err(|e| Error::message(format!("{func}({}): {e}", q.name)))
}

/// Refuses the arguments of DNS function `func` that it does not take
/// (`takes`: the names it does, `shown`: how the error lists them), so a
/// misspelt `nmae=` or a `default=` (DNS functions have none) is an error
/// instead of being ignored.
fn dns_args(func: &str, kwargs: &Kwargs, takes: &[&str], shown: &str) -> TeraResult<()> {
    for (k, _) in kwargs.iter() {
        let k = k.to_string();
        if !takes.contains(&k.as_str()) {
            return Err(Error::message(format!(
                "{func}: unknown argument {k} (takes {shown})"
            )));
        }
    }
    Ok(())
}

/// String argument `k` of DNS function `func`, if given.
fn dns_arg<'a>(func: &str, kwargs: &'a Kwargs, k: &'static str) -> TeraResult<Option<&'a str>> {
    kwargs.get::<&str>(k).map_err(|_| {
        Error::message(format!(
            "{func}: {k}= must be a string (the name to look up)"
        ))
    })
}

/// The name a DNS function looks up, checked (a name that is no DNS name
/// is refused before any query).
fn dns_checked<'a>(func: &str, name: &'a str) -> TeraResult<&'a str> {
    if name.is_empty() {
        return Err(Error::message(format!(
            "{func}: give name=\"...\" (the name is empty)"
        )));
    }
    crate::dns::check_name(name).map_err(|e| Error::message(format!("{func}: {e}")))?;
    Ok(name)
}

/// The name of a DNS function: `name=`, or (`lookup_ip`'s older spelling)
/// `host=`; any other argument is refused.
fn dns_name<'a>(func: &str, kwargs: &'a Kwargs) -> TeraResult<&'a str> {
    let older = func.starts_with("lookup_ip");
    if older {
        dns_args(func, kwargs, &["name", "host"], "name=, or host=")?;
    } else {
        dns_args(func, kwargs, &["name"], "name=")?;
    }
    let host = if older {
        dns_arg(func, kwargs, "host")?
    } else {
        None
    };
    match (dns_arg(func, kwargs, "name")?, host) {
        (Some(_), Some(_)) => Err(Error::message(format!(
            "{func}: give either name= or host= (its older spelling), not both"
        ))),
        (Some(n), None) | (None, Some(n)) => dns_checked(func, n),
        (None, None) => Err(Error::message(format!("{func}: give name=\"...\""))),
    }
}

/// The addresses of `name` of one family (`v4`: Some(true) IPv4 only,
/// Some(false) IPv6 only), sorted (IPv4 first); an error when none.
fn ips(func: &str, kwargs: &Kwargs, v4: Option<bool>) -> TeraResult<Value> {
    use crate::dns::{Kind, Query, Records};
    let name = dns_name(func, kwargs)?;
    let Records::Ip(all) = dns_lookup(func, &Query::new(Kind::Ip, name))? else {
        return Err(Error::message(format!(
            "{func}({name}): not an address answer"
        )));
    };
    let ips: Vec<Value> = all
        .into_iter()
        .filter(|ip| v4.is_none_or(|v4| ip.is_ipv4() == v4))
        .map(|ip| Value::from(ip.to_string()))
        .collect();
    if ips.is_empty() {
        let family = if v4 == Some(true) { "IPv4 " } else { "IPv6 " };
        if let Some(l) = current(|s| s.map(|s| s.dns.clone())) {
            l.unusable(
                &Query::new(Kind::Ip, name),
                &format!("no {family}address for {name} (NODATA)"),
            );
        }
        return Err(Error::message(format!(
            "{func}({name}): no {family}address"
        )));
    }
    Ok(Value::from(ips))
}

/// `lookup_ip(name=N)`: the name's addresses (A and AAAA), sorted, IPv4
/// first; an error when none.
pub fn lookup_ip(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    ips("lookup_ip", &kwargs, None)
}

/// `lookup_ipv4(name=N)`: the name's IPv4 addresses, sorted.
pub fn lookup_ipv4(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    ips("lookup_ipv4", &kwargs, Some(true))
}

/// `lookup_ipv6(name=N)`: the name's IPv6 addresses, sorted.
pub fn lookup_ipv6(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    ips("lookup_ipv6", &kwargs, Some(false))
}

/// `lookup_srv(name=N)` or `lookup_srv(service=S, proto=P, domain=D)`
/// (`_S._P.D`): the SRV targets as `{target, port, priority, weight}`,
/// sorted by priority, weight, target, port.
pub fn lookup_srv(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    use crate::dns::{Kind, Query, Records};
    const F: &str = "lookup_srv";
    dns_args(
        F,
        &kwargs,
        &["name", "service", "proto", "domain"],
        "name=, or service=, proto= and domain=",
    )?;
    let parts = [
        ("service", dns_arg(F, &kwargs, "service")?),
        ("proto", dns_arg(F, &kwargs, "proto")?),
        ("domain", dns_arg(F, &kwargs, "domain")?),
    ];
    let name = match dns_arg(F, &kwargs, "name")? {
        Some(_) if parts.iter().any(|(_, v)| v.is_some()) => {
            return Err(Error::message(
                "lookup_srv: give either name= or service=/proto=/domain=, not both",
            ));
        }
        Some(n) => n.to_string(),
        None if parts.iter().all(|(_, v)| v.is_none()) => {
            return Err(Error::message(
                "lookup_srv: give name=\"_service._proto.domain\", or service=, proto= and domain=",
            ));
        }
        None => match parts {
            [(_, Some(service)), (_, Some(proto)), (_, Some(domain))] => {
                format!("_{service}._{proto}.{domain}")
            }
            _ => {
                let missing: Vec<String> = parts
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| format!("{k}="))
                    .collect();
                return Err(Error::message(format!(
                    "lookup_srv: service=, proto= and domain= go together: {} {} missing",
                    missing.join(" and "),
                    if missing.len() == 1 { "is" } else { "are" }
                )));
            }
        },
    };
    let name = dns_checked(F, &name)?;
    let Records::Srv(records) = dns_lookup(F, &Query::new(Kind::Srv, name))? else {
        return Err(Error::message(format!(
            "lookup_srv({name}): not an SRV answer"
        )));
    };
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

/// `lookup_txt(name=N)`: one string per TXT record (its character-strings
/// joined), sorted.
pub fn lookup_txt(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    use crate::dns::{Kind, Query, Records};
    let name = dns_name("lookup_txt", &kwargs)?;
    let Records::Txt(records) = dns_lookup("lookup_txt", &Query::new(Kind::Txt, name))? else {
        return Err(Error::message(format!(
            "lookup_txt({name}): not a TXT answer"
        )));
    };
    if let Some(t) = records.iter().find(|t| t.contains('\0')) {
        return Err(no_nul("lookup_txt", name, Kind::Txt, "a TXT record", t));
    }
    Ok(Value::from(
        records.into_iter().map(Value::from).collect::<Vec<_>>(),
    ))
}

/// The error for a record holding a NUL byte (`what`: "a TXT record"),
/// also shown on its dependency: a NUL is never written into a file (C
/// parsers end the string there, shells drop it), whatever else a record
/// holds is data.
fn no_nul(func: &str, name: &str, kind: crate::dns::Kind, what: &str, text: &str) -> Error {
    let why = format!(
        "{what} holds a NUL byte ({}), which liveconf does not write into a file",
        quoted(text)
    );
    if let Some(l) = current(|s| s.map(|s| s.dns.clone())) {
        l.unusable(&crate::dns::Query::new(kind, name), &why);
    }
    Error::message(format!("{func}({name}): {why}"))
}

/// `lookup_uri(name=N)`: the URI records (RFC 7553) as `{priority, weight,
/// target}`, sorted by priority, weight, target.
pub fn lookup_uri(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    use crate::dns::{Kind, Query, Records};
    let name = dns_name("lookup_uri", &kwargs)?;
    let Records::Uri(records) = dns_lookup("lookup_uri", &Query::new(Kind::Uri, name))? else {
        return Err(Error::message(format!(
            "lookup_uri({name}): not a URI answer"
        )));
    };
    if let Some(u) = records.iter().find(|u| u.target.contains('\0')) {
        return Err(no_nul(
            "lookup_uri",
            name,
            Kind::Uri,
            "a URI record's target",
            &u.target,
        ));
    }
    Ok(Value::from(
        records
            .into_iter()
            .map(|r| {
                let mut m = tera::Map::new();
                m.insert("priority".into(), Value::from(r.priority));
                m.insert("weight".into(), Value::from(r.weight));
                m.insert("target".into(), Value::from(r.target));
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
                    .find(|(_, v)| *v == input.as_bytes())
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

/// Filter `from_pairs`: a map built from a list of entries, in the list's
/// order — the inverse of Tera's `pairs`. An entry is a `[key, value]`
/// list (what `pairs` returns) or a `{key, value}` map (what `gets`
/// returns); a key is a string, an integer or a bool. A key given twice
/// keeps its first position and takes its last value (as Python's `dict`
/// and JavaScript's `Object.fromEntries` do).
///
/// Map literals only take literal keys, so this is how a template builds a
/// map whose keys come from data in an order of its choosing (e.g. a
/// section's primary first for `json_encode`).
pub fn from_pairs(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    let items = input.as_array().ok_or_else(|| {
        Error::message(format!(
            "from_pairs: expects a list of [key, value] pairs, got {}",
            described(input)
        ))
    })?;
    let mut map = tera::Map::new();
    for (i, item) in items.iter().enumerate() {
        let (key, value) = match (item.as_array(), item.as_map()) {
            (Some(kv), _) if kv.len() == 2 => (&kv[0], &kv[1]),
            (None, Some(m)) => match (m.get(&Key::Str("key")), m.get(&Key::Str("value"))) {
                (Some(k), Some(v)) if m.len() == 2 => (k, v),
                _ => return Err(bad_pair(i, item)),
            },
            _ => return Err(bad_pair(i, item)),
        };
        let key = if let Some(s) = key.as_str() {
            Key::String(s.into())
        } else if let Some(b) = key.as_bool() {
            Key::Bool(b)
        } else if let Some(n) = key.as_i64().filter(|_| key.is_i64() || key.is_u64()) {
            Key::I64(n)
        } else {
            return Err(Error::message(format!(
                "from_pairs: the key of item {i} is {}: a key must be a string, an integer or a bool",
                described(key)
            )));
        };
        map.insert(key, value.clone());
    }
    Ok(Value::from(map))
}

fn bad_pair(i: usize, item: &Value) -> Error {
    Error::message(format!(
        "from_pairs: item {i} is {}, not a [key, value] pair or a {{key, value}} map",
        described(item)
    ))
}

/// Filter `php`: the value as a PHP literal.
pub fn php(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    encode::php_literal(input)
        .map(Value::from)
        .map_err(|e| Error::message(format!("php: {e}")))
}

// ---------------------------------------------------------------- confd's helpers

/// At most 80 characters of `s`, quoted (one line, control characters escaped).
fn quoted(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}

/// A value for an error message: its type and (at most 80 characters of) its text.
fn described(v: &Value) -> String {
    match v.as_str() {
        Some(s) => format!("string {}", quoted(s)),
        None if v.is_undefined() => "an undefined value".to_string(),
        None => {
            let text = v.to_string();
            match text.char_indices().nth(80) {
                None => format!("{} {text}", v.name()),
                Some((cut, _)) => format!("{} {}...", v.name(), &text[..cut]),
            }
        }
    }
}

/// The input of a filter that takes a string, or an error naming the filter.
fn string_input<'a>(filter: &str, input: &'a Value) -> TeraResult<&'a str> {
    input.as_str().ok_or_else(|| {
        Error::message(format!(
            "{filter}: expects a string, got {}",
            described(input)
        ))
    })
}

/// Go's `base64.StdEncoding`: standard alphabet, `=` padding required,
/// non-zero trailing bits accepted (Go's decoder is not strict).
pub(crate) const GO_STD_BASE64: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(true)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );

/// Filter `base64_encode`: the string's UTF-8 bytes in standard base64 with padding.
pub fn base64_encode(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    use base64::Engine as _;
    let s = string_input("base64_encode", input)?;
    Ok(Value::from(GO_STD_BASE64.encode(s)))
}

/// Filter `base64_decode`: standard base64 (padded; `\r` and `\n` ignored,
/// as Go does) to text; the decoded bytes must be UTF-8.
pub fn base64_decode(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    use base64::{DecodeError, Engine as _};
    let s = string_input("base64_decode", input)?;
    let compact = s.replace(['\r', '\n'], "");
    // An offset in `compact` as an offset in `s`.
    let offset = |at: usize| {
        s.bytes()
            .enumerate()
            .filter(|(_, b)| !matches!(b, b'\r' | b'\n'))
            .nth(at)
            .map_or(at, |(i, _)| i)
    };
    let shown = |b: u8| {
        if b.is_ascii_graphic() || b == b' ' {
            format!("{:?}", char::from(b))
        } else {
            format!("0x{b:02x}")
        }
    };
    let bytes = GO_STD_BASE64.decode(&compact).map_err(|e| {
        let why = match e {
            DecodeError::InvalidByte(at, b'=') => {
                format!("padding \"=\" at byte {} is misplaced", offset(at))
            }
            DecodeError::InvalidByte(at, b) => format!(
                "byte {} ({}) is not in the standard base64 alphabet",
                offset(at),
                shown(b)
            ),
            DecodeError::InvalidLastSymbol(at, b) => {
                format!("invalid last symbol {} at byte {}", shown(b), offset(at))
            }
            DecodeError::InvalidLength(len) => format!(
                "its length ({len} characters) is not a multiple of 4 (padding with \"=\" is required)"
            ),
            DecodeError::InvalidPadding => {
                "padding \"=\" is missing or wrong (the length must be a multiple of 4)".to_string()
            }
        };
        Error::message(format!(
            "base64_decode: {} is not valid base64: {why}",
            quoted(s)
        ))
    })?;
    String::from_utf8(bytes).map(Value::from).map_err(|e| {
        Error::message(format!(
            "base64_decode: {} decodes to bytes that are not UTF-8 text (invalid byte at offset {})",
            quoted(s),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// `file_exists(path=P)`: whether `stat(P)` succeeds (confd's `fileExists`).
pub fn file_exists(kwargs: Kwargs, _: &State) -> TeraResult<bool> {
    let path: &str = kwargs.must_get("path")?;
    Ok(std::fs::metadata(path).is_ok())
}

/// Filter `sort_by_length(attribute=A?)`: a list of strings sorted by byte
/// length, shortest first; with `attribute`, a list of maps sorted by the
/// length of that (string) attribute, e.g. `gets(...) | sort_by_length(attribute="key")`
/// (confd's `sortKVByLength`). Equal lengths keep their order (a stable sort).
pub fn sort_by_length(input: &Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let attribute: Option<&str> = kwargs.get("attribute")?;
    let items = input.as_array().ok_or_else(|| {
        Error::message(format!(
            "sort_by_length: expects a list of {}, got {}",
            if attribute.is_some() {
                "maps"
            } else {
                "strings"
            },
            described(input)
        ))
    })?;
    let mut sorted: Vec<(usize, &Value)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let s = match attribute {
            None => item.as_str().ok_or_else(|| {
                Error::message(format!(
                    "sort_by_length: item {i} of the list is {}, not a string",
                    described(item)
                ))
            })?,
            Some(attr) => item
                .get_from_path(attr)
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::message(format!(
                        "sort_by_length: item {i} of the list has no string attribute {attr:?}: {}",
                        described(item)
                    ))
                })?,
        };
        sorted.push((s.len(), item));
    }
    sorted.sort_by_key(|(len, _)| *len);
    Ok(Value::from(
        sorted
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>(),
    ))
}

/// Filter `parse_bool`: Go's `strconv.ParseBool`.
pub fn parse_bool(input: &Value, _: Kwargs, _: &State) -> TeraResult<bool> {
    match string_input("parse_bool", input)? {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(Error::message(format!(
            "parse_bool: {} is not a boolean (accepted: 1 t T TRUE true True 0 f F FALSE false False)",
            quoted(other)
        ))),
    }
}

/// Filter `basename`: Go's `path.Base` (confd's `base`).
pub fn basename(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(Value::from(crate::gopath::base(string_input(
        "basename", input,
    )?)))
}

/// Filter `dirname`: Go's `path.Dir` (confd's `dir`).
pub fn dirname(input: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(Value::from(crate::gopath::dir(string_input(
        "dirname", input,
    )?)))
}

// ---------------------------------------------------------------- format (Go's printf)

/// Stand-ins used by [`go_sprintf`]'s dry run: `%` inside string arguments
/// and `!` inside the format are swapped for private-use characters so
/// that the only `%!` in the dry run's output are Go's error markers, and
/// `FMT_END` is appended so a directive cut off by the end of the format
/// becomes a marker too (Go writes `%!(NOVERB)`).
const ARG_PERCENT: char = '\u{E000}';
const FMT_BANG: char = '\u{E001}';
const FMT_END: char = '\u{E002}';

/// A Tera value as a Go template value.
fn to_go(v: &Value) -> TeraResult<gotmpl::Value> {
    use std::sync::Arc;
    use tera::value::ValueKind;
    let too_big = || {
        Error::message(format!(
            "format: the integer {v} does not fit in 64 bits (Go's int64 or uint64)"
        ))
    };
    Ok(match v.kind() {
        // A misspelt variable must not print as `<nil>`.
        ValueKind::Undefined => {
            return Err(Error::message(
                "format: an argument is undefined (a misspelt variable or a missing map entry?)",
            ));
        }
        ValueKind::None => gotmpl::Value::Nil,
        ValueKind::Bool => gotmpl::Value::Bool(v.as_bool().unwrap_or_default()),
        ValueKind::I64 | ValueKind::U64 | ValueKind::I128 | ValueKind::U128 => {
            match (v.as_i64(), v.as_u64()) {
                (_, Some(u)) if v.kind() == ValueKind::U64 || v.kind() == ValueKind::U128 => {
                    gotmpl::Value::Uint(u)
                }
                (Some(i), _) => gotmpl::Value::Int(i),
                (None, Some(u)) => gotmpl::Value::Uint(u),
                (None, None) => return Err(too_big()),
            }
        }
        ValueKind::F64 => gotmpl::Value::Float(v.as_f64().unwrap_or_default()),
        ValueKind::String => gotmpl::Value::String(Arc::from(v.as_str().unwrap_or_default())),
        ValueKind::Bytes => {
            let bytes = v.as_bytes().unwrap_or_default();
            match std::str::from_utf8(bytes) {
                Ok(s) => gotmpl::Value::String(Arc::from(s)),
                Err(_) => {
                    return Err(Error::message(
                        "format: an argument is bytes that are not UTF-8 text",
                    ));
                }
            }
        }
        ValueKind::Array => {
            let items = v
                .as_array()
                .unwrap_or_default()
                .iter()
                .map(to_go)
                .collect::<TeraResult<Vec<_>>>()?;
            gotmpl::Value::List(items.into())
        }
        ValueKind::Map => {
            let mut map = std::collections::BTreeMap::new();
            for (k, item) in v.as_map().into_iter().flatten() {
                let key: Arc<str> = match k.as_str() {
                    Some(s) => Arc::from(s),
                    None => Arc::from(k.to_string()),
                };
                map.insert(key, to_go(item)?);
            }
            gotmpl::Value::Map(Arc::new(map))
        }
        _ => {
            return Err(Error::message(format!(
                "format: cannot pass {} to Go's printf",
                described(v)
            )));
        }
    })
}

/// `v` with every `%` in its strings (map keys included) replaced by
/// [`ARG_PERCENT`]; same types, same shape.
fn without_percent(v: &gotmpl::Value) -> gotmpl::Value {
    use gotmpl::Value as G;
    use std::sync::Arc;
    let swap = |s: &str| -> Arc<str> { Arc::from(s.replace('%', &ARG_PERCENT.to_string())) };
    match v {
        G::String(s) if s.contains('%') => G::String(swap(s)),
        G::List(items) => G::List(items.iter().map(without_percent).collect()),
        G::Map(map) => G::Map(Arc::new(
            map.iter()
                .map(|(k, item)| (swap(k), without_percent(item)))
                .collect(),
        )),
        other => other.clone(),
    }
}

/// Go's error marker at the start of `s` (which starts with `%!`), made
/// readable again: (verb, text inside the parentheses).
fn go_marker(s: &str) -> (Option<char>, String) {
    let rest = &s[2..];
    let (verb, rest) = match rest.chars().next() {
        Some('(') | None => (None, rest),
        Some(c) => (Some(c), &rest[c.len_utf8()..]),
    };
    let mut depth = 0usize;
    let mut inside = String::new();
    for c in rest.chars() {
        match c {
            '(' if depth == 0 => {
                depth = 1;
                continue;
            }
            '(' => depth += 1,
            ')' if depth == 1 => break,
            ')' => depth -= 1,
            _ => {}
        }
        if depth >= 1 {
            inside.push(c);
        }
    }
    let inside = inside.replace(ARG_PERCENT, "%").replace(FMT_BANG, "!");
    (verb, inside)
}

/// Go's `fmt.Sprintf`, strict: where Go would write an error marker into
/// the output (`%!d(string=abc)`, `%!d(MISSING)`, `%!(EXTRA ...)`,
/// `%!(NOVERB)`...), this is an error naming the format and the problem.
fn go_sprintf(format: &str, args: &[gotmpl::Value]) -> TeraResult<String> {
    let fail = |why: String| Error::message(format!("format: {}: {why}", quoted(format)));
    // Dry run: the same directives over arguments of the same types. Like
    // Go's fmt, gotmpl's sprintf reports a bad directive only as a
    // `%!verb(...)` marker in its output, never as an error value, so the
    // marker is what is read to say what is wrong.
    let probe_format: String = format
        .chars()
        .map(|c| if c == '!' { FMT_BANG } else { c })
        .chain(std::iter::once(FMT_END))
        .collect();
    let probe_args: Vec<gotmpl::Value> = args.iter().map(without_percent).collect();
    let probe = gotmpl::sprintf(&probe_format, &probe_args).map_err(|e| fail(e.to_string()))?;
    if let Some(at) = probe.find("%!") {
        let (verb, inside) = go_marker(&probe[at..]);
        let inside = quoted(&inside);
        let inside = inside.trim_matches('"');
        let n = args.len();
        let why = match (verb, inside) {
            (Some(FMT_END), _) => {
                "the format ends inside a directive (Go writes %!(NOVERB); write %% for a literal %)"
                    .to_string()
            }
            (Some(v), "MISSING") => format!("%{v} has no argument ({n} given)"),
            (Some(v), "BADINDEX") => {
                format!("bad argument index before %{v} ({n} arguments given)")
            }
            (Some(v @ ('d' | 'o' | 'O' | 'c' | 'U')), value) if value.starts_with("float64=") => {
                let shown = &value["float64=".len()..];
                format!(
                    "%{v} needs an integer, but an argument is the float {shown} \
                     (Go writes %!{v}(float64={shown})); convert it with `| int`, or use %v, %f or %g"
                )
            }
            (Some(v), value) => {
                let v = if v == FMT_BANG { '!' } else { v };
                format!("%{v} cannot print {value} (printf would write %!{v}({value}))")
            }
            (None, "BADWIDTH") => "the width `*` needs an integer argument".to_string(),
            (None, "BADPREC") => {
                "the precision `.*` needs a non-negative integer argument".to_string()
            }
            (None, extra) if extra.starts_with("EXTRA ") => format!(
                "more arguments than directives; left over: {}",
                &extra["EXTRA ".len()..]
            ),
            (None, other) => format!("Go writes %!({other})"),
        };
        return Err(fail(why));
    }
    // gotmpl's integer verbs accept a float and truncate it; Go refuses
    // (`%!d(float64=1.5)`). Each float is swapped for a bool in turn: a verb
    // that now complains is one a float reached.
    for (i, arg) in probe_args.iter().enumerate() {
        let gotmpl::Value::Float(f) = arg else {
            continue;
        };
        let mut swapped = probe_args.clone();
        swapped[i] = gotmpl::Value::Bool(false);
        let out = gotmpl::sprintf(&probe_format, &swapped).map_err(|e| fail(e.to_string()))?;
        for (at, _) in out.match_indices("%!") {
            let shown = gotmpl::sprintf("%v", &[gotmpl::Value::Float(*f)])
                .unwrap_or_else(|_| f.to_string());
            let n = i + 1;
            match go_marker(&out[at..]).0 {
                Some(v @ ('d' | 'o' | 'c')) => {
                    return Err(fail(format!(
                        "%{v} needs an integer, but argument {n} is the float {shown} \
                         (Go writes %!{v}(float64={shown})); convert it with `| int`, or use %v, %f or %g"
                    )));
                }
                Some(v @ ('x' | 'X' | 'b')) => {
                    return Err(fail(format!(
                        "%{v} of a float (argument {n}, {shown}) is not supported \
                         (Go prints it in binary exponent form); convert it with `| int`, or use %v, %f or %g"
                    )));
                }
                _ => {}
            }
        }
    }
    gotmpl::sprintf(format, args).map_err(|e| fail(e.to_string()))
}

/// `format(fmt=F, args=[...])`: Go's `fmt.Sprintf(F, args...)`.
pub fn format_function(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let format: &str = kwargs.must_get("fmt")?;
    let args = match kwargs.get::<&Value>("args")? {
        None => Vec::new(),
        Some(list) => match list.as_array() {
            Some(items) => items.iter().map(to_go).collect::<TeraResult<Vec<_>>>()?,
            None => {
                return Err(Error::message(format!(
                    "format: args must be a list, got {}",
                    described(list)
                )));
            }
        },
    };
    go_sprintf(format, &args).map(Value::from)
}

/// Filter `value | format(fmt=F)`: Go's `fmt.Sprintf(F, value)`.
pub fn format_filter(input: &Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let format: &str = kwargs.must_get("fmt")?;
    go_sprintf(format, &[to_go(input)?]).map(Value::from)
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
    tera.register_function("lookup_ipv4", lookup_ipv4);
    tera.register_function("lookup_ipv6", lookup_ipv6);
    tera.register_function("lookup_srv", lookup_srv);
    tera.register_function("lookup_txt", lookup_txt);
    tera.register_function("lookup_uri", lookup_uri);
    tera.register_filter("json_decode", json_decode);
    tera.register_filter("json_encode", json_encode);
    tera.register_filter("php", php);
    tera.register_filter("from_pairs", from_pairs);
    tera.register_filter("base64_encode", base64_encode);
    tera.register_filter("base64_decode", base64_decode);
    tera.register_function("file_exists", file_exists);
    tera.register_filter("sort_by_length", sort_by_length);
    tera.register_filter("parse_bool", parse_bool);
    tera.register_filter("basename", basename);
    tera.register_filter("dirname", dirname);
    tera.register_function("format", format_function);
    tera.register_filter("format", format_filter);
}

#[cfg(test)]
mod tests {
    /// The segment matcher decides as globset does (and as Go's
    /// `path.Match`, see gotemplate's tests) for the patterns it takes.
    #[test]
    fn simple_globs_match_as_globset_does() {
        let keys = [
            "", "/", "/a", "/a/", "/a/b", "/a/b/c", "//", "/ab", "/a/bc", "/b/b", "a", "/a.b/c",
        ];
        for p in [
            "/*", "/*/*", "/a/*", "/*/b", "/a", "/*/*/*", "/a/*/c", "*", "/",
        ] {
            let segs = super::simple_glob(p, &['?', '[', '{', '\\']).expect(p);
            let m = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .unwrap()
                .compile_matcher();
            for k in keys {
                assert_eq!(super::simple_match(&segs, k), m.is_match(k), "{p} {k:?}");
            }
        }
        for p in ["/a*", "/**", "/a/**/b", "/?", "/[ab]", "/{a,b}", "/a\\*"] {
            assert!(
                super::simple_glob(p, &['?', '[', '{', '\\']).is_none(),
                "{p}"
            );
        }
    }

    fn render(src: &str) -> Result<String, String> {
        let mut t = tera::Tera::default();
        super::register(&mut t);
        t.add_raw_template("t", src).map_err(|e| format!("{e:?}"))?;
        t.render("t", &tera::Context::new())
            .map_err(|e| format!("{e:?}"))
    }

    /// Issue 12, finding 6: a DNS function's argument of the wrong type
    /// is named with the function.
    #[test]
    fn a_dns_name_that_is_not_a_string_names_the_function_and_argument() {
        let err = render("{{ lookup_txt(name=42) }}").unwrap_err();
        assert!(err.contains("lookup_txt: name= must be a string"), "{err}");
    }

    /// Trial finding 1: a DNS function refuses an argument it does not
    /// take, and arguments that contradict each other, naming the
    /// function and the argument, before any look-up.
    #[test]
    fn dns_functions_refuse_unknown_and_conflicting_arguments() {
        for (src, want) in [
            (
                r#"{{ lookup_txt(name="x.test", nmae="x.test") }}"#,
                "lookup_txt: unknown argument nmae (takes name=)",
            ),
            (
                r#"{{ lookup_txt(name="x.test", default="y") }}"#,
                "lookup_txt: unknown argument default (takes name=)",
            ),
            (
                r#"{{ lookup_srv(name="_a._tcp.x.test", service="a", proto="tcp", domain="x.test") }}"#,
                "lookup_srv: give either name= or service=/proto=/domain=, not both",
            ),
            (
                r#"{{ lookup_srv(name="_a._tcp.x.test", domain="x.test") }}"#,
                "lookup_srv: give either name= or service=/proto=/domain=, not both",
            ),
            (
                r#"{{ lookup_srv(nam="_a._tcp.x.test") }}"#,
                "lookup_srv: unknown argument nam (takes name=, or service=, proto= and domain=)",
            ),
            (
                r#"{{ lookup_srv(service="a", proto="tcp") }}"#,
                "lookup_srv: service=, proto= and domain= go together: domain= is missing",
            ),
            (
                r#"{{ lookup_ip(host="a.test", name="b.test") }}"#,
                "lookup_ip: give either name= or host= (its older spelling), not both",
            ),
            (
                r#"{{ lookup_ipv4(name="a.test", family="4") }}"#,
                "lookup_ipv4: unknown argument family (takes name=, or host=)",
            ),
            (
                r#"{{ lookup_uri(name="a.test", host="a.test") }}"#,
                "lookup_uri: unknown argument host (takes name=)",
            ),
        ] {
            let err = render(src).unwrap_err();
            assert!(err.contains(want), "{src}: {err}");
        }
    }

    /// Trial finding 4: a name that is no DNS name is refused before any
    /// query, saying why in words (not the resolver's "proto error").
    #[test]
    fn a_name_that_is_no_dns_name_is_refused_in_words_before_any_query() {
        for (src, want) in [
            (
                r#"{{ lookup_txt(name="a..t12.test") }}"#,
                r#"lookup_txt: "a..t12.test" is not a valid DNS name (an empty label: two dots in a row)"#,
            ),
            (
                r#"{{ lookup_txt(name="bad name.t12.test") }}"#,
                r#"lookup_txt: "bad name.t12.test" is not a valid DNS name (a space is not allowed"#,
            ),
            (
                r#"{{ lookup_uri(name="https://up.example/") }}"#,
                r#"lookup_uri: "https://up.example/" is not a valid DNS name (":" is not allowed"#,
            ),
            (
                r#"{{ lookup_ip(name=".a.test") }}"#,
                r#"lookup_ip: ".a.test" is not a valid DNS name (an empty label: it starts with a dot)"#,
            ),
            (
                r#"{{ lookup_srv(service="a b", proto="tcp", domain="x.test") }}"#,
                r#"lookup_srv: "_a b._tcp.x.test" is not a valid DNS name (a space"#,
            ),
        ] {
            let err = render(src).unwrap_err().replace("\\\"", "\"");
            assert!(err.contains(want), "{src}: {err}");
            assert!(!err.contains("proto error"), "{src}: {err}");
        }
        let long = format!("{}.test", "a".repeat(64));
        let err = render(&format!(r#"{{{{ lookup_txt(name="{long}") }}}}"#)).unwrap_err();
        assert!(err.contains("a label is longer than 63 bytes"), "{err}");
        let long = format!("{}test", "abcdefghi.".repeat(26));
        let err = render(&format!(r#"{{{{ lookup_txt(name="{long}") }}}}"#)).unwrap_err();
        assert!(err.contains("longer than 253 bytes"), "{err}");
        // Names as people write them pass: a trailing dot, underscores,
        // digits, hyphens, upper case.
        for ok in [
            "a.test.",
            "_dmarc.x-1.TEST",
            "_etcd-client._tcp.e1.test",
            "localhost",
        ] {
            assert!(crate::dns::check_name(ok).is_ok(), "{ok}");
        }
    }

    fn render_keys(src: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
        let scope = super::Scope {
            snapshot: crate::store::Snapshot::from_pairs(
                1,
                pairs.iter().map(|(k, v)| {
                    (
                        crate::store::Key::from(*k),
                        crate::store::Val::from(v.as_bytes()),
                    )
                }),
            ),
            prefix: "/p".into(),
            watched: vec!["/p".into()],
            dns: Default::default(),
        };
        super::with_scope(scope, || render(src))
    }

    #[test]
    fn gets_matches_by_depth_and_across_slashes_with_double_stars_and_alternatives() {
        let keys = [
            ("/p/a", "1"),
            ("/p/a/b", "2"),
            ("/p/a/b/c", "3"),
            ("/p/z", "4"),
        ];
        let list = |pattern: &str| {
            render_keys(
                &format!(
                    r#"{{% for kv in gets(pattern="{pattern}") %}}{{{{ kv.key }}}}={{{{ kv.value }}}} {{% endfor %}}"#
                ),
                &keys,
            )
            .unwrap()
        };
        assert_eq!(list("/*"), "/a=1 /z=4 ");
        assert_eq!(list("/*/*"), "/a/b=2 ");
        assert_eq!(list("/a/**"), "/a/b=2 /a/b/c=3 ");
        assert_eq!(list("/{z,a/b}"), "/a/b=2 /z=4 ");
        assert_eq!(
            render_keys(
                r#"{{ gets(pattern="/a/*") | json_encode }} {{ getvs(pattern="/*") | join(sep=",") }}"#,
                &keys
            )
            .unwrap(),
            r#"[{"key":"/a/b","value":"2"}] 1,4"#
        );
    }

    #[test]
    fn from_pairs_keeps_the_order_of_its_list() {
        let out = render(
            r#"{% set two = [2] %}{% set m = [["z", 1], ["a", two], ["m", {"x": true}]] | from_pairs %}{{ m | json_encode }} {{ m | keys | join(sep=",") }} {{ m.a[0] }}"#,
        )
        .unwrap();
        assert_eq!(out, r#"{"z":1,"a":[2],"m":{"x":true}} z,a,m 2"#);
    }

    #[test]
    fn from_pairs_inverts_pairs_and_takes_key_value_maps() {
        let out = render(
            r#"{% set m = {"b": 1, "a": 2} %}{{ m | pairs | from_pairs | json_encode }} {{ [{"key": "k", "value": "v"}] | from_pairs | json_encode }} {{ [] | from_pairs | json_encode }}"#,
        )
        .unwrap();
        assert_eq!(out, r#"{"b":1,"a":2} {"k":"v"} {}"#);
    }

    #[test]
    fn from_pairs_builds_a_map_in_a_loop_primary_first() {
        // What the MediaWiki dbconfig template does: the primary, then the
        // others sorted.
        let out = render(concat!(
            r#"{% set loads = {"db1": 300, "db2": 0, "db3": 500} %}{% set primary = "db2" %}"#,
            r#"{% set_global entries = [[primary, loads[primary]]] %}"#,
            r#"{% for h in loads | keys | sort %}{% if h != primary %}{% set_global entries = [...entries, [h, loads[h]]] %}{% endif %}{% endfor %}"#,
            r#"{{ entries | from_pairs | json_encode }}"#,
        ))
        .unwrap();
        assert_eq!(out, r#"{"db2":0,"db1":300,"db3":500}"#);
    }

    #[test]
    fn from_pairs_repeated_key_keeps_first_position_and_last_value() {
        let out =
            render(r#"{{ [["a", 1], ["b", 2], ["a", 3]] | from_pairs | json_encode }}"#).unwrap();
        assert_eq!(out, r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn from_pairs_integer_and_bool_keys() {
        let out = render(r#"{{ [[2, "two"], [true, "yes"]] | from_pairs | php }}"#).unwrap();
        assert!(out.contains("2 => 'two'"), "{out}");
    }

    #[test]
    fn from_pairs_errors_name_the_item() {
        for (src, want) in [
            (
                r#"{{ "x" | from_pairs }}"#,
                "expects a list of [key, value] pairs, got string",
            ),
            (r#"{{ [["a", 1], ["b"]] | from_pairs }}"#, "item 1 is"),
            (r#"{{ [[1.5, 1]] | from_pairs }}"#, "the key of item 0 is"),
            (
                r#"{% set k = ["a"] %}{{ [[k, 1]] | from_pairs }}"#,
                "a key must be a string, an integer or a bool",
            ),
            (
                r#"{{ [{"key": "a"}] | from_pairs }}"#,
                "not a [key, value] pair or a {key, value} map",
            ),
        ] {
            let err = render(src).unwrap_err();
            assert!(err.contains(want), "{src}: {err}");
        }
    }
}
