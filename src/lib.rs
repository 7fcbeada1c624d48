//! liveconf keeps configuration files in step with live state in etcd.
//!
//! The data path, one module per step (see ARCHITECTURE.md):
//! [`backend`] → [`store`] → [`render`] (with [`templates`], [`functions`],
//! [`encode`]) → [`install`] → [`hooks`] → [`status`]; [`apply`] drives one
//! batch through it, [`cli`] and [`daemon`] drive batches.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod confdir;
pub mod daemon;
pub mod deps;
pub mod dns;
pub mod encode;
pub mod explain;
pub mod fleet;
pub mod functions;
pub mod gopath;
pub mod gosort;
pub mod gotemplate;
pub mod hooks;
pub mod install;
pub mod keypath;
pub mod logging;
pub mod metrics;
pub mod once;
pub mod render;
pub mod resource;
pub mod schedule;
pub mod settings;
pub mod status;
pub mod status_report;
pub mod store;
pub mod templates;
