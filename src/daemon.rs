//! The daemon: `liveconf render` without `--once`.

use crate::apply::Options;
use crate::cli::{Exit, exit};
use crate::settings::Settings;

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(_s: Settings, _only: Vec<String>, _opts: Options) -> Result<u8, Exit> {
    Err(Exit {
        code: exit::CONFIG,
        error: Some(anyhow::anyhow!("the watching daemon comes with issue 3; use --once")),
    })
}
