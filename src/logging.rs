//! Log set-up: `tracing` to stderr, as text or JSON lines.
//!
//! Under systemd (`JOURNAL_STREAM` set) text lines carry no timestamp and
//! no colour: journald adds its own.

use crate::settings::LogFormat;

/// Installs the global subscriber. `level` is a level (`info`) or a filter
/// (`liveconf=debug`). Calling it twice is harmless.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("--log-level {level:?}: {e}"))?;
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
