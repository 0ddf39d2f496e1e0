//! The integration-test harness: real `pgquorum` processes on real loopback ports.
//! Each test file uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod backup;
pub mod cluster;
pub mod haproxy;
pub mod http;
pub mod netns;
pub mod node;
pub mod os;
pub mod peer;
pub mod pg;
pub mod pooler;
pub mod ports;
pub mod wait;
pub mod writer;

pub use cluster::{member_names, TestCluster, ELECTION, FORMATION};
pub use node::{assert_error, assert_success, require_postgres, Node, OutputExt};
pub use wait::eventually;

/// Whether a test may go on: `Ok(())` when what it needs is here. Missing, it skips (false,
/// after saying why) when run locally, and fails when `CI=true`, since CI provides
/// everything (`.ci/run` installs the packages and runs as root).
pub fn needs(available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "missing in CI, which must provide it: {why}"
            );
            eprintln!("skipping: {why}");
            false
        }
    }
}
