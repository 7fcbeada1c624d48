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
    pub fn parse(s: &str) -> Result<Wait, String> {
        let (min, max) = match s.split_once(':') {
            Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
            None => {
                let m = parse_duration(s)?;
                (m, m * 4)
            }
        };
        if max < min {
            return Err(format!("wait {s:?}: MAX must not be less than MIN"));
        }
        Ok(Wait { min, max })
    }

    /// Whether coalescing is off.
    pub fn is_off(&self) -> bool {
        self.max.is_zero()
    }
}

/// Parses a duration like `30s`, `100ms`, `5m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. \"30s\", \"100ms\", \"5m\")"))
}

/// Parses a mode: an octal string (`"0644"`, `"644"`, `"0o644"`). A TOML
/// integer is refused: `0o644` and `420` are the same integer once parsed,
/// so no reading of it is safe.
pub fn parse_mode(v: &toml::Value) -> Result<u32, String> {
    let text = match v {
        toml::Value::String(s) => s.trim().to_string(),
        toml::Value::Integer(i) => {
            return Err(format!(
                "mode must be a quoted octal string like \"0644\", not the integer {i} \
                 (TOML reads 0o644 and 420 as the same number)"
            ));
        }
        other => {
            return Err(format!(
                "mode must be an octal string like \"0644\", not {other}"
            ));
        }
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("mode {text:?} is not an octal number like \"0644\""))?;
    if digits.is_empty() || mode > 0o7777 {
        return Err(format!("mode {text:?} is out of range (0000 to 7777)"));
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
    #[serde(default)]
    keys: Vec<String>,
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
) -> Result<TemplateTable, String> {
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
                    return Err(format!(
                        "{f} is given twice (confd matches field names regardless of case)"
                    ));
                }
            }
            None => tracing::warn!(
                "{}{}: unknown field `{k}` in [template] is ignored, as confd ignores it \
                 (liveconf knows: {})",
                path.display(),
                key_line(text, k)
                    .map(|l| format!(" line {l}"))
                    .unwrap_or_default(),
                TEMPLATE_FIELDS.join(", ")
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
                    return format!(
                        "{}{k}: {}",
                        key_line(text, written)
                            .map(|l| format!("line {l}: "))
                            .unwrap_or_default(),
                        one_line(fe)
                    );
                }
            }
            one_line(e)
        })
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
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |message: String| ResourceError {
        name: name.clone(),
        file: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let doc: Option<toml::Table> = toml::from_str(&text).ok();
    let confd_style = doc.as_ref().and_then(|d| {
        d.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("template"))
            .and_then(|(k, v)| Some((k.clone(), v.as_table()?.clone())))
            .filter(|(_, table)| wants_go(table))
    });
    let t = match (&doc, confd_style) {
        (Some(doc), Some((key, table))) => {
            tolerant_table(path, &text, doc, &key, &table).map_err(err)?
        }
        _ => {
            let parsed: ResourceFile = toml::from_str(&text).map_err(|e| {
                // Fields written without the [template] heading: say that,
                // not "unknown field".
                match &doc {
                    Some(t) if !t.contains_key("template") && !t.is_empty() => err(
                        "no [template] table: put the fields (src, dest, keys...) under a [template] heading"
                            .into(),
                    ),
                    _ => err(toml_error(&text, &e)),
                }
            })?;
            let Some(t) = parsed.template else {
                return Err(err(
                    "no [template] table (every resource file needs one)".into()
                ));
            };
            t
        }
    };

    let source = match (&t.src, t.format) {
        (Some(_), Some(_)) => return Err(err("give either src or format, not both".into())),
        (None, None) => {
            return Err(err(
                "missing src (a template under templates/) or format = \"json\" | \"php\"".into(),
            ));
        }
        (Some(src), None) => {
            if t.decode.is_some() {
                return Err(err("decode only applies with format; in a template use tree(decode=\"json\") or json_decode".into()));
            }
            let engine = t.engine.unwrap_or_else(|| Engine::for_src(src));
            let full = templates_dir.join(src);
            if !full.is_file() {
                return Err(err(format!(
                    "src template {} does not exist",
                    full.display()
                )));
            }
            Source::Template(src.clone(), engine)
        }
        (None, Some(f)) => {
            if t.engine.is_some() {
                return Err(err(
                    "engine applies to a template (src), not to format".into()
                ));
            }
            let decode = match t.decode.as_deref() {
                None | Some("string") => Decode::String,
                Some("json") => Decode::Json,
                Some(other) => return Err(err(format!("decode must be \"json\", not {other:?}"))),
            };
            Source::Format(f, decode)
        }
    };

    let dest = t
        .dest
        .as_deref()
        .ok_or_else(|| err("missing dest".into()))?;
    let dest = PathBuf::from(dest);
    // No `..`: the path must name one place, so `--dest-root` keeps every
    // destination below its directory and the fleet compares like with like.
    if dest
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(err(format!(
            "dest {:?} must not contain `..`: write the path it means",
            dest.display().to_string()
        )));
    }
    if !dest.is_absolute() || dest.file_name().is_none() {
        return Err(err(format!(
            "dest {:?} must be an absolute file path",
            dest.display()
        )));
    }

    let go = matches!(source, Source::Template(_, Engine::Go));
    // confd renders a template without keys (one that only reads the
    // environment, say); a Tera resource must say what it reads.
    if t.keys.is_empty() && !go {
        return Err(err("keys is empty: list the key prefixes this resource reads (\"/\" for everything under prefix)".into()));
    }
    let own_prefix = t.prefix.as_deref().unwrap_or("");
    let prefix = match rule {
        // confd: any non-empty global prefix, even "/", replaces.
        PrefixRule::Replace if !global_prefix.is_empty() => {
            keypath::normalize_prefix(global_prefix)
        }
        _ => keypath::join_prefixes(&[global_prefix, own_prefix]),
    };
    let mut watched: Vec<String> = t
        .keys
        .iter()
        .map(|k| keypath::join_prefixes(&[&prefix, k]))
        .collect();
    watched.sort();
    watched.dedup();

    let mode = t.mode.as_ref().map(parse_mode).transpose().map_err(err)?;
    let uid = match (&t.owner, t.uid) {
        (Some(_), Some(_)) => return Err(err("give owner or uid, not both".into())),
        (Some(o), None) => Some(lookup_user(o).map_err(err)?),
        (None, u) => u,
    };
    let gid = match (&t.group, t.gid) {
        (Some(_), Some(_)) => return Err(err("give group or gid, not both".into())),
        (Some(g), None) => Some(lookup_group(g).map_err(err)?),
        (None, g) => g,
    };
    let command_timeout = match &t.command_timeout {
        Some(s) => parse_duration(s).map_err(|e| err(format!("command_timeout: {e}")))?,
        None => DEFAULT_COMMAND_TIMEOUT,
    };
    if command_timeout.is_zero() {
        return Err(err("command_timeout must be more than 0s".into()));
    }
    let wait = t
        .wait
        .as_deref()
        .map(Wait::parse)
        .transpose()
        .map_err(|e| err(format!("wait: {e}")))?;
    let reload_splay = t
        .reload_splay
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| err(format!("reload_splay: {e}")))?;

    Ok(Resource {
        name: name.clone(),
        file: path.to_path_buf(),
        source,
        dest,
        prefix,
        keys: t.keys,
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
    })
}

fn lookup_user(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("owner {name:?}: no such user")),
        Err(e) => Err(format!("owner {name:?}: cannot look up: {e}")),
    }
}

fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("group {name:?}: no such group")),
        Err(e) => Err(format!("group {name:?}: cannot look up: {e}")),
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

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode(&toml::Value::String("0640".into())), Ok(0o640));
        assert_eq!(parse_mode(&toml::Value::String("644".into())), Ok(0o644));
        assert!(parse_mode(&toml::Value::Integer(644)).is_err());
        assert!(parse_mode(&toml::Value::String("0689".into())).is_err());
        assert!(parse_mode(&toml::Value::String("".into())).is_err());
        assert!(parse_mode(&toml::Value::String("17777".into())).is_err());
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
