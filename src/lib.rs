//! liveconf keeps configuration files in step with live state in etcd.
//!
//! The data path, one module per step (see ARCHITECTURE.md):
//! [`backend`] → [`store`] → [`render`] (with [`templates`], [`functions`],
//! [`encode`]) → [`install`] → [`hooks`] → [`status`]; [`apply`] drives one
//! batch through it, [`cli`] and [`daemon`] drive batches.

pub(crate) mod apply;
pub mod backend;
pub mod cli;
pub(crate) mod confdir;
pub(crate) mod daemon;
pub mod deps;
pub(crate) mod dns;
pub(crate) mod dnsdeps;
pub mod encode;
pub(crate) mod explain;
pub(crate) mod fleet;
pub(crate) mod fleet_wait;
pub(crate) mod functions;
pub(crate) mod gopath;
pub(crate) mod gosort;
pub(crate) mod gotemplate;
pub(crate) mod guard;
pub(crate) mod hookguard;
pub(crate) mod hooks;
pub mod install;
pub mod keypath;
pub(crate) mod keys;
pub(crate) mod logging;
pub(crate) mod manpages;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod once;
pub(crate) mod owed;
pub mod render;
pub mod resource;
pub(crate) mod settings;
pub(crate) mod status;
pub(crate) mod status_report;
pub mod store;
pub mod templates;
