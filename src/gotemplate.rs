//! Go text/template, as confd runs it: the engine for `.tmpl` resources.
//!
//! Templates are parsed by `gotmpl` (a port of Go's `text/template`; see
//! ARCHITECTURE.md for why, and `vendor/gotmpl/LIVECONF-PATCHES.md`), each
//! file on its own and named by its base name, as confd's `ParseFiles`
//! does, and executed with no data (`{{.}}` is `<no value>`).
//!
//! The functions are confd's function map with confd's semantics, byte for
//! byte: the key functions (`get`, `getv`, `gets`, `getvs`, `ls`, `lsdir`,
//! `exists`) read a [`View`] of the snapshot that is exactly confd's
//! `memkv` store for the resource — every key under the resource's `keys`,
//! named `path.Join("/", key without prefix)`. A key outside `keys` is
//! simply not there (`exists` is false, `getv` takes its default), as in
//! confd; so the daemon still never needs a key it does not watch.
//!
//! The view is the render's [`Scope`], installed for the duration of one
//! synchronous render ([`render`]) just as for the Tera functions
//! ([`functions::with_scope`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{FuncMap, Struct, TemplateError, Value};

use crate::functions::{self, Scope};
use crate::gopath;
use crate::store::is_at_or_below;

/// What the key functions of one render read: the render's [`Scope`],
/// read as confd's `memkv` store for the resource. (The methods below are
/// this module's own: the Tera functions read the same scope their way.)
pub type View = Scope;

type GoResult = Result<Value, TemplateError>;

fn fail(func: &str, msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Exec(format!("error calling {func}: {msg}"))
}

fn with_view<R>(
    func: &str,
    f: impl FnOnce(&View) -> Result<R, TemplateError>,
) -> Result<R, TemplateError> {
    functions::current(|v| match v {
        Some(view) => f(view),
        None => Err(fail(func, "key functions need a resource being rendered")),
    })
}

impl View {
    /// The absolute etcd key that confd's store key `store_key` stands for,
    /// if `store_key` is a clean path (every store key is one).
    fn absolute(&self, store_key: &str) -> Option<String> {
        if !store_key.starts_with('/') || gopath::clean(store_key) != store_key {
            return None;
        }
        Some(if store_key == "/" {
            if self.prefix.is_empty() {
                "/".to_string()
            } else {
                self.prefix.clone()
            }
        } else {
            format!("{}{store_key}", self.prefix)
        })
    }

    /// confd's store key for an absolute etcd key:
    /// `path.Join("/", strings.TrimPrefix(key, prefix))`.
    fn store_key(&self, abs: &str) -> String {
        let rest = abs.strip_prefix(self.prefix.as_str()).unwrap_or(abs);
        gopath::clean(&format!("/{rest}"))
    }

    fn is_watched(&self, abs: &str) -> bool {
        self.watched.iter().any(|w| is_at_or_below(abs, w))
    }

    /// The value stored under the store key `key`.
    fn lookup(&self, key: &str) -> Option<String> {
        let abs = self.absolute(key)?;
        if !self.is_watched(&abs) {
            return None;
        }
        self.snapshot
            .get(&abs)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every (store key, value) whose store key lies under the store path
    /// `dir` (`"/"` for all), in no particular order. Only the watched
    /// subtrees that meet `dir` are scanned.
    fn entries_under(&self, dir: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.each_under(dir, |k, v| {
            out.push((k.to_string(), String::from_utf8_lossy(v).into_owned()));
        });
        out
    }

    /// Calls `f` with each (store key, value) whose store key lies under the
    /// store path `dir`, as [`View::entries_under`] lists them, without
    /// copying a key or value that `f` does not keep.
    fn each_under(&self, dir: &str, mut f: impl FnMut(&str, &[u8])) {
        let clean = gopath::clean(dir);
        let abs_dir = if clean == "/" || !clean.starts_with('/') {
            self.prefix.clone()
        } else {
            format!("{}{clean}", self.prefix)
        };
        // Scan roots: watched prefixes inside `abs_dir`, or `abs_dir` itself
        // when a watched prefix contains it; nested roots once.
        // `within(a, b)`: a is b or below it; "" (the root) holds everything.
        let within = |a: &str, b: &str| b.is_empty() || is_at_or_below(a, b);
        let mut roots: Vec<&str> = Vec::new();
        for w in &self.watched {
            let root = if within(w, &abs_dir) {
                w.as_str()
            } else if within(&abs_dir, w) {
                abs_dir.as_str()
            } else {
                continue;
            };
            if !roots.iter().any(|r| within(root, r)) {
                roots.retain(|r| !within(r, root));
                roots.push(root);
            }
        }
        for root in roots {
            for (k, v) in self.snapshot.subtree(root) {
                f(&self.store_key_cow(k), v);
            }
        }
    }

    /// [`View::store_key`], borrowed from `abs` when the key below the
    /// prefix is already a clean path (as etcd keys almost always are).
    fn store_key_cow<'a>(&self, abs: &'a str) -> std::borrow::Cow<'a, str> {
        let rest = abs.strip_prefix(self.prefix.as_str()).unwrap_or(abs);
        if is_clean_rooted(rest) {
            std::borrow::Cow::Borrowed(rest)
        } else {
            std::borrow::Cow::Owned(self.store_key(abs))
        }
    }

    /// memkv's `GetAll`: pairs whose key matches `pattern`, sorted by key.
    /// Only the pairs that match are copied out of the snapshot.
    fn get_all(&self, pattern: &str) -> Result<KvPairs, BadPattern> {
        // Validate the pattern even when nothing is there to match.
        path_match(pattern, "")?;
        let dir = literal_dir(pattern);
        // `*` and `?` never match `/`: without a class (which may), a key
        // matches only with as many `/` as the pattern (an escaped `\/`
        // is one too).
        let slashes =
            (!pattern.contains('[')).then(|| pattern.bytes().filter(|&b| b == b'/').count());
        // `/*`, `/a/*/b`: matched segment by segment.
        let simple = functions::simple_glob(pattern, &['?', '[', '\\']);
        let mut out: KvPairs = Vec::new();
        let mut bad = None;
        self.each_under(dir, |k, v| {
            if let Some(segs) = &simple {
                if functions::simple_match(segs, k) {
                    out.push((Arc::from(k), Arc::from(String::from_utf8_lossy(v))));
                }
                return;
            }
            if bad.is_some()
                || slashes.is_some_and(|n| k.bytes().filter(|&b| b == b'/').count() != n)
            {
                return;
            }
            match path_match(pattern, k) {
                Ok(true) => out.push((Arc::from(k), Arc::from(String::from_utf8_lossy(v)))),
                Ok(false) => {}
                Err(e) => bad = Some(e),
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        // Keys come in order from one root; sorting sorted input is one pass.
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    /// memkv's `List`.
    fn list(&self, file_path: &str) -> Vec<String> {
        let prefix = terms(file_path);
        let mut names = std::collections::BTreeSet::new();
        for (k, _) in self.entries_under(file_path) {
            if k == file_path {
                names.insert(gopath::base(&k));
                continue;
            }
            if same_prefix_terms(&prefix, &terms(&gopath::dir(&k))) {
                let stripped = k.strip_prefix(file_path).unwrap_or(&k);
                let stripped = stripped.strip_prefix('/').unwrap_or(stripped);
                names.insert(stripped.split('/').next().unwrap_or("").to_string());
            }
        }
        names.into_iter().collect()
    }

    /// memkv's `ListDir`.
    fn list_dir(&self, file_path: &str) -> Vec<String> {
        let prefix = terms(file_path);
        let mut names = std::collections::BTreeSet::new();
        for (k, _) in self.entries_under(file_path) {
            if k.starts_with(file_path) {
                let items = terms(&gopath::dir(&k));
                if same_prefix_terms(&prefix, &items) && items.len() > prefix.len() {
                    names.insert(items[prefix.len()].to_string());
                }
            }
        }
        names.into_iter().collect()
    }
}

/// (store key, value) pairs, as `gets` hands them to the template.
type KvPairs = Vec<(Arc<str>, Arc<str>)>;

/// Go's `path.ErrBadPattern`: a malformed glob given to `gets`/`getvs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
struct BadPattern;

/// Go's `path.Match`: `*` and `?` never match `/`; `[...]` classes with
/// ranges and `^` negation; `\\` escapes. A malformed pattern is an error
/// ([`BadPattern`]), as in Go.
fn path_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    path_match_bytes(pattern.as_bytes(), name.as_bytes())
}

/// The first UTF-8 character of `b` and its length (U+FFFD, 1 if invalid).
fn decode_rune(b: &[u8]) -> (char, usize) {
    for n in 1..=b.len().min(4) {
        if let Ok(s) = std::str::from_utf8(&b[..n]) {
            return (s.chars().next().unwrap_or('\u{FFFD}'), n);
        }
    }
    ('\u{FFFD}', 1)
}

fn scan_chunk(p: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut p = p;
    let mut star = false;
    while let [b'*', rest @ ..] = p {
        p = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &p[..i], &p[i..])
}

fn get_esc(chunk: &[u8]) -> Result<(char, &[u8]), BadPattern> {
    let mut c = chunk;
    if matches!(c.first(), None | Some(b'-') | Some(b']')) {
        return Err(BadPattern);
    }
    if c[0] == b'\\' {
        c = &c[1..];
        if c.is_empty() {
            return Err(BadPattern);
        }
    }
    let (r, n) = decode_rune(c);
    if r == '\u{FFFD}' && n == 1 {
        return Err(BadPattern);
    }
    let rest = &c[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

/// Matches `chunk` at the start of `s`; the rest of `s` when it does.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (rr, n) = decode_rune(s);
                    r = rr;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

fn path_match_bytes(pattern: &[u8], name: &[u8]) -> Result<bool, BadPattern> {
    let mut pattern = pattern;
    let mut name = name;
    'outer: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let first = match_chunk(chunk, name);
        if let Ok(Some(t)) = first
            && (t.is_empty() || !pattern.is_empty())
        {
            name = t;
            continue;
        }
        first?;
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if !pattern.is_empty() || t.is_empty() {
                        name = t;
                        continue 'outer;
                    }
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// memkv's `pathToTerms`: `strings.Split(path.Clean(p), "/")`.
fn terms(p: &str) -> Vec<String> {
    gopath::clean(p).split('/').map(str::to_string).collect()
}

fn same_prefix_terms(prefix: &[String], test: &[String]) -> bool {
    test.len() >= prefix.len() && prefix.iter().zip(test).all(|(a, b)| a == b)
}

/// The directory part of a glob that holds no wildcard: only keys under it
/// can match. Anything but a plain absolute path scans everything.
fn literal_dir(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    match pattern[..end].rfind('/') {
        Some(0) | None => "/",
        Some(i) => &pattern[..i],
    }
}

/// Whether `p` is what `path.Clean` makes of it and starts with `/`: no
/// empty, `.` or `..` element and no trailing `/` (except the root "/").
fn is_clean_rooted(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    rest.split('/')
        .all(|e| !e.is_empty() && e != "." && e != "..")
}

/// A `memkv.KVPair`.
fn kv_pair(key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Value {
    Value::Struct(Arc::new(Struct {
        type_name: "memkv.KVPair",
        fields: vec![
            ("Key", Value::String(key.into())),
            ("Value", Value::String(value.into())),
        ],
    }))
}

fn is_kv_pair(v: &Value) -> bool {
    matches!(v, Value::Struct(s) if s.type_name == "memkv.KVPair")
}

fn kv_key(v: &Value) -> &str {
    match v {
        Value::Struct(s) => s.field("Key").and_then(Value::as_str).unwrap_or(""),
        _ => "",
    }
}

fn strings(list: Vec<String>) -> Value {
    Value::List(list.into_iter().map(|s| Value::String(s.into())).collect())
}

// Arguments, checked the way Go's reflection-based call checks them.

fn arity(func: &str, args: &[Value], want: usize) -> Result<(), TemplateError> {
    if args.len() != want {
        return Err(TemplateError::Exec(format!(
            "wrong number of args for {func}: want {want} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn type_error(func: &str, want: &str, got: &Value) -> TemplateError {
    TemplateError::Exec(format!(
        "wrong type for value in call to {func}; expected {want}; got {}",
        go_type(got)
    ))
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Struct(s) => s.type_name,
        _ => "func",
    }
}

fn str_arg<'a>(func: &str, args: &'a [Value], i: usize) -> Result<&'a str, TemplateError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(type_error(func, "string", other)),
        None => Err(TemplateError::Exec(format!("missing argument for {func}"))),
    }
}

fn int_arg(func: &str, args: &[Value], i: usize) -> Result<i64, TemplateError> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Uint(n)) => i64::try_from(*n).map_err(|_| fail(func, "integer overflow")),
        Some(other) => Err(type_error(func, "int", other)),
        None => Err(TemplateError::Exec(format!("missing argument for {func}"))),
    }
}

fn string_list(func: &str, v: &Value) -> Result<Vec<String>, TemplateError> {
    match v {
        Value::List(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.to_string()),
                other => Err(type_error(func, "[]string", other)),
            })
            .collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(type_error(func, "[]string", other)),
    }
}

/// `strings.Split`.
fn go_split(s: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() {
        return s.chars().map(String::from).collect();
    }
    s.split(sep).map(str::to_string).collect()
}

/// `strings.Replace`.
fn go_replace(s: &str, old: &str, new: &str, n: i64) -> String {
    if n < 0 {
        s.replace(old, new)
    } else {
        s.replacen(old, new, usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// `unicode.ToUpper`/`ToLower` rune by rune (Go keeps a rune whose case
/// mapping is more than one rune, e.g. `ß`).
fn go_case(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            let mut m: Vec<char> = if upper {
                c.to_uppercase().collect()
            } else {
                c.to_lowercase().collect()
            };
            // A one-rune mapping is Go's. Of the multi-rune ones, the only
            // lower-casing one (U+0130 İ → i + U+0307) starts with Go's
            // rune; upper-casing ones (ß → SS) Go leaves alone.
            if m.len() == 1 || (!upper && !m.is_empty()) {
                m.remove(0)
            } else {
                c
            }
        })
        .collect()
}

/// Go's `strconv.NumError`: `parseBool` or `atoi` given text that is not
/// a bool or an integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strconv.{func}: parsing {}: {why}", go_quote(input))]
struct StrconvError {
    /// The Go function (`ParseBool`, `Atoi`).
    func: &'static str,
    /// The text given.
    input: String,
    /// What is wrong with it.
    why: NumProblem,
}

/// Go's `strconv.ErrSyntax` and `strconv.ErrRange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum NumProblem {
    #[error("invalid syntax")]
    Syntax,
    #[error("value out of range")]
    Range,
}

impl StrconvError {
    fn new(func: &'static str, input: &str, why: NumProblem) -> StrconvError {
        StrconvError {
            func,
            input: input.to_string(),
            why,
        }
    }
}

/// `strconv.ParseBool`.
fn parse_bool(s: &str) -> Result<bool, StrconvError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(StrconvError::new("ParseBool", s, NumProblem::Syntax)),
    }
}

/// `strconv.Atoi`.
fn atoi(s: &str) -> Result<i64, StrconvError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StrconvError::new("Atoi", s, NumProblem::Syntax));
    }
    s.parse::<i64>()
        .map_err(|_| StrconvError::new("Atoi", s, NumProblem::Range))
}

fn go_quote(s: &str) -> String {
    gotmpl::sprintf("%q", &[Value::String(s.into())]).unwrap_or_else(|_| format!("{s:?}"))
}

/// JSON (as Go's `encoding/json` decodes into `interface{}`) → value:
/// every number is a float64.
fn from_json(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Value::String(s.into()),
        J::Array(a) => Value::List(a.into_iter().map(from_json).collect()),
        J::Object(m) => Value::Map(Arc::new(
            m.into_iter()
                .map(|(k, v)| (Arc::from(k.as_str()), from_json(v)))
                .collect::<BTreeMap<_, _>>(),
        )),
    }
}

/// A moment in UTC, broken down as Go's `time` package does.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    yday: u32,
    weekday: usize,
    hour: u32,
    min: u32,
    sec: u32,
    nanos: u32,
}

impl Civil {
    fn now() -> Civil {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Civil::from_unix(i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos())
    }

    /// Seconds since 1970-01-01 UTC → civil date (Howard Hinnant's algorithm).
    fn from_unix(secs: i64, nanos: u32) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = CUM[(month - 1) as usize] + day + u32::from(leap && month > 2);
        Civil {
            year,
            month,
            day,
            yday,
            weekday: (days + 4).rem_euclid(7) as usize,
            hour: rem / 3600,
            min: rem / 60 % 60,
            sec: rem % 60,
            nanos,
        }
    }

    /// Go's `Time.Format(layout)` in UTC, for the elements of Go's
    /// reference time `Mon Jan 2 15:04:05 MST 2006`.
    fn format(&self, layout: &str) -> String {
        let tokens = self.layout_tokens();
        let mut out = String::new();
        let mut rest = layout;
        'scan: while !rest.is_empty() {
            if let Some((shown, after)) = self.fraction(rest) {
                out.push_str(&shown);
                rest = after;
                continue;
            }
            for (token, value) in &tokens {
                if let Some(after) = rest.strip_prefix(token) {
                    out.push_str(value);
                    rest = after;
                    continue 'scan;
                }
            }
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Fractional seconds at the start of `rest`: `.000` / `,000` (fixed
    /// width) or `.999` (trailing zeros trimmed, nothing at all when zero).
    /// What to print (the separator included) and the rest of the layout.
    fn fraction<'a>(&self, rest: &'a str) -> Option<(String, &'a str)> {
        let after = rest.strip_prefix(['.', ','])?;
        let zeros = after.bytes().take_while(|b| *b == b'0').count();
        let nines = after.bytes().take_while(|b| *b == b'9').count();
        let digits = zeros.max(nines);
        if digits == 0 || after[digits..].starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let frac = format!("{:09}", self.nanos);
        let frac = &frac[..digits.min(9)];
        let shown = if zeros > 0 {
            frac
        } else {
            frac.trim_end_matches('0')
        };
        let printed = if shown.is_empty() {
            String::new()
        } else {
            format!("{}{shown}", &rest[..1])
        };
        Some((printed, &after[digits..]))
    }

    /// Each element of Go's reference time and its value for this moment,
    /// longest first, as Go's `nextStdChunk` tries them.
    fn layout_tokens(&self) -> [(&'static str, String); 33] {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const DAYS: [&str; 7] = [
            "Sunday",
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
        ];
        let month = MONTHS[(self.month - 1) as usize];
        let wday = DAYS[self.weekday];
        let h12 = if self.hour % 12 == 0 {
            12
        } else {
            self.hour % 12
        };
        [
            ("January", month.to_string()),
            ("Jan", month[..3].to_string()),
            ("Monday", wday.to_string()),
            ("Mon", wday[..3].to_string()),
            ("MST", "UTC".into()),
            ("2006", format!("{:04}", self.year)),
            ("-07:00:00", "+00:00:00".into()),
            ("-070000", "+000000".into()),
            ("-07:00", "+00:00".into()),
            ("-0700", "+0000".into()),
            ("-07", "+00".into()),
            ("Z07:00:00", "Z".into()),
            ("Z070000", "Z".into()),
            ("Z07:00", "Z".into()),
            ("Z0700", "Z".into()),
            ("Z07", "Z".into()),
            ("002", format!("{:03}", self.yday)),
            ("__2", format!("{:>3}", self.yday)),
            ("01", format!("{:02}", self.month)),
            ("02", format!("{:02}", self.day)),
            ("_2", format!("{:>2}", self.day)),
            ("03", format!("{h12:02}")),
            ("04", format!("{:02}", self.min)),
            ("05", format!("{:02}", self.sec)),
            ("06", format!("{:02}", self.year.rem_euclid(100))),
            ("15", format!("{:02}", self.hour)),
            ("PM", if self.hour >= 12 { "PM" } else { "AM" }.into()),
            ("pm", if self.hour >= 12 { "pm" } else { "am" }.into()),
            ("1", self.month.to_string()),
            ("2", self.day.to_string()),
            ("3", h12.to_string()),
            ("4", self.min.to_string()),
            ("5", self.sec.to_string()),
        ]
    }

    /// Go's `Time.String()`.
    fn go_string(&self) -> String {
        self.format("2006-01-02 15:04:05.999999999 -0700 MST")
    }
}

/// The key (confd's store name) holding exactly `text`, if one does.
fn origin_of(text: &str) -> Option<String> {
    functions::current(|v| {
        v.and_then(|view| {
            view.entries_under("/")
                .into_iter()
                .find(|(_, value)| value == text)
                .map(|(k, _)| k)
        })
    })
}

/// "value of key K is not valid JSON: why", naming the key the text came
/// from when one of the resource's keys holds exactly that text.
fn not_json(text: &str, e: &serde_json::Error) -> String {
    match origin_of(text) {
        Some(k) => format!("value of key {k} is not valid JSON: {e}"),
        None => format!("the value is not valid JSON: {e}"),
    }
}

/// Valid JSON of the wrong shape (`64` where an object is read).
fn not_object(text: &str, want: &str) -> String {
    match origin_of(text) {
        Some(k) => format!("value of key {k} is JSON but not {want}"),
        None => format!("the value is JSON but not {want}"),
    }
}

/// confd's `sort.Sort` by length: Go's exact (unstable) order.
fn sort_by_len<T>(items: &mut [T], len: impl Fn(&T) -> usize) {
    crate::gosort::sort(items, |a, b| len(a) < len(b));
}

/// confd's function map (`newFuncMap` + memkv's store functions).
pub fn func_map() -> FuncMap {
    let mut m = FuncMap::new();
    key_functions(&mut m);
    string_functions(&mut m);
    encoding_functions(&mut m);
    system_functions(&mut m);
    list_functions(&mut m);
    arithmetic_functions(&mut m);
    dns_functions(&mut m);
    m
}

/// A confd function.
type GoFunc = fn(&[Value]) -> GoResult;

fn add(m: &mut FuncMap, name: &'static str, f: GoFunc) {
    m.insert(name.to_string(), Arc::new(f) as gotmpl::ValueFunc);
}

/// memkv's store functions: the resource's keys.
fn key_functions(m: &mut FuncMap) {
    add(m, "get", |a| {
        arity("get", a, 1)?;
        let key = str_arg("get", a, 0)?;
        with_view("get", |v| match v.lookup(key) {
            Some(val) => Ok(kv_pair(key.to_string(), val)),
            None => Err(fail("get", format!("key does not exist: {key}"))),
        })
    });
    add(m, "getv", |a| {
        if a.is_empty() {
            return Err(TemplateError::Exec(
                "wrong number of args for getv: want at least 1 got 0".into(),
            ));
        }
        let key = str_arg("getv", a, 0)?;
        let default = match a.get(1) {
            Some(_) => Some(str_arg("getv", a, 1)?),
            None => None,
        };
        for i in 2..a.len() {
            str_arg("getv", a, i)?;
        }
        with_view("getv", |v| match (v.lookup(key), default) {
            (Some(val), _) => Ok(Value::String(val.into())),
            (None, Some(d)) => Ok(Value::String(d.into())),
            (None, None) => Err(fail("getv", format!("key does not exist: {key}"))),
        })
    });
    add(m, "exists", |a| {
        arity("exists", a, 1)?;
        let key = str_arg("exists", a, 0)?;
        with_view("exists", |v| Ok(Value::Bool(v.lookup(key).is_some())))
    });
    add(m, "gets", |a| {
        arity("gets", a, 1)?;
        let pattern = str_arg("gets", a, 0)?;
        with_view("gets", |v| {
            let pairs = v.get_all(pattern).map_err(|e| fail("gets", e))?;
            let n = pairs.len();
            let list = Value::List(pairs.into_iter().map(|(k, v)| kv_pair(k, v)).collect());
            // Kept (`render --once`): the list is an `Arc`, so the template
            // dropping it frees nothing.
            functions::keep(n, || list.clone());
            Ok(list)
        })
    });
    add(m, "getvs", |a| {
        arity("getvs", a, 1)?;
        let pattern = str_arg("getvs", a, 0)?;
        with_view("getvs", |v| {
            let mut values: Vec<Arc<str>> = v
                .get_all(pattern)
                .map_err(|e| fail("getvs", e))?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            values.sort();
            Ok(Value::List(values.into_iter().map(Value::String).collect()))
        })
    });
    add(m, "ls", |a| {
        arity("ls", a, 1)?;
        let p = str_arg("ls", a, 0)?;
        with_view("ls", |v| Ok(strings(v.list(p))))
    });
    add(m, "lsdir", |a| {
        arity("lsdir", a, 1)?;
        let p = str_arg("lsdir", a, 0)?;
        with_view("lsdir", |v| Ok(strings(v.list_dir(p))))
    });
}

/// Paths and strings (`path`, `strings`, `strconv`).
fn string_functions(m: &mut FuncMap) {
    add(m, "base", |a| {
        arity("base", a, 1)?;
        Ok(Value::String(gopath::base(str_arg("base", a, 0)?).into()))
    });
    add(m, "dir", |a| {
        arity("dir", a, 1)?;
        Ok(Value::String(gopath::dir(str_arg("dir", a, 0)?).into()))
    });
    add(m, "split", |a| {
        arity("split", a, 2)?;
        Ok(strings(go_split(
            str_arg("split", a, 0)?,
            str_arg("split", a, 1)?,
        )))
    });
    add(m, "join", |a| {
        arity("join", a, 2)?;
        let items = string_list("join", &a[0])?;
        Ok(Value::String(items.join(str_arg("join", a, 1)?).into()))
    });
    add(m, "toUpper", |a| {
        arity("toUpper", a, 1)?;
        Ok(Value::String(
            go_case(str_arg("toUpper", a, 0)?, true).into(),
        ))
    });
    add(m, "toLower", |a| {
        arity("toLower", a, 1)?;
        Ok(Value::String(
            go_case(str_arg("toLower", a, 0)?, false).into(),
        ))
    });
    add(m, "contains", |a| {
        arity("contains", a, 2)?;
        Ok(Value::Bool(
            str_arg("contains", a, 0)?.contains(str_arg("contains", a, 1)?),
        ))
    });
    add(m, "replace", |a| {
        arity("replace", a, 4)?;
        Ok(Value::String(
            go_replace(
                str_arg("replace", a, 0)?,
                str_arg("replace", a, 1)?,
                str_arg("replace", a, 2)?,
                int_arg("replace", a, 3)?,
            )
            .into(),
        ))
    });
    add(m, "trimSuffix", |a| {
        arity("trimSuffix", a, 2)?;
        let s = str_arg("trimSuffix", a, 0)?;
        let suffix = str_arg("trimSuffix", a, 1)?;
        Ok(Value::String(s.strip_suffix(suffix).unwrap_or(s).into()))
    });
    add(m, "parseBool", |a| {
        arity("parseBool", a, 1)?;
        parse_bool(str_arg("parseBool", a, 0)?)
            .map(Value::Bool)
            .map_err(|e| fail("parseBool", e))
    });
    add(m, "atoi", |a| {
        arity("atoi", a, 1)?;
        atoi(str_arg("atoi", a, 0)?)
            .map(Value::Int)
            .map_err(|e| fail("atoi", e))
    });
}

/// Encodings and data: base64, JSON, maps.
fn encoding_functions(m: &mut FuncMap) {
    add(m, "base64Encode", |a| {
        use base64::Engine as _;
        arity("base64Encode", a, 1)?;
        let s = str_arg("base64Encode", a, 0)?;
        Ok(Value::String(
            crate::functions::GO_STD_BASE64.encode(s).into(),
        ))
    });
    add(m, "base64Decode", |a| {
        use base64::Engine as _;
        arity("base64Decode", a, 1)?;
        // Go's decoder skips \r and \n.
        let s: String = str_arg("base64Decode", a, 0)?
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        let bytes = crate::functions::GO_STD_BASE64
            .decode(s)
            .map_err(|e| fail("base64Decode", format!("illegal base64 data: {e}")))?;
        Ok(Value::String(
            String::from_utf8_lossy(&bytes).into_owned().into(),
        ))
    });
    add(m, "json", |a| {
        arity("json", a, 1)?;
        let s = str_arg("json", a, 0)?;
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Null) => Ok(Value::Map(Arc::new(BTreeMap::new()))),
            Ok(v @ serde_json::Value::Object(_)) => Ok(from_json(v)),
            Ok(_) => Err(fail("json", not_object(s, "an object"))),
            Err(e) => Err(fail("json", not_json(s, &e))),
        }
    });
    add(m, "jsonArray", |a| {
        arity("jsonArray", a, 1)?;
        let s = str_arg("jsonArray", a, 0)?;
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Null) => Ok(Value::List(Arc::from(Vec::new()))),
            Ok(v @ serde_json::Value::Array(_)) => Ok(from_json(v)),
            Ok(_) => Err(fail("jsonArray", not_object(s, "an array"))),
            Err(e) => Err(fail("jsonArray", not_json(s, &e))),
        }
    });
    add(m, "map", |a| {
        if a.len() % 2 != 0 {
            return Err(fail("map", "invalid map call"));
        }
        let mut m = BTreeMap::new();
        for pair in a.chunks(2) {
            let Value::String(k) = &pair[0] else {
                return Err(fail("map", "map keys must be strings"));
            };
            m.insert(k.clone(), pair[1].clone());
        }
        Ok(Value::Map(Arc::new(m)))
    });
}

/// The environment, the clock and the file system.
fn system_functions(m: &mut FuncMap) {
    add(m, "getenv", |a| {
        if a.is_empty() {
            return Err(TemplateError::Exec(
                "wrong number of args for getenv: want at least 1 got 0".into(),
            ));
        }
        let name = str_arg("getenv", a, 0)?;
        let default = match a.get(1) {
            Some(_) => str_arg("getenv", a, 1)?,
            None => "",
        };
        let value = std::env::var(name).unwrap_or_default();
        Ok(Value::String(if value.is_empty() {
            default.into()
        } else {
            value.into()
        }))
    });
    add(m, "datetime", |a| {
        // `{{datetime}}` prints the time as Go does. `{{datetime.Format L}}`
        // reaches here with L as the argument (the engine passes a chain's
        // arguments to the function): answer a value whose `.Format` field
        // is the time in layout L.
        let now = Civil::now();
        match a {
            [] => Ok(Value::String(now.go_string().into())),
            [Value::String(layout)] => Ok(Value::Struct(Arc::new(Struct {
                type_name: "time.Time",
                fields: vec![("Format", Value::String(now.format(layout).into()))],
            }))),
            _ => Err(fail(
                "datetime",
                "expected no argument, or .Format with a layout",
            )),
        }
    });
    add(m, "fileExists", |a| {
        arity("fileExists", a, 1)?;
        // confd's IsFileExist: false only when the path does not exist
        // (a path through a regular file, ENOTDIR, counts as existing).
        let exists = match std::fs::metadata(str_arg("fileExists", a, 0)?) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        };
        Ok(Value::Bool(exists))
    });
}

/// Lists: reversing, sorting, sequences.
fn list_functions(m: &mut FuncMap) {
    add(m, "reverse", |a| {
        arity("reverse", a, 1)?;
        // confd reverses []string and []KVPair; anything else comes back
        // unchanged. (confd leaves gets's list unreversed, a bug: liveconf
        // reverses it; README lists the difference.)
        match &a[0] {
            Value::List(items)
                if items.iter().all(|i| matches!(i, Value::String(_)))
                    || items.iter().all(is_kv_pair) =>
            {
                Ok(Value::List(items.iter().rev().cloned().collect()))
            }
            other => Ok(other.clone()),
        }
    });
    add(m, "sortByLength", |a| {
        arity("sortByLength", a, 1)?;
        let mut items = string_list("sortByLength", &a[0])?;
        sort_by_len(&mut items, |s| s.len());
        Ok(strings(items))
    });
    add(m, "sortKVByLength", |a| {
        arity("sortKVByLength", a, 1)?;
        let mut items: Vec<Value> = match &a[0] {
            Value::List(items) if items.iter().all(is_kv_pair) => items.to_vec(),
            Value::Nil => Vec::new(),
            other => return Err(type_error("sortKVByLength", "[]memkv.KVPair", other)),
        };
        sort_by_len(&mut items, |v| kv_key(v).len());
        Ok(Value::List(items.into()))
    });
    add(m, "seq", |a| {
        arity("seq", a, 2)?;
        let (first, last) = (int_arg("seq", a, 0)?, int_arg("seq", a, 1)?);
        if last.saturating_sub(first) > 10_000_000 {
            return Err(fail(
                "seq",
                format!("seq {first} {last}: more than 10000000 numbers"),
            ));
        }
        Ok(Value::List((first..=last).map(Value::Int).collect()))
    });
}

/// Integer arithmetic (Go's int: wrapping, division truncates).
fn arithmetic_functions(m: &mut FuncMap) {
    add(m, "add", |a| {
        arity("add", a, 2)?;
        Ok(Value::Int(
            int_arg("add", a, 0)?.wrapping_add(int_arg("add", a, 1)?),
        ))
    });
    add(m, "sub", |a| {
        arity("sub", a, 2)?;
        Ok(Value::Int(
            int_arg("sub", a, 0)?.wrapping_sub(int_arg("sub", a, 1)?),
        ))
    });
    add(m, "mul", |a| {
        arity("mul", a, 2)?;
        Ok(Value::Int(
            int_arg("mul", a, 0)?.wrapping_mul(int_arg("mul", a, 1)?),
        ))
    });
    add(m, "div", |a| {
        arity("div", a, 2)?;
        let (x, y) = (int_arg("div", a, 0)?, int_arg("div", a, 1)?);
        if y == 0 {
            return Err(fail("div", "runtime error: integer divide by zero"));
        }
        Ok(Value::Int(x.wrapping_div(y)))
    });
    add(m, "mod", |a| {
        arity("mod", a, 2)?;
        let (x, y) = (int_arg("mod", a, 0)?, int_arg("mod", a, 1)?);
        if y == 0 {
            return Err(fail("mod", "runtime error: integer divide by zero"));
        }
        Ok(Value::Int(x.wrapping_rem(y)))
    });
}

/// Looks `q` up for the render in progress (through the daemon's DNS
/// dependencies, which record it, or directly). confd renders an empty
/// list when a look-up fails; liveconf fails the render instead (naming
/// the function, the name and why), so a daemon never installs a file
/// emptied by a DNS failure (README: DNS failure policy).
fn go_dns(func: &str, q: &crate::dns::Query) -> Result<crate::dns::Records, TemplateError> {
    let lookups = functions::current(|v| v.map(|v| v.dns.clone())).unwrap_or_default();
    lookups
        .lookup(q)
        .map_err(|e| fail(func, format!("{}: {e}", q.name)))
}

/// confd's `lookupIP`: the addresses as strings, sorted as strings (Go's
/// `sort.Strings`).
fn go_ips(func: &str, name: &str) -> Result<Vec<String>, TemplateError> {
    use crate::dns::{Kind, Query, Records};
    if name.is_empty() {
        return Err(fail(func, "give a name to look up (the name is empty)"));
    }
    crate::dns::check_name(name).map_err(|e| fail(func, e))?;
    let mut ips: Vec<String> = match go_dns(func, &Query::new(Kind::Ip, name))? {
        Records::Ip(v) => v.into_iter().map(|ip| ip.to_string()).collect(),
        _ => Vec::new(),
    };
    ips.sort();
    Ok(ips)
}

/// confd's `lookupIPV4` / `lookupIPV6`: the addresses of one family. confd
/// gives an empty list when the name has none of that family; liveconf
/// fails the render (as Tera's `lookup_ipv4` / `lookup_ipv6` do), so no
/// file is installed with the list emptied.
fn go_family(func: &str, name: &str, family: &str, mark: char) -> Result<Value, TemplateError> {
    let ips: Vec<String> = go_ips(func, name)?
        .into_iter()
        .filter(|ip| ip.contains(mark))
        .collect();
    if ips.is_empty() {
        if let Some(l) = functions::current(|v| v.map(|v| v.dns.clone())) {
            l.unusable(
                &crate::dns::Query::new(crate::dns::Kind::Ip, name),
                &format!("no {family} address for {name} (NODATA)"),
            );
        }
        return Err(fail(func, format!("{name}: no {family} address")));
    }
    Ok(strings(ips))
}

/// DNS, as confd's functions: the same arguments and output.
fn dns_functions(m: &mut FuncMap) {
    add(m, "lookupIP", |a| {
        arity("lookupIP", a, 1)?;
        Ok(strings(go_ips("lookupIP", str_arg("lookupIP", a, 0)?)?))
    });
    add(m, "lookupIPV4", |a| {
        arity("lookupIPV4", a, 1)?;
        let name = str_arg("lookupIPV4", a, 0)?;
        go_family("lookupIPV4", name, "IPv4", '.')
    });
    add(m, "lookupIPV6", |a| {
        arity("lookupIPV6", a, 1)?;
        let name = str_arg("lookupIPV6", a, 0)?;
        go_family("lookupIPV6", name, "IPv6", ':')
    });
    add(m, "lookupSRV", |a| {
        use crate::dns::{Kind, Query, Records};
        arity("lookupSRV", a, 3)?;
        let (service, proto, name) = (
            str_arg("lookupSRV", a, 0)?,
            str_arg("lookupSRV", a, 1)?,
            str_arg("lookupSRV", a, 2)?,
        );
        let fqdn = if service.is_empty() && proto.is_empty() {
            name.to_string()
        } else {
            format!("_{service}._{proto}.{name}")
        };
        if fqdn.is_empty() {
            return Err(fail(
                "lookupSRV",
                "give a name to look up (the name is empty)",
            ));
        }
        crate::dns::check_name(&fqdn).map_err(|e| fail("lookupSRV", e))?;
        let found = match go_dns("lookupSRV", &Query::new(Kind::Srv, &fqdn))? {
            Records::Srv(v) => v,
            _ => Vec::new(),
        };
        let mut records: Vec<(String, u16, u16, u16)> = found
            .into_iter()
            .map(|r| (format!("{}.", r.target), r.port, r.priority, r.weight))
            .collect();
        // confd sorts by the concatenation target+port+priority+weight.
        records.sort_by_key(|(t, p, pr, w)| format!("{t}{p}{pr}{w}"));
        Ok(Value::List(
            records
                .into_iter()
                .map(|(t, p, pr, w)| {
                    Value::Struct(Arc::new(Struct {
                        type_name: "*net.SRV",
                        fields: vec![
                            ("Target", Value::String(t.into())),
                            ("Port", Value::Int(p.into())),
                            ("Priority", Value::Int(pr.into())),
                            ("Weight", Value::Int(w.into())),
                        ],
                    }))
                })
                .collect(),
        ))
    });
}

/// A parsed Go template.
#[derive(Clone)]
pub struct GoTemplate(Arc<gotmpl::Template>);

/// Why a Go template cannot be parsed or executed, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoTemplateError {
    /// A syntax error (gotmpl names the template, line and column).
    #[error("{0}")]
    Parse(String),
    /// Executing it failed (a function's error, a missing key...).
    #[error("{0}")]
    Exec(String),
}

/// Parses `text` as the Go template `name` (its base name, as confd names it).
pub fn parse(name: &str, text: &str) -> Result<GoTemplate, GoTemplateError> {
    gotmpl::Template::new(name)
        .funcs(func_map())
        .parse(text)
        .map(|t| GoTemplate(Arc::new(t)))
        .map_err(|e| GoTemplateError::Parse(one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Executes `t` with `view` visible to the key functions.
pub fn render(t: &GoTemplate, view: View) -> Result<String, GoTemplateError> {
    functions::with_scope(view, || t.0.execute_to_string(&Value::Nil)).map_err(|e| {
        // gotmpl's "execution error: " prefix says nothing the message does not.
        GoTemplateError::Exec(
            one_line(&format!("template {}: {e}", t.0.name())).replace("execution error: ", ""),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Key, Snapshot, Val};

    fn view(prefix: &str, watched: &[&str], pairs: &[(&str, &str)]) -> View {
        View {
            snapshot: Snapshot::from_pairs(
                1,
                pairs
                    .iter()
                    .map(|(k, v)| (Key::from(*k), Val::from(v.as_bytes().to_vec()))),
            ),
            prefix: prefix.into(),
            watched: watched.iter().map(|w| w.to_string()).collect(),
            dns: Default::default(),
        }
    }

    fn run(v: View, text: &str) -> Result<String, GoTemplateError> {
        render(&parse("t.tmpl", text)?, v)
    }

    /// Trial finding 4: confd's DNS functions refuse a name that is no
    /// DNS name in words, before any query.
    #[test]
    fn go_dns_functions_refuse_a_name_that_is_no_dns_name() {
        for (text, want) in [
            (
                r#"{{lookupIP "bad name.t12.test"}}"#,
                r#"error calling lookupIP: "bad name.t12.test" is not a valid DNS name (a space is not allowed"#,
            ),
            (
                r#"{{lookupIPV4 "a..t12.test"}}"#,
                r#"error calling lookupIPV4: "a..t12.test" is not a valid DNS name (an empty label: two dots in a row)"#,
            ),
            (
                r#"{{lookupSRV "x" "tcp" "https://up.example/"}}"#,
                r#"error calling lookupSRV: "_x._tcp.https://up.example/" is not a valid DNS name (":" is not allowed"#,
            ),
        ] {
            let err = run(view("/", &["/"], &[]), text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("proto error"), "{text}: {err}");
        }
    }

    #[test]
    fn keys_are_seen_relative_to_the_prefix_and_only_under_keys() {
        let v = view(
            "/svc",
            &["/svc/a", "/svc/b"],
            &[
                ("/svc/a/x", "1"),
                ("/svc/b", "2"),
                ("/svc/c", "3"),
                ("/other", "4"),
            ],
        );
        let out = run(
            v,
            r#"{{getv "/a/x"}} {{getv "/b"}} {{exists "/c"}} {{getv "/c" "d"}} {{ls "/"}} {{gets "/*"}}"#,
        )
        .unwrap();
        assert_eq!(out, "1 2 false d [b] [{/b 2}]");
    }

    #[test]
    fn gets_matches_by_depth_and_classes_may_match_a_slash() {
        let v = view(
            "/p",
            &["/p"],
            &[
                ("/p/a", "1"),
                ("/p/a/b", "2"),
                ("/p/a/b/c", "3"),
                ("/p/x//y", "4"),
            ],
        );
        let out = run(
            v,
            r#"{{gets "/*"}} {{gets "/*/*"}} {{gets "/a[/]b"}} {{gets `/a\/b`}} {{gets "/x/y"}}"#,
        )
        .unwrap();
        // `/x//y` is stored as confd names it, path.Clean'd: `/x/y`.
        assert_eq!(
            out,
            "[{/a 1}] [{/a/b 2} {/x/y 4}] [{/a/b 2}] [{/a/b 2}] [{/x/y 4}]"
        );
    }

    #[test]
    fn keys_slash_sees_everything() {
        let v = view("", &[""], &[("/a", "1"), ("/b/c", "2")]);
        let out = run(
            v,
            r#"{{gets "/*"}} {{gets "/*/*"}} {{ls "/"}} {{getv "/b/c"}}"#,
        )
        .unwrap();
        assert_eq!(out, "[{/a 1}] [{/b/c 2}] [a] 2");
    }

    #[test]
    fn ls_and_lsdir_follow_memkv() {
        let v = view(
            "",
            &["/s", "/r"],
            &[
                ("/s/api/hosts/a", "1"),
                ("/s/api/port", "2"),
                ("/s/version", "3"),
                ("/r", "4"),
            ],
        );
        let out = run(
            v,
            r#"{{ls "/s"}} {{lsdir "/s"}} {{ls "/"}} {{lsdir "/"}} {{ls "/nope"}}"#,
        )
        .unwrap();
        assert_eq!(out, "[api version] [api] [r] [] []");
    }

    #[test]
    fn missing_key_without_default_fails_naming_it() {
        let v = view("", &["/a"], &[]);
        let e = run(v, r#"{{getv "/a/b"}}"#).unwrap_err().to_string();
        assert!(e.contains("key does not exist: /a/b"), "{e}");
    }

    #[test]
    fn go_arithmetic_and_printing() {
        let v = view("", &["/a"], &[]);
        let out = run(
            v,
            r#"{{div 7 2}} {{mod 7 2}} {{3 | add 5 | mul 2}} {{seq 1 3}} {{seq 3 1}} {{json `{"n":1000000,"f":0.25,"z":null}`}}"#,
        )
        .unwrap();
        assert_eq!(out, "3 1 16 [1 2 3] [] map[f:0.25 n:1e+06 z:<nil>]");
    }

    #[test]
    fn path_match_follows_go() {
        let m = |p: &str, n: &str| path_match(p, n);
        assert_eq!(m("/a/*", "/a/b"), Ok(true));
        assert_eq!(m("/a/*", "/a/b/c"), Ok(false));
        assert_eq!(m("/a/*/c", "/a/b/c"), Ok(true));
        assert_eq!(m("/a/b?", "/a/bc"), Ok(true));
        assert_eq!(m("/a/[a-c]x", "/a/bx"), Ok(true));
        assert_eq!(m("/a/[^a-c]x", "/a/bx"), Ok(false));
        assert_eq!(m("/a/*x", "/a/yyx"), Ok(true));
        assert_eq!(m("/a/\\*", "/a/*"), Ok(true));
        assert_eq!(m("/a/[", "/a/b"), Err(BadPattern));
        assert!(m("/a/[]", "/zz").is_err());
        assert_eq!(m("*", "abc"), Ok(true));
        assert_eq!(m("a*b*c", "axxbyyc"), Ok(true));
    }

    #[test]
    fn time_formats_like_go() {
        // 2015-01-23 13:34:56.093250283 UTC, a Friday.
        let t = Civil::from_unix(1_422_020_096, 93_250_283);
        assert_eq!(t.go_string(), "2015-01-23 13:34:56.093250283 +0000 UTC");
        assert_eq!(
            t.format("Jan 2, 2006 at 3:04pm (MST)"),
            "Jan 23, 2015 at 1:34pm (UTC)"
        );
        assert_eq!(
            t.format("Monday 02/01/06 15:04:05.000 Z07:00 __2"),
            "Friday 23/01/15 13:34:56.093 Z  23"
        );
        assert_eq!(
            Civil::from_unix(951_782_400, 0).format("2006-01-02 002"),
            "2000-02-29 060"
        );
    }

    #[test]
    fn atoi_and_parse_bool_follow_strconv() {
        assert_eq!(atoi("+12"), Ok(12));
        assert!(atoi("12abc").is_err());
        assert!(atoi("").is_err());
        assert_eq!(parse_bool("T"), Ok(true));
        assert!(parse_bool("yes").is_err());
    }
}
