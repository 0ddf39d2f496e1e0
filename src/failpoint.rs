//! Crash points for integration tests, in debug builds only.
//!
//! Some faults need a crash at an exact point no test can time from outside, such as between
//! the two steps of a Raft membership change. A test creates the file
//! `<state_dir>/failpoints/<name>`; the daemon aborts (as a SIGKILL would leave it, no
//! clean-up) when it reaches that point. Release builds, the packages among them, compile
//! [`crash_if_set`] to nothing.

use std::path::{Path, PathBuf};

/// Where a member's failpoint files live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("failpoints")
}

/// Aborts the process if the failpoint `name` is set in `dir`.
#[cfg(debug_assertions)]
pub fn crash_if_set(dir: Option<&Path>, name: &str) {
    if dir.is_some_and(|d| d.join(name).exists()) {
        eprintln!("pgquorum: failpoint {name} reached: aborting");
        std::process::abort();
    }
}

/// Release builds: no failpoints.
#[cfg(not(debug_assertions))]
pub fn crash_if_set(_dir: Option<&Path>, _name: &str) {}

/// The failpoint that stops a leader between the two steps of a membership change: it aborts
/// while appending the uniform configuration that follows a joint one, before the entry is
/// stored, so no follower can receive it.
pub const BEFORE_SECOND_MEMBERSHIP_STEP: &str = "before-second-membership-step";

/// The failpoint that stops a certificate rotation after the member presents its new
/// certificate and before the cluster adopts the new key (`crate::rotate`, between steps 4
/// and 5).
pub const ROTATION_BEFORE_END: &str = "rotation-before-end";
