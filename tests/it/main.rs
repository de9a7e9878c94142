//! The integration tests, in one test binary (one link, one copy of the
//! shared harness) instead of one binary per file: each former
//! `tests/NAME.rs` is the module `NAME` here, so its tests are named
//! `NAME::test_name` (`cargo test --test it NAME::` runs one of them).
//!
//! The modules run side by side in one process, on the harness's threads:
//! a test that loads the whole machine takes [`common::machine_alone`],
//! every process or node a test starts holds a share of the machine, so the
//! two never overlap.

#![allow(clippy::unwrap_used)]

mod common;
mod target;
mod watch_util;

mod auth;
mod bad_input;
mod bench_cli;
mod catchup;
mod cluster;
mod crash_rounds;
mod disk;
mod durability;
mod embed;
mod escrow;
mod etcd_client;
mod etcdctl;
mod etcdctl_auth;
mod etcdctl_lock_elect;
mod forward;
mod gateway;
mod group_commit;
mod growth;
mod keepalive;
mod layering;
mod lease;
mod lock_election;
mod metrics;
mod model;
mod partition;
mod peer_port;
mod read_index;
mod snapshot_restore;
mod spill;
mod storage_init;
mod tls;
mod watch;
mod watch_api;
mod watch_many;
mod watch_slow;
