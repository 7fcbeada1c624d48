//! `liveconf check --explain`: what is left to move from confd's Go
//! templates to Tera, resource by resource.
//!
//! For every Go-template resource it lists the functions the template calls
//! (confd's and text/template's builtins), each with its Tera counterpart,
//! and whether a Tera version of the template already sits next to it in
//! `templates/` (same path, `.tera` instead of `.tmpl`). It reads templates
//! only: no backend, no rendering.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::resource::{Engine, Resource, Source};

/// confd / text/template function → how to write it in liveconf's Tera.
/// The README's "Switching from confd" table says the same.
pub const TERA_EQUIVALENTS: &[(&str, &str)] = &[
    ("get", "get(key=K) → {key, value}"),
    ("gets", "gets(pattern=P)"),
    ("getv", "getv(key=K, default=D)"),
    ("getvs", "getvs(pattern=P) | sort (confd sorts by value)"),
    ("ls", "ls(path=P)"),
    ("lsdir", "lsdir(path=P)"),
    (
        "exists",
        "exists(key=K) (a key outside `keys` is an error, not false)",
    ),
    ("base", "| basename"),
    ("dir", "| dirname"),
    ("split", "| split(pat=S)"),
    ("join", "| join(sep=S)"),
    ("json", "| json_decode"),
    ("jsonArray", "| json_decode"),
    ("map", "a map literal {\"k\": v}"),
    ("getenv", "getenv(name=N, default=\"\")"),
    (
        "datetime",
        "none: a file that changes every render reloads every time",
    ),
    ("toUpper", "| upper"),
    ("toLower", "| lower"),
    ("contains", "S in T"),
    ("replace", "| replace(from=A, to=B) (all occurrences)"),
    (
        "trimSuffix",
        "| trim_end(pat=S) (strips S repeatedly; confd strips it once)",
    ),
    ("lookupIP", "lookup_ip(name=N)"),
    ("lookupIPV4", "lookup_ipv4(name=N)"),
    ("lookupIPV6", "lookup_ipv6(name=N)"),
    ("lookupSRV", "lookup_srv(name=_svc._proto.domain)"),
    ("fileExists", "file_exists(path=P)"),
    ("base64Encode", "| base64_encode"),
    ("base64Decode", "| base64_decode"),
    ("parseBool", "| parse_bool"),
    ("reverse", "| reverse"),
    ("sortByLength", "| sort_by_length"),
    ("sortKVByLength", "| sort_by_length(attribute=\"key\")"),
    ("add", "a + b"),
    ("sub", "a - b"),
    ("mul", "a * b"),
    (
        "div",
        "integer division (see the README's template reference)",
    ),
    ("mod", "a % b"),
    ("seq", "range(start=A, end=B + 1)"),
    ("atoi", "| int"),
    ("printf", "format(fmt=F, args=[...])"),
    ("print", "~ (concatenation)"),
    ("println", "~ and a newline"),
    ("len", "| length"),
    ("index", "x[i] / x[\"k\"]"),
    ("slice", "no direct equivalent"),
    ("html", "| escape_html"),
    ("js", "no equivalent"),
    ("urlquery", "no equivalent"),
    ("and", "and"),
    ("or", "or"),
    ("not", "not"),
    ("eq", "=="),
    ("ne", "!="),
    ("lt", "<"),
    ("le", "<="),
    ("gt", ">"),
    ("ge", ">="),
    ("call", "no equivalent"),
];

/// The function names a Go template's actions call, sorted. Quoted strings
/// and comments are skipped, so a key named `getv` is not a call.
pub fn functions_used(text: &str) -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let action = &after[..end];
        rest = &after[end + 2..];
        if action
            .trim_start_matches('-')
            .trim_start()
            .starts_with("/*")
        {
            continue;
        }
        for word in words_outside_strings(action) {
            if let Some((name, _)) = TERA_EQUIVALENTS.iter().find(|(n, _)| *n == word) {
                used.insert(*name);
            }
        }
    }
    used
}

/// Identifiers in an action, outside "...", `...` and '...' literals, and
/// not preceded by `.` or `$` (fields and variables are not calls).
fn words_outside_strings(action: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = action.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'`' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let prev = if start > 0 { b[start - 1] } else { b' ' };
                if prev != b'.' && prev != b'$' {
                    out.push(&action[start..i]);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The migration report for `resources` (templates under `templates_dir`).
pub fn report(resources: &[Resource], templates_dir: &Path) -> String {
    let mut out = String::new();
    let mut go = 0;
    let mut ported = 0;
    for r in resources {
        let Source::Template(src, engine) = &r.source else {
            continue;
        };
        if *engine != Engine::Go {
            continue;
        }
        go += 1;
        let path = templates_dir.join(src);
        let tera_src = match src.strip_suffix(".tmpl") {
            Some(stem) => format!("{stem}.tera"),
            None => format!("{src}.tera"),
        };
        let has_tera = templates_dir.join(&tera_src).is_file();
        if has_tera {
            ported += 1;
        }
        let _ = writeln!(
            out,
            "{}: Go template {} — Tera version {}",
            r.name,
            src,
            if has_tera {
                format!("{tera_src} exists: set src = \"{tera_src}\" to switch")
            } else {
                format!("{tera_src} not written yet")
            }
        );
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let base = src.rsplit('/').next().unwrap_or(src);
                if let Err(e) = crate::gotemplate::parse(base, &text) {
                    let _ = writeln!(out, "  does not parse as a Go template: {e}");
                }
                if text.contains("{%") || text.contains("(key=") {
                    let _ = writeln!(
                        out,
                        "  looks like a Tera template: set engine = \"tera\" if it is one"
                    );
                }
                let used = functions_used(&text);
                if used.is_empty() {
                    let _ = writeln!(out, "  uses no functions");
                }
                for name in used {
                    let tera = TERA_EQUIVALENTS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, t)| *t)
                        .unwrap_or("");
                    let _ = writeln!(out, "  {name:<15} → {tera}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  cannot read {}: {e}", path.display());
            }
        }
    }
    let _ = writeln!(
        out,
        "{go} Go-template resource{}, {ported} with a Tera version written; {} Tera or format resource{}",
        if go == 1 { "" } else { "s" },
        resources.len() - go,
        if resources.len() - go == 1 { "" } else { "s" },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_found_but_not_strings_fields_or_comments() {
        let used = functions_used(
            "{{/* getv */}}{{range gets \"/getv/*\"}}{{.Key | base}} {{$len := 1}}{{printf \"%d\" (add 1 2)}}{{end}}",
        );
        let used: Vec<&str> = used.into_iter().collect();
        assert_eq!(used, ["add", "base", "gets", "printf"]);
    }
}
