//! Backends: where keys come from.
//!
//! A backend hands the rest of liveconf [`Snapshot`](crate::store::Snapshot)s
//! (one consistent view at one revision) and, for the daemon, a stream of
//! changes. `file` reads YAML/JSON/TOML key files (demos, tests, CI).

pub mod etcd;
pub mod file;
