//! Polling with a deadline: the only place tests wait.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often `eventually` polls.
const POLL: Duration = Duration::from_millis(50);

/// `PGQUORUM_TEST_PATIENCE` (a float, default 1): every deadline is multiplied by it, for
/// slow or loaded machines.
pub fn patience() -> f64 {
    std::env::var("PGQUORUM_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|p| *p > 0.0)
        .unwrap_or(1.0)
}

/// `deadline` scaled by [`patience`].
pub fn scaled(deadline: Duration) -> Duration {
    deadline.mul_f64(patience())
}

/// One poll's outcome: done with a value, or not yet, with what was seen instead.
pub trait Attempt {
    type Output;
    fn into_result(self) -> Result<Self::Output, String>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_string())
    }
}

impl<T, E: Debug> Attempt for Result<T, E> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Calls `f` every 50 ms until it returns `Some`/`Ok`, and returns that value. Panics after
/// `deadline` (scaled by [`patience`]) naming `what` and the last observation (the `Err`).
pub fn eventually<A: Attempt>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> A,
) -> A::Output {
    let deadline = scaled(deadline);
    let started = Instant::now();
    loop {
        let last = match f().into_result() {
            Ok(value) => return value,
            Err(observation) => observation,
        };
        if started.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting until {what}; last observation: {last}");
        }
        std::thread::sleep(POLL);
    }
}
