//! Rendering: one resource, one snapshot in; bytes out. Pure — no I/O
//! except what a template explicitly asks for (`getenv`, DNS look-ups).

use crate::dns::DnsConfig;
use crate::encode::{self, Decode};
use crate::functions::{self, Scope};
use crate::gotemplate;
use crate::keypath;
use crate::resource::{Engine, Format, Resource, Source};
use crate::store::Snapshot;
use crate::templates::{self, TemplateSet};

/// Default largest output a resource may produce (`max_output_bytes`):
/// a runaway template is refused rather than filling a disk.
pub const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// What a render may use besides the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// For `lookup_srv`.
    pub dns: DnsConfig,
    /// Largest output accepted, in bytes.
    pub max_output: usize,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            dns: DnsConfig::default(),
            max_output: MAX_OUTPUT,
        }
    }
}

/// Renders `res` from `snapshot`. The error is one message naming what is
/// wrong (the template and line, the key).
///
/// Synchronous, and it may block (a template's DNS look-ups wait for their
/// answer): async code runs it on the blocking pool, as `apply` does.
pub fn render(
    res: &Resource,
    snapshot: &Snapshot,
    templates: &TemplateSet,
    env: &Env,
) -> Result<Vec<u8>, String> {
    if let Some(why) = snapshot.unreadable_among(&res.watched) {
        return Err(why.to_string());
    }
    let out = match &res.source {
        Source::Format(format, decode) => render_format(res, snapshot, *format, *decode)?,
        Source::Template(name, Engine::Go) => {
            let template = templates.go(name)?;
            let view = gotemplate::View {
                snapshot: snapshot.clone(),
                prefix: res.prefix.clone(),
                watched: res.watched.clone(),
                dns: env.dns.clone(),
            };
            gotemplate::render(template, view)?
        }
        Source::Template(name, Engine::Tera) => {
            if let Some(problem) = templates.problem(name) {
                return Err(problem);
            }
            let mut ctx = tera::Context::new();
            ctx.insert("revision", &snapshot.revision());
            ctx.insert("resource", &res.name);
            let scope = Scope {
                snapshot: snapshot.clone(),
                prefix: res.prefix.clone(),
                watched: res.watched.clone(),
                dns: env.dns.clone(),
            };
            functions::with_scope(scope, || templates.tera().render(name, &ctx))
                .map_err(|e| templates::describe(&e))?
        }
    };
    if out.len() > env.max_output {
        return Err(format!(
            "rendered output is {} bytes, more than the limit of {} bytes (max_output_bytes)",
            out.len(),
            env.max_output
        ));
    }
    Ok(out.into_bytes())
}

fn render_format(
    res: &Resource,
    snapshot: &Snapshot,
    format: Format,
    decode: Decode,
) -> Result<String, String> {
    // Every key under the watched prefixes, named relative to the resource
    // prefix. Watched prefixes are sorted and may nest; skip nested ones so
    // no key is visited twice.
    let mut roots: Vec<&str> = Vec::new();
    for w in &res.watched {
        if !roots.iter().any(|r| crate::store::is_at_or_below(w, r)) {
            roots.push(w);
        }
    }
    let entries = roots.into_iter().flat_map(|r| {
        snapshot
            .subtree(r)
            .map(|(k, v)| (keypath::relative(&res.prefix, k).unwrap_or(k), &**v))
    });
    let mut json = encode::build_tree(entries, decode).map_err(|e| match e {
        encode::EncodeError::SingleKey => format!("{} {e}", res.prefix),
        e => e.to_string(),
    })?;
    encode::sort_keys(&mut json);
    match format {
        Format::Json => Ok(encode::json_document(&json)),
        Format::Php => encode::php_document(&encode::to_tera(&json)).map_err(|e| e.to_string()),
    }
}
