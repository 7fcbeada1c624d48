//! liveconf's integration tests: one binary, one module per area, sharing
//! the fixtures in `common/` (a temporary confdir, real etcd members, a
//! running daemon). One binary links the etcd/tonic stack once instead of
//! once per file, which is most of a clean test run's time on a small
//! machine.
//!
//! Every test uses the real `liveconf` binary (`CARGO_BIN_EXE_liveconf`),
//! real etcd servers on loopback, real `php` and real files.

mod common;

mod bad_input;
mod blocking;
mod cli_backend_flags;
mod cli_man;
mod cli_modes;
mod cli_output_format;
mod confd_compat;
mod crash_consistency;
mod daemon_etcd;
mod daemon_file;
mod discovery_down;
mod dns_live;
mod etcd_faults;
mod etcd_security;
mod example;
mod example_dbconfig;
mod fleet;
mod fleet_wait;
mod fs_attacks;
mod grpc_proxy;
mod guards;
mod hooks_die;
mod hostile_values;
mod install;
mod keys;
mod metrics_size;
mod operator_views;
mod php_consumer;
mod php_roundtrip;
mod prometheus;
mod properties;
mod resource_limits;
mod secrets;
mod sighup_settings;
mod srv_follow;
mod status_metrics;
mod template_functions;
