//! The guards: a render that would empty or gut a file is refused and the
//! installed file kept, because every host reads the same etcd and would
//! install the same mistake at once.
//!
//! - **Empty**: none of the resource's watched prefixes holds a key (a
//!   mistyped `prefix`, a wiped or half-restored keyspace). A resource with
//!   no `keys` is not guarded; `allow_empty = true` opts out.
//! - **Shrink**: the new content is more than `max_shrink` percent smaller,
//!   in bytes, than the installed file (default 50%, PyBal's depool
//!   threshold). An installed file under [`SHRINK_FLOOR`] bytes is exempt,
//!   as is a first install.
//!
//! Both judge a change only: a render equal to the installed file is never
//! refused, so once `render --once --force NAME` has installed a refused
//! render, the daemon's next render of it is in sync. A refusal fails the
//! resource at the `render` step; `--noop`/`--diff` and `check` report it as
//! "would be refused". Pure: the callers say what is installed.

use std::path::Path;

use crate::resource::Resource;
use crate::store::Snapshot;

/// Installed files smaller than this many bytes are not shrink-checked: they
/// hold a handful of values, where halving is an ordinary edit (a read-only
/// reason cleared), not a pool emptied.
pub const SHRINK_FLOOR: u64 = 256;

/// How a refusal starts when nothing is written (`--noop`, `--diff`, `check`).
pub const WOULD_BE_REFUSED: &str = "would be refused: ";

/// Why a render is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// None of these (absolute) prefixes holds a key.
    Empty {
        /// The resource's watched prefixes.
        prefixes: Vec<String>,
    },
    /// The new content is smaller than `max_shrink` allows.
    Shrink {
        /// The new render's size, in bytes.
        new: u64,
        /// The installed file's size, in bytes.
        installed: u64,
        /// `max_shrink`, in percent.
        limit: u8,
    },
}

/// The watched prefixes of `res` when every one of them is empty in
/// `snapshot` and the resource does not allow that; `None` otherwise.
pub fn empty_prefixes(res: &Resource, snapshot: &Snapshot) -> Option<Vec<String>> {
    if res.allow_empty || res.watched.is_empty() {
        return None;
    }
    if res
        .watched
        .iter()
        .any(|w| snapshot.subtree(w).next().is_some())
    {
        return None;
    }
    Some(res.watched.clone())
}

/// Judges a render of `new` bytes that differs from what is installed
/// (`installed`: the installed file's size, `None` when there is none).
/// `empty` is what [`empty_prefixes`] found.
pub fn judge(
    res: &Resource,
    empty: Option<&[String]>,
    installed: Option<u64>,
    new: u64,
) -> Option<Refusal> {
    if let Some(prefixes) = empty {
        return Some(Refusal::Empty {
            prefixes: prefixes.to_vec(),
        });
    }
    let (limit, installed) = (res.max_shrink?, installed?);
    if installed < SHRINK_FLOOR {
        return None;
    }
    // new < installed × (1 − limit/100), in integers.
    (u128::from(new) * 100 < u128::from(installed) * u128::from(100 - limit.min(100))).then_some(
        Refusal::Shrink {
            new,
            installed,
            limit,
        },
    )
}

/// What is installed at `dest` compared with `content`: `None` when the
/// content is the same (nothing to judge), else the installed regular
/// file's size (`None` inside when there is none). For `check`, which
/// installs nothing and so compares on its own.
pub fn installed_size(dest: &Path, content: &[u8]) -> Option<Option<u64>> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_file() => {
            if m.len() == content.len() as u64
                && std::fs::read(dest).is_ok_and(|old| old == content)
            {
                None
            } else {
                Some(Some(m.len()))
            }
        }
        _ => Some(None),
    }
}

/// `n` with thousands separators: `5,530`.
fn bytes(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Refusal {
    /// What is wrong, without advice.
    fn what(&self) -> String {
        match self {
            Refusal::Empty { prefixes } => format!(
                "no keys under {} (a mistyped prefix, or an empty keyspace?)",
                shown(prefixes)
            ),
            Refusal::Shrink {
                new,
                installed,
                limit,
            } => {
                // Rounded up, so a refusal never reads as "50% smaller" under
                // a limit of 50%.
                let pct = (installed - new.min(installed)) * 100;
                let pct = pct.div_ceil(*installed);
                format!(
                    "new render is {} bytes, {pct}% smaller than the installed {} bytes (max_shrink = {limit}%)",
                    bytes(*new),
                    bytes(*installed)
                )
            }
        }
    }

    /// The message a failed resource carries: what is wrong, what was
    /// kept (`installed`: whether a file is in place) and what to do.
    /// `preview`: nothing is written (`--noop`, `--diff`, `check`).
    pub fn message(&self, res: &Resource, installed: bool, preview: bool) -> String {
        let file = res.file.display();
        let force = format!("liveconf render --once --force {}", res.name);
        let (head, kept) = match (preview, installed) {
            (true, _) => (WOULD_BE_REFUSED, String::new()),
            (false, true) => ("", "; the installed file is kept".to_string()),
            (false, false) => ("", "; nothing is installed".to_string()),
        };
        let advice = match self {
            Refusal::Empty { .. } => format!(
                "set allow_empty = true in {file} if this resource may render from no keys, or run `{force}` to install it once"
            ),
            Refusal::Shrink { .. } => format!(
                "if the change is deliberate run `{force}` on this host, or raise max_shrink in {file}"
            ),
        };
        format!("{head}{}{kept}; {advice}", self.what())
    }

    /// The warning when `--force` installs it anyway (`preview`: would).
    pub fn forced(&self, res: &Resource, preview: bool) -> String {
        format!(
            "{}: --force: {} although {}",
            res.name,
            if preview {
                "would install"
            } else {
                "installing"
            },
            self.what()
        )
    }
}

/// The hint added to a render failure of a resource whose keys are all
/// absent: the failure (a missing key) is most likely that.
pub fn empty_hint(prefixes: &[String]) -> String {
    format!(
        " (note: no keys under {}: a mistyped prefix, or an empty keyspace?)",
        shown(prefixes)
    )
}

/// Prefixes as a list people read: the root (`""`) is `/`.
fn shown(prefixes: &[String]) -> String {
    prefixes
        .iter()
        .map(|p| if p.is_empty() { "/" } else { p.as_str() })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(max_shrink: Option<u8>, allow_empty: bool) -> Resource {
        Resource {
            file: "/etc/liveconf/conf.d/pool.toml".into(),
            keys: vec!["/pools".into()],
            allow_empty,
            max_shrink,
            ..crate::resource::test_resource("pool", &["/pools", "/settings"])
        }
    }

    #[test]
    fn empty_means_every_watched_prefix_is_empty() {
        let r = res(Some(50), false);
        let none = Snapshot::from_pairs(1, [("/poolsx/a", &b"1"[..])]);
        assert_eq!(
            empty_prefixes(&r, &none),
            Some(vec!["/pools".to_string(), "/settings".to_string()])
        );
        let one = Snapshot::from_pairs(1, [("/settings/a", &b"1"[..])]);
        assert_eq!(empty_prefixes(&r, &one), None);
        assert_eq!(empty_prefixes(&res(Some(50), true), &none), None);
        let mut no_keys = res(Some(50), false);
        no_keys.watched.clear();
        assert_eq!(empty_prefixes(&no_keys, &none), None);
    }

    #[test]
    fn shrink_is_judged_in_bytes_above_the_floor() {
        let r = res(Some(50), false);
        let shrink = |installed, new| judge(&r, None, installed, new);
        assert_eq!(shrink(Some(1000), 500), None);
        assert_eq!(
            shrink(Some(1000), 499),
            Some(Refusal::Shrink {
                new: 499,
                installed: 1000,
                limit: 50
            })
        );
        assert_eq!(shrink(None, 0), None);
        assert_eq!(shrink(Some(SHRINK_FLOOR - 1), 0), None);
        assert!(shrink(Some(SHRINK_FLOOR), 0).is_some());
        assert_eq!(judge(&res(None, false), None, Some(10_000), 0), None);
        assert!(judge(&res(Some(0), false), None, Some(1000), 999).is_some());
        let empty = ["/pools".to_string()];
        assert!(matches!(
            judge(&res(None, false), Some(&empty), None, 100),
            Some(Refusal::Empty { .. })
        ));
    }

    #[test]
    fn messages_name_both_sizes_and_what_to_do() {
        let r = res(Some(50), false);
        let m = judge(&r, None, Some(5530), 1204)
            .unwrap()
            .message(&r, true, false);
        assert_eq!(
            m,
            "new render is 1,204 bytes, 79% smaller than the installed 5,530 bytes (max_shrink = 50%); \
             the installed file is kept; if the change is deliberate run \
             `liveconf render --once --force pool` on this host, or raise max_shrink in \
             /etc/liveconf/conf.d/pool.toml"
        );
        // A refusal never reads as exactly the limit.
        let m = judge(&r, None, Some(1000), 499).unwrap().what();
        assert!(m.contains("51% smaller"), "{m}");
        let e = Refusal::Empty {
            prefixes: vec!["/pool".into(), "/settings".into()],
        };
        assert_eq!(
            e.message(&r, false, true),
            "would be refused: no keys under /pool, /settings (a mistyped prefix, or an empty keyspace?); \
             set allow_empty = true in /etc/liveconf/conf.d/pool.toml if this resource may render from no keys, \
             or run `liveconf render --once --force pool` to install it once"
        );
        assert_eq!(shown(&["".into(), "/a".into()]), "/, /a");
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(999), "999");
        assert_eq!(bytes(1_234_567), "1,234,567");
    }
}
