//! Rendering: one resource, one snapshot in; bytes out. Pure — no I/O
//! except what a template explicitly asks for (`getenv`, DNS look-ups).

use crate::dns::DnsConfig;
use crate::encode::{self, Decode, EncodeError};
use crate::functions::{self, Scope};
use crate::gotemplate::{self, GoTemplateError};
use crate::resource::{Engine, Format, Resource, Source};
use crate::store::{self, Snapshot};
use crate::templates::{self, TemplateProblem, TemplateSet};

/// Default largest output a resource may produce (`max_output_bytes`):
/// a runaway template is refused rather than filling a disk.
pub const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// What a render may use besides the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// The nameserver of the DNS look-up functions.
    pub dns: DnsConfig,
    /// The daemon's DNS dependencies: look-ups are answered and recorded
    /// there (`None`: each look-up asks the nameserver, `render --once`).
    pub live: Option<crate::dnsdeps::Live>,
    /// Largest output accepted, in bytes.
    pub max_output: usize,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            dns: DnsConfig::default(),
            live: None,
            max_output: MAX_OUTPUT,
        }
    }
}

/// Why a resource could not be rendered: one line naming what is wrong
/// (the template and line, the key).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// The snapshot could not read some of the resource's keys (etcd
    /// refused the range); the message names the prefix and the user.
    #[error("{0}")]
    Unreadable(String),
    /// The template is missing or does not compile.
    #[error(transparent)]
    Template(#[from] TemplateProblem),
    /// Tera failed while rendering (see [`templates::describe`]).
    #[error("{0}")]
    Tera(String),
    /// The Go template failed while executing.
    #[error(transparent)]
    Go(#[from] GoTemplateError),
    /// `format`: the resource's prefix is a single key, not a directory.
    #[error("{prefix} {}", EncodeError::SingleKey)]
    SingleKey {
        /// The resource's absolute prefix.
        prefix: String,
    },
    /// `format`: the keys do not make a tree, or the tree has no encoding.
    #[error(transparent)]
    Encode(EncodeError),
    /// The output is larger than `max_output_bytes`.
    #[error(
        "rendered output is {size} bytes, more than the limit of {limit} bytes (max_output_bytes)"
    )]
    TooLarge {
        /// The output's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Renders `res` from `snapshot`.
///
/// Synchronous, and it may block (a template's DNS look-ups wait for their
/// answer): async code runs it on the blocking pool, as `apply` does.
pub fn render(
    res: &Resource,
    snapshot: &Snapshot,
    templates: &TemplateSet,
    env: &Env,
) -> Result<Vec<u8>, RenderError> {
    crate::once::mark("render start");
    if let Some(why) = snapshot.unreadable_among(&res.watched) {
        return Err(RenderError::Unreadable(why.to_string()));
    }
    // What the template functions read (both engines).
    let live = env.live.as_ref().map(|l| (l.0.clone(), res.name.clone()));
    let scope = || Scope {
        snapshot: snapshot.clone(),
        prefix: res.prefix.clone(),
        watched: res.watched.clone(),
        dns: crate::dnsdeps::Lookups {
            dns: env.dns.clone(),
            live: live.clone(),
        },
    };
    // The look-ups of this render are the resource's DNS dependencies once
    // it ends: only those when it succeeded, added to the previous ones
    // when it failed (it may have stopped before asking for the others).
    struct Finish<'a>(Option<&'a crate::dnsdeps::Live>, &'a str, bool);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            if let Some(l) = self.0 {
                l.0.finish(self.1, self.2);
            }
        }
    }
    if let Some(l) = &env.live {
        l.0.begin(&res.name);
    }
    let mut finish = Finish(env.live.as_ref(), &res.name, false);
    let out = match &res.source {
        Source::Format(format, decode) => {
            render_format(res, snapshot, *format, *decode)?.into_bytes()
        }
        Source::Template(name, Engine::Go) => {
            gotemplate::render(templates.go(name)?, scope())?.into_bytes()
        }
        Source::Template(name, Engine::Tera) => {
            if let Some(problem) = templates.problem(name) {
                return Err(problem.into());
            }
            let mut ctx = tera::Context::new();
            ctx.insert("revision", &snapshot.revision());
            ctx.insert("resource", &res.name);
            let mut out = Vec::with_capacity(output_hint(res, snapshot));
            functions::with_scope(scope(), || templates.tera().render_to(name, &ctx, &mut out))
                .map_err(|e| RenderError::Tera(templates::describe(&e)))?;
            out
        }
    };
    crate::once::mark("rendered");
    finish.2 = true;
    if out.len() > env.max_output {
        return Err(RenderError::TooLarge {
            size: out.len(),
            limit: env.max_output,
        });
    }
    Ok(out)
}

/// The largest output buffer reserved before a render (beyond it, the
/// buffer grows as it fills).
const MAX_OUTPUT_HINT: usize = 24 * 1024 * 1024;

/// The output buffer to reserve for rendering `res`: for a one-shot run's
/// snapshot, the bytes of the keys and values it watches (a template
/// listing its keys writes about as many), so that the buffer is not
/// copied as it doubles (at 100,000 keys, 8 MiB written once instead of
/// ~16 MiB of buffers); else, as Tera would, small.
fn output_hint(res: &Resource, snapshot: &Snapshot) -> usize {
    snapshot
        .bytes_under(&store::roots(&res.watched))
        .map_or(1024, |n| n.min(MAX_OUTPUT_HINT))
}

fn render_format(
    res: &Resource,
    snapshot: &Snapshot,
    format: Format,
    decode: Decode,
) -> Result<String, RenderError> {
    // Every key under the watched prefixes (which may nest: each key once),
    // named relative to the resource prefix.
    let roots = store::roots(&res.watched);
    let mut json =
        encode::tree(snapshot.under(&roots), &res.prefix, decode).map_err(|e| match e {
            EncodeError::SingleKey => RenderError::SingleKey {
                prefix: res.prefix.clone(),
            },
            e => RenderError::Encode(e),
        })?;
    encode::sort_keys(&mut json);
    match format {
        Format::Json => Ok(encode::json_document(&json)),
        Format::Php => encode::php_document(&encode::to_tera(&json)).map_err(RenderError::Encode),
    }
}
