//! Resource files: `conf.d/*.toml`, one resource each, confd-compatible.
//!
//! Parsing is strict: unknown fields, a missing `[template]` table, a mode
//! that is not octal, an unknown owner or group, a missing template — each is
//! one error naming the file (and the line, where TOML knows it). A
//! resource's name is its file's stem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::encode::Decode;
use crate::keypath;

/// Default `command_timeout` for check and reload commands.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `max_shrink`, in percent: a new render less than half the
/// installed file's size is refused until confirmed (see [`crate::guard`]).
pub const DEFAULT_MAX_SHRINK: u8 = 50;

/// A resource that could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct ResourceError {
    /// The resource's name (file stem).
    pub name: String,
    /// The resource file.
    pub file: PathBuf,
    /// What is wrong, with the line where known.
    pub message: String,
}

/// A duration that does not parse (`wait`, `command_timeout`, flags), in
/// plain words: what was written, how to write one, and what is wrong when
/// that can be said (the parser's own words, "expected number at 0", say
/// nothing to people).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{input:?} is not a duration{}: write a number and a unit, like \"30s\", \"100ms\", \"5m\" or \"1h30m\"",
    self.what()
)]
pub struct DurationError {
    /// The text given.
    input: String,
    /// What humantime said.
    source: humantime::DurationError,
}

impl DurationError {
    /// The text that did not parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong, when it can be said: " (...)", or nothing.
    fn what(&self) -> String {
        match &self.source {
            _ if self.input.trim().starts_with('-') => " (it cannot be negative)".to_string(),
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!(" ({unit:?} is not a unit: use ms, s, m, h or d)")
            }
            humantime::DurationError::NumberOverflow => " (too large)".to_string(),
            _ => String::new(),
        }
    }
}

/// A coalescing window (`wait`) that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WaitError {
    /// MIN or MAX is not a duration.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// `MIN:MAX` with MAX below MIN.
    #[error("wait {0:?}: MAX must not be less than MIN")]
    MaxBelowMin(String),
}

/// A `mode` that is not a quoted octal file mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// A TOML integer: `0o644` and `420` are the same number once parsed.
    #[error(
        "mode must be a quoted octal string like \"0644\", not the integer {0} \
         (TOML reads 0o644 and 420 as the same number)"
    )]
    Integer(i64),
    /// Neither a string nor an integer (the value, as TOML writes it).
    #[error("mode must be an octal string like \"0644\", not {0}")]
    NotString(String),
    /// A string that is not an octal number.
    #[error("mode {0:?} is not an octal number like \"0644\"")]
    NotOctal(String),
    /// Octal, but empty or above 7777.
    #[error("mode {0:?} is out of range (0000 to 7777)")]
    OutOfRange(String),
}

/// A `max_shrink` that is not a percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "max_shrink must be a quoted percentage from \"0%\" to \"100%\", or \"off\" \
     (e.g. max_shrink = \"50%\"), not {0}"
)]
pub struct ShrinkError(String);

/// Parses `max_shrink`: `"50%"` is `Some(50)`; `"off"` and `"100%"` (any
/// shrink accepted) are `None`.
pub fn parse_max_shrink(v: &toml::Value) -> Result<Option<u8>, ShrinkError> {
    let toml::Value::String(s) = v else {
        return Err(ShrinkError(v.to_string()));
    };
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match t
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<u8>().ok())
    {
        Some(100) => Ok(None),
        Some(n) if n < 100 => Ok(Some(n)),
        _ => Err(ShrinkError(format!("{s:?}"))),
    }
}

/// An `owner` or `group` that names no account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// No such user.
    #[error("owner {0:?}: no such user")]
    NoUser(String),
    /// No such group.
    #[error("group {0:?}: no such group")]
    NoGroup(String),
    /// The account database could not be read.
    #[error("{field} {name:?}: cannot look up: {source}")]
    Lookup {
        /// `owner` or `group`.
        field: &'static str,
        /// The name given.
        name: String,
        /// Why.
        source: nix::Error,
    },
}

/// A confd-style `[template]` table whose fields do not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TableError {
    /// One field written twice, in different cases.
    #[error("{0} is given twice (confd matches field names regardless of case)")]
    Twice(&'static str),
    /// One field has the wrong type or value.
    #[error("{}{field}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Field {
        /// Where it is written.
        line: Option<usize>,
        /// The field.
        field: String,
        /// What the TOML reader said.
        message: String,
    },
    /// The table does not read, and no one field is to blame.
    #[error("{0}")]
    Table(String),
}

/// Generated output without a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Sorted, indented JSON with a trailing newline.
    Json,
    /// `<?php return [...];`
    Php,
}

/// Which template language a resource's `src` is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Tera 2, liveconf's own (strict) language.
    Tera,
    /// Go text/template with confd's function map and semantics.
    Go,
}

impl Engine {
    /// The engine a resource uses when it does not say: confd's `.tmpl`
    /// convention means Go, anything else Tera.
    pub fn for_src(src: &str) -> Engine {
        if src.ends_with(".tmpl") {
            Engine::Go
        } else {
            Engine::Tera
        }
    }

    /// The name used in `engine = "..."` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tera => "tera",
            Engine::Go => "go",
        }
    }
}

/// How the global prefix combines with a resource's own `prefix`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefixRule {
    /// liveconf: the global prefix is joined in front of the resource's.
    #[default]
    Join,
    /// confd (settings read from a `confd.toml`): a non-empty global prefix
    /// replaces the resource's prefix.
    Replace,
}

/// Where a resource's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A template, by its path under `templates/`, in one of the engines.
    Template(String, Engine),
    /// The tree of `keys`, encoded.
    Format(Format, Decode),
}

/// A coalescing window: render once the keys have been quiet for `min`, but
/// no later than `max` after the first change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Quiet period.
    pub min: Duration,
    /// Longest delay after the first change.
    pub max: Duration,
}

impl Wait {
    /// No coalescing.
    pub const OFF: Wait = Wait {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// Parses `"MIN"` or `"MIN:MAX"` (`"0s"` is off; MIN alone means MAX = 4 × MIN).
    pub fn parse(s: &str) -> Result<Wait, WaitError> {
        let (min, max) = match s.split_once(':') {
            Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
            None => {
                let m = parse_duration(s)?;
                (m, m * 4)
            }
        };
        if max < min {
            return Err(WaitError::MaxBelowMin(s.to_string()));
        }
        Ok(Wait { min, max })
    }

    /// Whether coalescing is off.
    pub fn is_off(&self) -> bool {
        self.max.is_zero()
    }
}

/// Parses a duration like `30s`, `100ms`, `5m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|source| DurationError {
        input: s.to_string(),
        source,
    })
}

/// Parses a mode: an octal string (`"0644"`, `"644"`, `"0o644"`). A TOML
/// integer is refused: `0o644` and `420` are the same integer once parsed,
/// so no reading of it is safe.
pub fn parse_mode(v: &toml::Value) -> Result<u32, ModeError> {
    let text = match v {
        toml::Value::String(s) => s.trim().to_string(),
        toml::Value::Integer(i) => return Err(ModeError::Integer(*i)),
        other => return Err(ModeError::NotString(other.to_string())),
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    let Ok(mode) = u32::from_str_radix(digits, 8) else {
        return Err(ModeError::NotOctal(text));
    };
    if digits.is_empty() || mode > 0o7777 {
        return Err(ModeError::OutOfRange(text));
    }
    Ok(mode)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceFile {
    template: Option<TemplateTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateTable {
    src: Option<String>,
    dest: Option<String>,
    prefix: Option<String>,
    /// `None` when the file has no `keys` line (`keys = []` is `Some`).
    keys: Option<Vec<String>>,
    mode: Option<toml::Value>,
    owner: Option<String>,
    uid: Option<u32>,
    group: Option<String>,
    gid: Option<u32>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    format: Option<Format>,
    decode: Option<String>,
    command_timeout: Option<String>,
    #[serde(default)]
    create_dest_dirs: bool,
    #[serde(default)]
    backup: bool,
    wait: Option<String>,
    reload_splay: Option<String>,
    engine: Option<Engine>,
    #[serde(default)]
    allow_empty: bool,
    max_shrink: Option<toml::Value>,
}

/// Every field of `[template]`, as written in `TemplateTable`.
const TEMPLATE_FIELDS: &[&str] = &[
    "src",
    "dest",
    "prefix",
    "keys",
    "mode",
    "owner",
    "uid",
    "group",
    "gid",
    "check_cmd",
    "reload_cmd",
    "format",
    "decode",
    "command_timeout",
    "create_dest_dirs",
    "backup",
    "wait",
    "reload_splay",
    "engine",
    "allow_empty",
    "max_shrink",
];

/// One validated resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// The name (file stem).
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Template or generated format.
    pub source: Source,
    /// The destination path (absolute).
    pub dest: PathBuf,
    /// The absolute, normalised prefix (global prefix joined with the resource's).
    pub prefix: String,
    /// `keys` as written (relative to `prefix`).
    pub keys: Vec<String>,
    /// Absolute prefixes this resource depends on.
    pub watched: Vec<String>,
    /// Target mode; `None` keeps the existing file's mode (0644 for a new file).
    pub mode: Option<u32>,
    /// Target owner; `None` leaves ownership to the process.
    pub uid: Option<u32>,
    /// Target group; `None` leaves it to the process.
    pub gid: Option<u32>,
    /// Check command, run on the staged file.
    pub check_cmd: Option<String>,
    /// Reload command, run after install.
    pub reload_cmd: Option<String>,
    /// Limit for each command.
    pub command_timeout: Duration,
    /// Create missing parent directories of `dest`.
    pub create_dest_dirs: bool,
    /// Keep the previous file as `DEST.bak`.
    pub backup: bool,
    /// Coalescing window; `None` uses the global one.
    pub wait: Option<Wait>,
    /// Random delay before the reload; `None` uses the global one.
    pub reload_splay: Option<Duration>,
    /// Whether the resource may render when none of its watched prefixes
    /// holds a key (the empty guard, see [`crate::guard`]).
    pub allow_empty: bool,
    /// The largest shrink accepted, in percent of the installed file's
    /// bytes; `None` is off (the shrink guard, see [`crate::guard`]).
    pub max_shrink: Option<u8>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Describes a TOML error as "line L, column C: message".
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().trim_end_matches('.').replace('\n', " ");
    match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            format!("line {l}, column {c}: {msg}")
        }
        None => msg,
    }
}

/// The line (1-based) where `key = ...` is written in `text`, if found.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| l.strip_prefix(&format!("'{key}'")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
                || l.strip_prefix('[').is_some_and(|h| {
                    h.trim_start_matches('[')
                        .trim_start()
                        .strip_prefix(key)
                        .is_some_and(|r| r.trim_start().starts_with(']') || r.starts_with('.'))
                })
        })
        .map(|i| i + 1)
}

/// The field of `[template]` most like `written`, if one is close enough
/// to be what was meant (`chek_cmd` → `check_cmd`).
fn nearest_field(written: &str) -> Option<&'static str> {
    let w = written.to_ascii_lowercase();
    TEMPLATE_FIELDS
        .iter()
        .map(|f| (*f, strsim::jaro_winkler(&w, f)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, _)| f)
}

/// "unknown field `X` (did you mean `Y`?)", or with the list of fields
/// when none is close.
fn unknown_field(written: &str) -> String {
    match nearest_field(written) {
        Some(f) => format!("unknown field `{written}` (did you mean `{f}`?)"),
        None => format!(
            "unknown field `{written}` (the fields of [template] are: {})",
            TEMPLATE_FIELDS.join(", ")
        ),
    }
}

/// Whether a `[template]` table (as parsed, keys as written) asks for the
/// Go engine: `engine = "go"`, or a `src` ending in `.tmpl` without
/// `engine = "tera"`. Keys are matched case-insensitively, as confd does.
fn wants_go(table: &toml::Table) -> bool {
    let get = |name: &str| {
        table
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
    };
    match get("engine") {
        Some(e) => e == "go",
        None => get("src").is_some_and(|s| Engine::for_src(s) == Engine::Go),
    }
}

/// Reads a confd-style resource the way confd does: `[template]` fields
/// matched case-insensitively, unknown fields ignored with a warning that
/// names the file and line.
fn tolerant_table(
    path: &Path,
    text: &str,
    doc: &toml::Table,
    template_key: &str,
    table: &toml::Table,
) -> Result<TemplateTable, TableError> {
    for k in doc.keys().filter(|k| *k != template_key) {
        tracing::warn!(
            "{}{}: `{k}` outside [template] is ignored (confd ignores it too)",
            path.display(),
            key_line(text, k)
                .map(|l| format!(" line {l}"))
                .unwrap_or_default()
        );
    }
    let mut fields = toml::Table::new();
    for (k, v) in table {
        let known = TEMPLATE_FIELDS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(k))
            .copied();
        match known {
            Some(f) => {
                if fields.insert(f.to_string(), v.clone()).is_some() {
                    return Err(TableError::Twice(f));
                }
            }
            None => tracing::warn!(
                "{}{}: {}; it is ignored, as confd ignores it",
                path.display(),
                key_line(text, k)
                    .map(|l| format!(" line {l}"))
                    .unwrap_or_default(),
                unknown_field(k)
            ),
        }
    }
    let one_line = |e: toml::de::Error| e.message().trim().trim_end_matches('.').replace('\n', " ");
    toml::Value::Table(fields.clone())
        .try_into::<TemplateTable>()
        .map_err(|e| {
            // Name the field and its line: try each field on its own.
            for (k, v) in &fields {
                let mut alone = toml::Table::new();
                alone.insert(k.clone(), v.clone());
                if let Err(fe) = toml::Value::Table(alone).try_into::<TemplateTable>() {
                    let written = table
                        .keys()
                        .find(|w| w.eq_ignore_ascii_case(k))
                        .map_or(k.as_str(), String::as_str);
                    return TableError::Field {
                        line: key_line(text, written),
                        field: k.clone(),
                        message: one_line(fe),
                    };
                }
            }
            TableError::Table(one_line(e))
        })
}

/// The resource file being loaded, to name it in errors.
struct Loading<'a> {
    name: String,
    path: &'a Path,
    /// The file's text once read (to name the line of a field).
    text: String,
}

impl Loading<'_> {
    fn err(&self, message: impl std::fmt::Display) -> ResourceError {
        ResourceError {
            name: self.name.clone(),
            file: self.path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// [`Loading::err`] about field `key`, with the line it is on.
    fn err_at(&self, key: &str, message: impl std::fmt::Display) -> ResourceError {
        match key_line(&self.text, key) {
            Some(n) => self.err(format!("line {n}: {message}")),
            None => self.err(message),
        }
    }
}

/// Parses one resource file. `templates_dir` is where `src` is looked up;
/// `global_prefix` combines with the resource's `prefix` as `rule` says.
///
/// A Tera resource is read strictly (unknown fields are errors). A Go
/// template resource (confd's) is read as confd reads it: field names in
/// any case, unknown fields warned about and ignored, `keys` may be empty.
pub fn load(
    path: &Path,
    templates_dir: &Path,
    global_prefix: &str,
    rule: PrefixRule,
) -> Result<Resource, ResourceError> {
    let mut l = Loading {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path,
        text: String::new(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| l.err(format!("cannot read: {e}")))?;
    l.text.clone_from(&text);
    let l = l;
    let t = read_table(&l, &text)?;
    let source = source(&l, &t, templates_dir)?;
    let dest = destination(&l, &t)?;
    let go = matches!(source, Source::Template(_, Engine::Go));
    // confd renders a template without keys (one that only reads the
    // environment, say). A Tera template must say what it reads: keys, or
    // `keys = []` written out for one that reads only DNS (or the
    // environment); a format resource dumps keys, so it needs some.
    let keys = match (t.keys.clone(), &source) {
        (Some(k), Source::Format(..)) if k.is_empty() => {
            return Err(l.err(
                "keys is empty: a format resource writes the tree of its keys; list the key prefixes to write (\"/\" for everything under prefix)",
            ));
        }
        (Some(k), _) => k,
        (None, _) if go => Vec::new(),
        (None, Source::Format(..)) => {
            return Err(l.err(
                "keys is missing: list the key prefixes this resource writes (\"/\" for everything under prefix)",
            ));
        }
        (None, _) => {
            return Err(l.err(
                "keys is missing: list the key prefixes this resource reads (\"/\" for everything under prefix), or write keys = [] for a template that reads no keys (only DNS or the environment)",
            ));
        }
    };
    let prefix = resource_prefix(&t, global_prefix, rule);
    let mut watched: Vec<String> = keys
        .iter()
        .map(|k| keypath::join_prefixes(&[&prefix, k]))
        .collect();
    watched.sort();
    watched.dedup();
    let (mode, uid, gid) = ownership(&l, &t)?;
    let (command_timeout, wait, reload_splay) = timing(&l, &t)?;
    let max_shrink = match &t.max_shrink {
        None => Some(DEFAULT_MAX_SHRINK),
        Some(v) => parse_max_shrink(v).map_err(|e| l.err_at("max_shrink", e))?,
    };

    Ok(Resource {
        name: l.name,
        file: path.to_path_buf(),
        source,
        dest,
        prefix,
        keys,
        watched,
        mode,
        uid,
        gid,
        check_cmd: t.check_cmd.filter(|c| !c.trim().is_empty()),
        reload_cmd: t.reload_cmd.filter(|c| !c.trim().is_empty()),
        command_timeout,
        create_dest_dirs: t.create_dest_dirs,
        backup: t.backup,
        wait,
        reload_splay,
        allow_empty: t.allow_empty,
        max_shrink,
    })
}

/// The `[template]` table of `text`: read as confd reads it when it is a
/// Go template resource, strictly otherwise.
fn read_table(l: &Loading, text: &str) -> Result<TemplateTable, ResourceError> {
    let doc: Option<toml::Table> = toml::from_str(text).ok();
    let confd_style = doc.as_ref().and_then(|d| {
        d.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("template"))
            .and_then(|(k, v)| Some((k.clone(), v.as_table()?.clone())))
            .filter(|(_, table)| wants_go(table))
    });
    if let (Some(doc), Some((key, table))) = (&doc, confd_style) {
        return tolerant_table(l.path, text, doc, &key, &table).map_err(|e| l.err(e));
    }
    // Strict: an unknown field is an error, with the field probably meant.
    if let Some(table) = doc
        .as_ref()
        .and_then(|d| d.get("template"))
        .and_then(|t| t.as_table())
        && let Some(k) = table
            .keys()
            .find(|k| !TEMPLATE_FIELDS.contains(&k.as_str()))
    {
        let line = key_line(text, k)
            .map(|n| format!("line {n}: "))
            .unwrap_or_default();
        return Err(l.err(format!("{line}{}", unknown_field(k))));
    }
    let parsed: ResourceFile = toml::from_str(text).map_err(|e| {
        // Fields written without the [template] heading: say that,
        // not "unknown field".
        match &doc {
            Some(t) if !t.contains_key("template") && !t.is_empty() => l.err(
                "no [template] table: put the fields (src, dest, keys...) under a [template] heading",
            ),
            _ => l.err(toml_error(text, &e)),
        }
    })?;
    parsed
        .template
        .ok_or_else(|| l.err("no [template] table (every resource file needs one)"))
}

/// Where the content comes from: a template (that exists) in an engine,
/// or a format.
fn source(l: &Loading, t: &TemplateTable, templates_dir: &Path) -> Result<Source, ResourceError> {
    match (&t.src, t.format) {
        (Some(_), Some(_)) => Err(l.err("give either src or format, not both")),
        (None, None) => {
            Err(l.err("missing src (a template under templates/) or format = \"json\" | \"php\""))
        }
        (Some(src), None) => {
            if t.decode.is_some() {
                return Err(l.err("decode only applies with format; in a template use tree(decode=\"json\") or json_decode"));
            }
            let engine = t.engine.unwrap_or_else(|| Engine::for_src(src));
            let full = templates_dir.join(src);
            if !full.is_file() {
                return Err(l.err_at(
                    "src",
                    format!("src template {} does not exist", full.display()),
                ));
            }
            Ok(Source::Template(src.clone(), engine))
        }
        (None, Some(f)) => {
            if t.engine.is_some() {
                return Err(l.err("engine applies to a template (src), not to format"));
            }
            let decode = match t.decode.as_deref() {
                None | Some("string") => Decode::String,
                Some("json") => Decode::Json,
                Some(other) => {
                    return Err(
                        l.err_at("decode", format!("decode must be \"json\", not {other:?}"))
                    );
                }
            };
            Ok(Source::Format(f, decode))
        }
    }
}

/// `dest`: an absolute file path without `..`.
fn destination(l: &Loading, t: &TemplateTable) -> Result<PathBuf, ResourceError> {
    let dest = t.dest.as_deref().ok_or_else(|| l.err("missing dest"))?;
    let dest = PathBuf::from(dest);
    // No `..`: the path must name one place, so `--dest-root` keeps every
    // destination below its directory and the fleet compares like with like.
    if dest
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(l.err_at(
            "dest",
            format!(
                "dest {:?} must not contain `..`: write the path it means",
                dest.display().to_string()
            ),
        ));
    }
    if !dest.is_absolute() || dest.file_name().is_none() {
        return Err(l.err_at(
            "dest",
            format!("dest {:?} must be an absolute file path", dest.display()),
        ));
    }
    Ok(dest)
}

/// The resource's absolute prefix: its own `prefix` with the global one.
fn resource_prefix(t: &TemplateTable, global_prefix: &str, rule: PrefixRule) -> String {
    let own_prefix = t.prefix.as_deref().unwrap_or("");
    match rule {
        // confd: any non-empty global prefix, even "/", replaces.
        PrefixRule::Replace if !global_prefix.is_empty() => {
            keypath::normalize_prefix(global_prefix)
        }
        _ => keypath::join_prefixes(&[global_prefix, own_prefix]),
    }
}

/// Mode, owner and group (names looked up).
type Ownership = (Option<u32>, Option<u32>, Option<u32>);

fn ownership(l: &Loading, t: &TemplateTable) -> Result<Ownership, ResourceError> {
    let mode = t
        .mode
        .as_ref()
        .map(parse_mode)
        .transpose()
        .map_err(|e| l.err_at("mode", e))?;
    let uid = match (&t.owner, t.uid) {
        (Some(_), Some(_)) => return Err(l.err("give owner or uid, not both")),
        (Some(o), None) => Some(lookup_user(o).map_err(|e| l.err_at("owner", e))?),
        (None, u) => u,
    };
    let gid = match (&t.group, t.gid) {
        (Some(_), Some(_)) => return Err(l.err("give group or gid, not both")),
        (Some(g), None) => Some(lookup_group(g).map_err(|e| l.err_at("group", e))?),
        (None, g) => g,
    };
    Ok((mode, uid, gid))
}

/// `command_timeout`, `wait` and `reload_splay`.
type Timing = (Duration, Option<Wait>, Option<Duration>);

fn timing(l: &Loading, t: &TemplateTable) -> Result<Timing, ResourceError> {
    let command_timeout = match &t.command_timeout {
        Some(s) => parse_duration(s)
            .map_err(|e| l.err_at("command_timeout", format!("command_timeout: {e}")))?,
        None => DEFAULT_COMMAND_TIMEOUT,
    };
    if command_timeout.is_zero() {
        return Err(l.err_at("command_timeout", "command_timeout must be more than 0s"));
    }
    let wait = t
        .wait
        .as_deref()
        .map(Wait::parse)
        .transpose()
        .map_err(|e| l.err_at("wait", format!("wait: {e}")))?;
    let reload_splay = t
        .reload_splay
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| l.err_at("reload_splay", format!("reload_splay: {e}")))?;
    Ok((command_timeout, wait, reload_splay))
}

fn lookup_user(name: &str) -> Result<u32, AccountError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(AccountError::NoUser(name.to_string())),
        Err(source) => Err(AccountError::Lookup {
            field: "owner",
            name: name.to_string(),
            source,
        }),
    }
}

fn lookup_group(name: &str) -> Result<u32, AccountError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(AccountError::NoGroup(name.to_string())),
        Err(source) => Err(AccountError::Lookup {
            field: "group",
            name: name.to_string(),
            source,
        }),
    }
}

/// Every `*.toml` in `conf_d`, sorted by name. Hidden files (an editor's
/// `.#x.toml` lock, a `.x.toml` being written) are not resources, as in
/// run-parts and systemd's drop-in directories.
pub fn list(conf_d: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_d)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// A plain Tera resource watching `watched`, for unit tests elsewhere in the
/// crate: every optional field unset.
#[cfg(test)]
pub(crate) fn test_resource(name: &str, watched: &[&str]) -> Resource {
    Resource {
        name: name.into(),
        file: Default::default(),
        source: Source::Template("t".into(), Engine::Tera),
        dest: "/x".into(),
        prefix: String::new(),
        keys: vec![],
        watched: watched.iter().map(|s| s.to_string()).collect(),
        mode: None,
        uid: None,
        gid: None,
        check_cmd: None,
        reload_cmd: None,
        command_timeout: Duration::from_secs(1),
        create_dest_dirs: false,
        backup: false,
        wait: None,
        reload_splay: None,
        allow_empty: false,
        max_shrink: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_takes_toml_files_but_not_hidden_ones() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "b.toml",
            "a.toml",
            ".#a.toml",
            ".c.toml",
            "d.toml~",
            "e.toml.dpkg-old",
        ] {
            std::fs::write(d.path().join(name), "").unwrap();
        }
        std::fs::create_dir(d.path().join("dir.toml")).unwrap();
        let names: Vec<String> = list(d.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.toml", "b.toml"]);
    }

    /// Found by the second trial: `mode = 644` named no line, while an
    /// unknown field did. A field's error names the line it is on.
    #[test]
    fn a_fields_error_names_its_line() {
        let d = tempfile::tempdir().unwrap();
        let templates = d.path().join("templates");
        std::fs::create_dir(&templates).unwrap();
        std::fs::write(templates.join("t.tera"), "x").unwrap();
        let p = d.path().join("r.toml");
        for (field, want) in [
            ("mode = 644", "line 5: mode must be a quoted octal string"),
            (
                "wait = \"soon\"",
                "line 5: wait: \"soon\" is not a duration",
            ),
            (
                "command_timeout = \"0s\"",
                "line 5: command_timeout must be more than 0s",
            ),
        ] {
            let text = format!(
                "[template]\nsrc = \"t.tera\"\ndest = \"/tmp/x\"\nkeys = [\"/\"]\n{field}\n"
            );
            std::fs::write(&p, text).unwrap();
            let e = load(&p, &templates, "", PrefixRule::Join)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{field}: {e}");
        }
    }

    /// DNS trial finding 9: a Tera resource that reads only DNS says so
    /// with `keys = []`; without a `keys` line it is refused, naming
    /// `keys = []`; a format resource, which dumps keys, needs some.
    #[test]
    fn keys_written_empty_is_a_resource_that_reads_no_keys() {
        let d = tempfile::tempdir().unwrap();
        let templates = d.path().join("templates");
        std::fs::create_dir(&templates).unwrap();
        std::fs::write(templates.join("t.tera"), "x").unwrap();
        let load_text = |text: &str| {
            let p = d.path().join("r.toml");
            std::fs::write(&p, text).unwrap();
            load(&p, &templates, "", PrefixRule::Join)
        };
        let r = load_text("[template]\nsrc = \"t.tera\"\ndest = \"/tmp/x\"\nkeys = []\n").unwrap();
        assert!(r.keys.is_empty() && r.watched.is_empty(), "{r:?}");
        let e = load_text("[template]\nsrc = \"t.tera\"\ndest = \"/tmp/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("keys is missing") && e.contains("keys = []"),
            "{e}"
        );
        let e = load_text("[template]\nformat = \"json\"\ndest = \"/tmp/x\"\nkeys = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys is empty"), "{e}");
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode(&toml::Value::String("0640".into())), Ok(0o640));
        assert_eq!(parse_mode(&toml::Value::String("644".into())), Ok(0o644));
        assert_eq!(
            parse_mode(&toml::Value::Integer(644)),
            Err(ModeError::Integer(644))
        );
        assert!(parse_mode(&toml::Value::String("0689".into())).is_err());
        assert!(parse_mode(&toml::Value::String("".into())).is_err());
        assert!(parse_mode(&toml::Value::String("17777".into())).is_err());
    }

    #[test]
    fn max_shrink_is_a_percentage_or_off() {
        let s = |v: &str| parse_max_shrink(&toml::Value::String(v.into()));
        assert_eq!(s("50%"), Ok(Some(50)));
        assert_eq!(s(" 0% "), Ok(Some(0)));
        assert_eq!(s("100%"), Ok(None));
        assert_eq!(s("off"), Ok(None));
        for bad in ["50", "101%", "-1%", "half", "0.5", ""] {
            assert!(s(bad).is_err(), "{bad}");
        }
        let e = parse_max_shrink(&toml::Value::Integer(50)).unwrap_err();
        assert!(e.to_string().contains("not 50"), "{e}");
    }

    #[test]
    fn unknown_fields_name_the_nearest_one() {
        assert_eq!(
            unknown_field("chek_cmd"),
            "unknown field `chek_cmd` (did you mean `check_cmd`?)"
        );
        assert_eq!(nearest_field("Reload_Cmd"), Some("reload_cmd"));
        assert_eq!(nearest_field("allow_emtpy"), Some("allow_empty"));
        assert_eq!(nearest_field("maxshrink"), Some("max_shrink"));
        assert_eq!(nearest_field("zzz"), None);
        assert!(unknown_field("zzz").contains("the fields of [template] are: src, dest"));
    }

    #[test]
    fn waits_parse() {
        let w = Wait::parse("100ms:1s").unwrap();
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(100), Duration::from_secs(1))
        );
        assert!(Wait::parse("0s").unwrap().is_off());
        assert_eq!(Wait::parse("1s").unwrap().max, Duration::from_secs(4));
        assert!(Wait::parse("2s:1s").is_err());
        assert!(Wait::parse("soon").is_err());
    }
}
