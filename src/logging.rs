//! Log set-up: `tracing` to stderr, as text or JSON lines.
//!
//! Under systemd (`JOURNAL_STREAM` set) text lines carry no timestamp and
//! no colour: journald adds its own.
//!
//! A log line that cannot be written (stderr a closed pipe: `liveconf render
//! 2>&1 | head`, a journald that went away) is dropped, never a panic: the
//! daemon must go on rendering. (SIGPIPE stays ignored, as Rust sets it, for
//! the same reason: a daemon killed because its log reader left would stop
//! following etcd.)

use crate::settings::LogFormat;

/// A `--log-level` (`log_level`) that is neither levels nor filters.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// A bare word that is not a level (tracing would take it for a target
    /// and silence everything).
    #[error(
        "log_level (--log-level) {spec:?}: {part:?} is not a level ({}) nor a filter like liveconf=debug",
        LEVELS.join(", ")
    )]
    NotALevel {
        /// The whole setting.
        spec: String,
        /// The part that is wrong.
        part: String,
    },
    /// tracing refused the filter. (Its error is part of the message, not
    /// a separate cause: the command line prints causes as well.)
    #[error("log_level (--log-level) {spec:?}: {error}")]
    Filter {
        /// The whole setting.
        spec: String,
        /// What tracing said.
        error: tracing_subscriber::filter::ParseError,
    },
}

/// Checks a `log_level` without installing anything: what [`init`] would
/// refuse (the daemon refuses such a value on SIGHUP instead of failing at
/// its next start).
pub fn check_level(level: &str) -> Result<(), LogLevelError> {
    filter(level).map(|_| ())
}

fn filter(level: &str) -> Result<tracing_subscriber::EnvFilter, LogLevelError> {
    tracing_subscriber::EnvFilter::try_new(directives(level)?).map_err(|error| {
        LogLevelError::Filter {
            spec: level.to_string(),
            error,
        }
    })
}

/// Installs the global subscriber. `level` is a level (`info`) or a filter
/// (`liveconf=debug`). Calling it twice is harmless.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogLevelError> {
    let filter = filter(level)?;
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A failed write is dropped: tracing would otherwise report it with
        // eprintln!, which panics on the very stderr that failed.
        .log_internal_errors(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if journald => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    Ok(())
}

/// `s` on one line: a command's multi-line output must not split a log
/// event into lines journald would take for separate, level-less entries.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(
            s.trim_end()
                .replace("\r\n", "\n")
                .replace(['\n', '\r'], "\\n"),
        )
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Appends each cause from `source` on to `message` (": cause"), leaving
/// out a cause whose text the message already holds.
pub fn push_causes(message: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(inner) = source {
        let m = inner.to_string();
        if !message.contains(&m) {
            message.push_str(": ");
            message.push_str(&m);
        }
        source = inner.source();
    }
}

/// "1 resource", "2 resources": counts in messages people read.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks `--log-level`: each comma-separated part is a level or a
/// `target=level` filter. A bare word that is not a level (`warning`,
/// `nonsense`) would be taken by tracing as a target name and silence
/// everything, errors included; `warning` is accepted as `warn`.
fn directives(spec: &str) -> Result<String, LogLevelError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part.contains('=') || part.contains('[') {
            out.push(part.to_string());
            continue;
        }
        let lower = part.to_ascii_lowercase();
        let lower = if lower == "warning" {
            "warn".to_string()
        } else {
            lower
        };
        if !LEVELS.contains(&lower.as_str()) {
            return Err(LogLevelError::NotALevel {
                spec: spec.to_string(),
                part: part.to_string(),
            });
        }
        // debug is for liveconf: its libraries (h2, tonic, hyper) would
        // drown it. trace is everything, for the deepest digging.
        match lower.as_str() {
            "debug" => {
                out.push("warn".into());
                out.push(format!("liveconf={lower}"));
            }
            _ => out.push(lower),
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn one_line_escapes_newlines() {
        assert_eq!(super::one_line("a\nb\r\nc\n"), "a\\nb\\nc");
        assert_eq!(super::one_line("plain"), "plain");
    }

    #[test]
    fn levels_and_filters_are_accepted_and_bare_words_refused() {
        assert_eq!(directives("info").unwrap(), "info");
        assert_eq!(directives("WARNING").unwrap(), "warn");
        assert_eq!(
            directives("warn,liveconf=debug").unwrap(),
            "warn,liveconf=debug"
        );
        for bad in ["nonsense", "", "liveconf", "info,verbose", "loud"] {
            let e = directives(bad).unwrap_err().to_string();
            assert!(e.contains("log_level (--log-level)"), "{e}");
            assert!(super::check_level(bad).is_err(), "{bad}");
        }
        assert!(super::check_level("warn,liveconf=debug").is_ok());
    }
}
