//! What this member observes of its own PostgreSQL, in the vocabulary PostgreSQL uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position. Displays as PostgreSQL does: `0/3000060`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid LSN {s:?}"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("invalid LSN {s:?}"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("invalid LSN {s:?}"))?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(format!("invalid LSN {s:?}"));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

impl Lsn {
    /// Bytes from `other` up to `self` (0 if `other` is ahead).
    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// The data directory as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DataDir {
    /// Absent or empty: nothing to lose.
    Missing,
    /// A cluster initialised by initdb or cloned, with its system identifier.
    Initialised { system_id: u64 },
    /// Not empty but not a usable PostgreSQL data directory. Never touched automatically.
    Foreign,
}

/// The observed state of the local PostgreSQL, refreshed every HA cycle.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PgStatus {
    /// Accepting connections.
    pub running: bool,
    /// `pg_is_in_recovery()`; false when not running.
    pub in_recovery: bool,
    /// Current timeline (from `pg_control_checkpoint()` on a primary, received timeline on a
    /// replica); 0 when unknown.
    pub timeline: u32,
    /// Primary: `pg_current_wal_lsn()`. Replica: the highest of received and replayed.
    pub wal_position: Option<Lsn>,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub replayed: Option<Lsn>,
    /// Replica: whether a WAL receiver is streaming.
    pub streaming: bool,
    /// Some parameter changed that needs a restart (`pg_settings.pending_restart`).
    pub pending_restart: bool,
    /// Replica: how far replay is behind in time, in milliseconds: 0 when everything received
    /// is replayed, else the age of the last replayed transaction; `None` when unknown (no
    /// transaction replayed since start). Absent in statuses from older versions.
    #[serde(default)]
    pub replay_delay_ms: Option<u64>,
    /// Replica: the end of its primary's WAL as the primary last reported it to this
    /// replica's WAL receiver (`pg_stat_wal_receiver.latest_end_lsn`); `None` before the
    /// first message from the primary, or with no WAL receiver. Absent in statuses from
    /// older versions.
    #[serde(default)]
    pub primary_end: Option<Lsn>,
    /// Its WAL archiver (`pg_stat_archiver`); `None` when not running, and in statuses
    /// from older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archiver>,
}

/// What `pg_stat_archiver` says (since the server started or its statistics were reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Archiver {
    pub failed_count: u64,
    /// When a segment was last archived, and when archiving last failed (Unix seconds).
    pub archived_unix: Option<u64>,
    pub failed_unix: Option<u64>,
}

impl Archiver {
    /// Archiving fails now: its last attempt failed.
    pub fn failing(&self) -> bool {
        match (self.failed_unix, self.archived_unix) {
            (Some(failed), Some(archived)) => failed >= archived,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// What a PostgreSQL is, as far as its status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgRole {
    /// Not accepting connections (stopped, starting, crashed, or not answering).
    Stopped,
    /// Running and not in recovery: it accepts writes.
    Primary,
    /// Running in recovery: a standby.
    Replica,
}

impl PgStatus {
    /// Its role: [`PgRole::Primary`] exactly when [`is_writable`](Self::is_writable).
    pub fn role(&self) -> PgRole {
        match (self.running, self.in_recovery) {
            (false, _) => PgRole::Stopped,
            (true, false) => PgRole::Primary,
            (true, true) => PgRole::Replica,
        }
    }

    /// A primary accepting writes: running and not in recovery.
    pub fn is_writable(&self) -> bool {
        self.running && !self.in_recovery
    }

    /// A running standby.
    pub fn is_running_replica(&self) -> bool {
        self.running && self.in_recovery
    }

    /// Bytes this replica's `position` (one of its own, received or replayed) is behind its
    /// primary, whose position the primary itself last gave as `primary`; `None` when this is
    /// not a running replica or the lag cannot be measured.
    ///
    /// The primary's status and this one are sampled at different moments, so WAL the
    /// primary wrote after this sample is not lag. A streaming replica is therefore measured
    /// against the lower of `primary` and what its primary last told it (`primary_end`, from
    /// the same sample as `position`); a streaming replica that has heard nothing from its
    /// primary yet (it connected a moment ago and starts at a segment boundary) has no
    /// measurable lag. A replica that is not streaming falls further behind as the primary
    /// writes, so it is measured against `primary` alone.
    pub fn lag_behind(&self, position: Lsn, primary: Option<Lsn>) -> Option<u64> {
        if !self.is_running_replica() {
            return None;
        }
        let primary = primary?;
        let reference = if self.streaming {
            primary.min(self.primary_end?)
        } else {
            primary
        };
        Some(reference.bytes_after(position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_follows_running_and_recovery_and_agrees_with_the_predicates() {
        for (running, in_recovery, role) in [
            (false, false, PgRole::Stopped),
            (false, true, PgRole::Stopped),
            (true, false, PgRole::Primary),
            (true, true, PgRole::Replica),
        ] {
            let pg = PgStatus {
                running,
                in_recovery,
                ..PgStatus::default()
            };
            assert_eq!(
                pg.role(),
                role,
                "running {running}, in recovery {in_recovery}"
            );
            assert_eq!(pg.is_writable(), role == PgRole::Primary);
            assert_eq!(pg.is_running_replica(), role == PgRole::Replica);
        }
    }

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        for (text, value) in [
            ("0/0", 0u64),
            ("0/3000060", 0x3000060),
            ("16/B374D848", 0x16_B374_D848),
        ] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.0, value);
            assert_eq!(lsn.to_string(), text);
        }
        for bad in ["", "0", "x/1", "1/", "100000000/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
        assert_eq!(Lsn(10).bytes_after(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_after(Lsn(10)), 0);
    }

    #[test]
    fn lag_is_measured_against_what_the_replica_could_have_received() {
        let replica = |streaming: bool, primary_end: Option<u64>| PgStatus {
            running: true,
            in_recovery: true,
            streaming,
            primary_end: primary_end.map(Lsn),
            ..PgStatus::default()
        };
        const SEGMENT: u64 = 16 << 20;
        let cases = [
            // (status, position, primary's own position, lag)
            (
                "caught up",
                replica(true, Some(100)),
                100,
                Some(100),
                Some(0),
            ),
            (
                "behind what the primary told it",
                replica(true, Some(900)),
                100,
                Some(900),
                Some(800),
            ),
            (
                "primary sampled after a segment switch the replica had not seen",
                replica(true, Some(SEGMENT + 40)),
                SEGMENT + 40,
                Some(2 * SEGMENT + 96),
                Some(0),
            ),
            (
                "primary sampled earlier than the replica",
                replica(true, Some(500)),
                400,
                Some(450),
                Some(50),
            ),
            (
                "streaming, nothing heard yet",
                replica(true, None),
                SEGMENT,
                Some(2 * SEGMENT),
                None,
            ),
            (
                "not streaming: against the primary",
                replica(false, Some(100)),
                100,
                Some(700),
                Some(600),
            ),
            (
                "not streaming, nothing heard ever",
                replica(false, None),
                100,
                Some(700),
                Some(600),
            ),
            (
                "primary position unknown",
                replica(true, Some(100)),
                100,
                None,
                None,
            ),
            (
                "a primary has no lag",
                PgStatus {
                    running: true,
                    ..PgStatus::default()
                },
                1,
                Some(9),
                None,
            ),
            ("stopped", PgStatus::default(), 1, Some(9), None),
        ];
        for (name, status, position, primary, want) in cases {
            assert_eq!(
                status.lag_behind(Lsn(position), primary.map(Lsn)),
                want,
                "{name}"
            );
        }
    }
}
