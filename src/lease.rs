//! The local, clock-based side of the leader lease (DESIGN §3).
//!
//! `cluster::apply` never reads a clock, so every judgement of time is made here, by the
//! proposer, on its own monotonic clock: when did this node last see the lease change? A
//! takeover is proposed only after the lease has stayed unchanged for `ttl`, as a
//! compare-and-set on exactly the (epoch, renewal) seen, so a renewal committed meanwhile
//! makes the takeover fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Lease, LeaseRef, NodeId};
use crate::raft::ClusterView;

/// When the lease was last seen to change. Pure: the caller supplies `now`.
#[derive(Debug, Clone, Default)]
pub struct LeaseObservation {
    last: Option<(Option<LeaseRef>, Instant)>,
}

/// Why this node may not take the lease now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TakeoverRefused {
    #[error(
        "lease is held by node {holder} (epoch {epoch}), last renewed {since:?} ago; a takeover \
         needs {ttl:?} without renewals"
    )]
    StillRenewed {
        holder: NodeId,
        epoch: u64,
        since: Duration,
        ttl: Duration,
    },
    #[error("this node already holds the lease (epoch {epoch})")]
    AlreadyHolder { epoch: u64 },
}

impl LeaseObservation {
    /// Records the lease as seen at `now`; the clock restarts only when it changed.
    pub fn observe(&mut self, lease: Option<&Lease>, now: Instant) {
        let current = lease.map(Lease::as_ref_point);
        match &self.last {
            Some((seen, _)) if *seen == current => {}
            _ => self.last = Some((current, now)),
        }
    }

    /// How long the lease has been unchanged as of `now` (zero if never observed).
    pub fn unchanged_for(&self, now: Instant) -> Duration {
        self.last
            .as_ref()
            .map(|(_, at)| now.duration_since(*at))
            .unwrap_or_default()
    }

    /// The compare-and-set value for an `AcquireLease` by `candidate`, if a takeover is
    /// allowed: the lease is free, or has not changed for `ttl`.
    pub fn takeover(
        &self,
        candidate: NodeId,
        lease: Option<&Lease>,
        ttl: Duration,
        now: Instant,
    ) -> Result<Option<LeaseRef>, TakeoverRefused> {
        let Some(lease) = lease else { return Ok(None) };
        if lease.holder == candidate {
            return Err(TakeoverRefused::AlreadyHolder {
                epoch: lease.epoch.0,
            });
        }
        let since = match &self.last {
            Some((Some(seen), at)) if *seen == lease.as_ref_point() => now.duration_since(*at),
            // Never saw this lease before: it starts its ttl now.
            _ => Duration::ZERO,
        };
        if since >= ttl {
            Ok(Some(lease.as_ref_point()))
        } else {
            Err(TakeoverRefused::StillRenewed {
                holder: lease.holder,
                epoch: lease.epoch.0,
                since,
                ttl,
            })
        }
    }
}

/// A [`LeaseObservation`] kept up to date from the cluster view by a background task.
#[derive(Clone, Default)]
pub struct LeaseClock {
    observation: Arc<Mutex<LeaseObservation>>,
}

impl LeaseClock {
    /// Starts watching `view`; stops when `shutdown` is cancelled.
    pub fn spawn(mut view: watch::Receiver<Arc<ClusterView>>, shutdown: CancellationToken) -> Self {
        let clock = Self::default();
        let observation = clock.observation.clone();
        tokio::spawn(async move {
            loop {
                let lease = view.borrow_and_update().state.lease;
                observation
                    .lock()
                    .expect("lease observation poisoned")
                    .observe(lease.as_ref(), Instant::now());
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = view.changed() => if changed.is_err() { return },
                }
            }
        });
        clock
    }

    /// The observation as it stands, to judge at a given instant.
    pub fn snapshot(&self) -> LeaseObservation {
        self.observation
            .lock()
            .expect("lease observation poisoned")
            .clone()
    }

    /// See [`LeaseObservation::unchanged_for`], at the current instant.
    pub fn unchanged_for(&self) -> Duration {
        let observation = self.observation.lock().expect("lease observation poisoned");
        observation.unchanged_for(Instant::now())
    }

    /// See [`LeaseObservation::takeover`], at the current instant.
    pub fn takeover(
        &self,
        candidate: NodeId,
        lease: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Option<LeaseRef>, TakeoverRefused> {
        let observation = self.observation.lock().expect("lease observation poisoned");
        observation.takeover(candidate, lease, ttl, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Epoch;

    fn lease(holder: u64, epoch: u64, seq: u64) -> Lease {
        Lease {
            holder: NodeId(holder),
            epoch: Epoch(epoch),
            seq,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_follows_the_local_clock() {
        let ttl = Duration::from_secs(2);
        let me = NodeId(2);
        let mut obs = LeaseObservation::default();
        let t0 = Instant::now();
        let held = lease(1, 3, 7);
        obs.observe(Some(&held), t0);
        type Case = (
            &'static str,
            Option<Lease>,
            Duration,
            Result<Option<LeaseRef>, ()>,
        );
        let cases: &[Case] = &[
            (
                "free lease may be taken at once",
                None,
                Duration::ZERO,
                Ok(None),
            ),
            (
                "renewed lease is refused before ttl",
                Some(held),
                Duration::from_millis(1999),
                Err(()),
            ),
            (
                "unrenewed for ttl may be taken",
                Some(held),
                ttl,
                Ok(Some(held.as_ref_point())),
            ),
            (
                "a lease never seen starts its ttl now",
                Some(lease(1, 3, 8)),
                ttl * 5,
                Err(()),
            ),
            (
                "own lease is not taken over",
                Some(lease(2, 4, 0)),
                ttl * 5,
                Err(()),
            ),
        ];
        for (name, current, after, want) in cases {
            let got = obs
                .takeover(me, current.as_ref(), ttl, t0 + *after)
                .map_err(|_| ());
            assert_eq!(&got, want, "{name}");
        }
        // A renewal restarts the clock.
        let renewed = lease(1, 3, 8);
        obs.observe(Some(&renewed), t0 + ttl);
        assert!(obs
            .takeover(me, Some(&renewed), ttl, t0 + ttl + Duration::from_secs(1))
            .is_err());
        assert!(obs.takeover(me, Some(&renewed), ttl, t0 + ttl * 2).is_ok());
    }
}
