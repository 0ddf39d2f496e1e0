//! The history of a fault campaign: what the clients did (writes), what the nemesis did
//! (faults), what the samplers saw (which members accepted writes), and the final table read
//! after heal and convergence. Every instant is in milliseconds since the campaign started
//! ([`Clock`]), so a history serialises and compares without `Instant`s.
//!
//! Owns the record types and their file format; judges nothing (that is `checker.rs`).
//!
//! # File format
//! JSON lines: one record per line, an object whose `type` names the record (`campaign`,
//! `write`, `fault`, `sample`, `final_read`); unknown types and unknown fields are errors, blank
//! lines are skipped. Records may come in any order, so a campaign can append each record as it
//! happens ([`Record::to_line`]) and a crashed campaign still leaves a readable file; loading
//! keeps the relative order of each kind. At most one `campaign` and one `final_read` record.
//!
//! ```text
//! {"type":"campaign","seed":7,"description":"quorum mode, 50 ms one way"}
//! {"type":"write","value":1,"path":"writer port of n2","invoked_ms":10,"completed_ms":14,"outcome":"acknowledged"}
//! {"type":"write","value":2,"path":"VIP","invoked_ms":11,"completed_ms":2011,"outcome":"unknown","error":"timeout after COMMIT"}
//! {"type":"fault","kind":"partition","target":"n1","start_ms":500,"end_ms":9500}
//! {"type":"sample","ms":520,"member":"n1","accepted_writes":true}
//! {"type":"final_read","ms":12000,"member":"n2","values":[1,2]}
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The campaign's time origin: turns `Instant`s into the milliseconds every record carries.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    /// Milliseconds from the start to now.
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// Milliseconds from the start to `at`, rounded down; 0 for an instant before the start.
    pub fn ms_at(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.started);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// What a client learnt about one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered `COMMIT` with success: the write must survive every fault.
    Acknowledged,
    /// Definitely not committed as far as the client can tell: the error came before `COMMIT`
    /// was sent (connection refused, reset during connect, an error answer to the `INSERT`).
    Failed,
    /// `COMMIT` was sent and no answer came (timeout, connection lost): it may or may not have
    /// committed.
    Unknown,
}

/// One write: a value unique in the whole campaign, inserted by one statement through one
/// path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// Unique across the history; the checker rejects a history that reuses one.
    pub value: i64,
    /// How the client reached a server, e.g. `writer port of n2`, `VIP`, `direct n1`.
    pub path: String,
    /// When the client started the attempt (before connecting).
    pub invoked_ms: u64,
    /// When the client learnt the outcome (the answer, the error or its own timeout).
    pub completed_ms: u64,
    pub outcome: Outcome,
    /// What went wrong, for `Failed` and `Unknown`: for a human reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the nemesis did. Short and long pauses are kinds of their own because the cluster is
/// meant to answer them differently (ride out a pause shorter than the lease ttl, fail over
/// during a longer one), so their write outages must not share a median.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL of the pgquorum daemon.
    KillDaemon,
    /// SIGKILL of the postmaster.
    KillPostgres,
    /// SIGKILL of both.
    KillBoth,
    /// SIGSTOP, then SIGCONT, of the daemon, shorter than the lease ttl.
    PauseDaemonShort,
    /// Same, longer than the ttl.
    PauseDaemonLong,
    /// SIGSTOP, then SIGCONT, of PostgreSQL (all its processes), shorter than the ttl.
    PausePostgresShort,
    /// Same, longer than the ttl.
    PausePostgresLong,
    /// The host cut off in both directions.
    Partition,
    /// The host receives nothing; what it sends still arrives.
    PartitionInbound,
    /// What the host sends is dropped; it still receives.
    PartitionOutbound,
    /// The host's daemon and PostgreSQL stopped and started again with their data.
    RestartHost,
    /// Every member restarted, one after the other.
    RollingRestart,
    /// A switchover requested in the middle of the campaign.
    Switchover,
}

impl FaultKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::KillDaemon,
        FaultKind::KillPostgres,
        FaultKind::KillBoth,
        FaultKind::PauseDaemonShort,
        FaultKind::PauseDaemonLong,
        FaultKind::PausePostgresShort,
        FaultKind::PausePostgresLong,
        FaultKind::Partition,
        FaultKind::PartitionInbound,
        FaultKind::PartitionOutbound,
        FaultKind::RestartHost,
        FaultKind::RollingRestart,
        FaultKind::Switchover,
    ];

    /// The name reports print.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::KillDaemon => "kill daemon",
            FaultKind::KillPostgres => "kill postgres",
            FaultKind::KillBoth => "kill both",
            FaultKind::PauseDaemonShort => "pause daemon < ttl",
            FaultKind::PauseDaemonLong => "pause daemon > ttl",
            FaultKind::PausePostgresShort => "pause postgres < ttl",
            FaultKind::PausePostgresLong => "pause postgres > ttl",
            FaultKind::Partition => "partition",
            FaultKind::PartitionInbound => "partition, inbound only",
            FaultKind::PartitionOutbound => "partition, outbound only",
            FaultKind::RestartHost => "restart host",
            FaultKind::RollingRestart => "rolling restart",
            FaultKind::Switchover => "switchover",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Acknowledged => "acknowledged",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One fault, recorded once it is over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    /// The member it was done to; `None` for cluster-wide faults (a rolling restart, a
    /// switchover without a named candidate).
    #[serde(default)]
    pub target: Option<String>,
    /// When it was injected (the signal sent, the link cut, the request made).
    pub start_ms: u64,
    /// When the nemesis undid it (restart, SIGCONT, link up, the switchover call returned).
    /// Equal to `start_ms` for a fault the nemesis does not undo, such as a PostgreSQL kill
    /// that the supervisor repairs on its own.
    pub end_ms: u64,
}

impl fmt::Display for Fault {
    /// `partition of n1`, or the kind alone for a cluster-wide fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Some(target) => write!(f, "{} of {target}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// One probe of one member: did it accept a write at `ms`? The sampler decides what
/// accepting means (see `checker.rs` for the rule it must follow); an unanswered probe is
/// `false`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub ms: u64,
    pub member: String,
    pub accepted_writes: bool,
}

/// How the campaign was run, for whoever reads the file later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The nemesis's seed: the same seed replays the same fault schedule.
    pub seed: u64,
    /// Free text: mode, delay, timing profile, command line.
    pub description: String,
}

/// The table read on the primary after every fault was healed and the cluster converged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalRead {
    /// When the read was made; every write and fault must be over by then.
    pub ms: u64,
    /// The member it was read on.
    pub member: String,
    /// Every row's value, as read (duplicates kept, so the checker can see them).
    pub values: Vec<i64>,
}

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Campaign(Meta),
    Write(Write),
    Fault(Fault),
    Sample(Sample),
    FinalRead(FinalRead),
}

impl Record {
    /// The record as one line of JSON, without the newline: what a campaign appends to its
    /// history file as things happen.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("records have string keys and finite numbers only")
    }
}

/// The same records by reference, so saving does not clone the history.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RecordRef<'a> {
    Campaign(&'a Meta),
    Write(&'a Write),
    Fault(&'a Fault),
    Sample(&'a Sample),
    FinalRead(&'a FinalRead),
}

/// A whole campaign's records, grouped by kind, each group in the order it was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub meta: Option<Meta>,
    pub writes: Vec<Write>,
    pub faults: Vec<Fault>,
    pub samples: Vec<Sample>,
    pub final_read: Option<FinalRead>,
}

/// Why a history could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the history to {}: {source}", path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the history from {origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error("{origin}:{line}: not a history record ({source}): {text}")]
    Parse {
        origin: String,
        line: usize,
        text: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}:{line}: a second `{kind}` record; a history has at most one")]
    Duplicate {
        origin: String,
        line: usize,
        kind: &'static str,
    },
}

impl History {
    /// Adds one record to its group; a `campaign` or `final_read` record replaces the one
    /// held, if any (reading a file refuses a second one instead).
    pub fn push(&mut self, record: Record) {
        match record {
            Record::Campaign(meta) => self.meta = Some(meta),
            Record::Write(write) => self.writes.push(write),
            Record::Fault(fault) => self.faults.push(fault),
            Record::Sample(sample) => self.samples.push(sample),
            Record::FinalRead(read) => self.final_read = Some(read),
        }
    }

    /// Writes every record as JSON lines: the campaign record, writes, faults, samples, then
    /// the final read.
    pub fn write_to(&self, mut out: impl io::Write) -> io::Result<()> {
        let records = self
            .meta
            .iter()
            .map(RecordRef::Campaign)
            .chain(self.writes.iter().map(RecordRef::Write))
            .chain(self.faults.iter().map(RecordRef::Fault))
            .chain(self.samples.iter().map(RecordRef::Sample))
            .chain(self.final_read.iter().map(RecordRef::FinalRead));
        for record in records {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads JSON lines as [`History::write_to`] writes them, or as a campaign appends them
    /// (any order). Stops at the first line that is not a record; `origin` names the input in
    /// errors (a path, `stdin`).
    pub fn read_from(input: impl BufRead, origin: &str) -> Result<History, Error> {
        let mut history = History::default();
        for (index, line) in input.lines().enumerate() {
            let number = index + 1;
            let line = line.map_err(|source| Error::Read {
                origin: format!("{origin}:{number}"),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let record = serde_json::from_str(&line).map_err(|source| Error::Parse {
                origin: origin.to_string(),
                line: number,
                text: shorten(&line),
                source,
            })?;
            let duplicate = match &record {
                Record::Campaign(_) if history.meta.is_some() => Some("campaign"),
                Record::FinalRead(_) if history.final_read.is_some() => Some("final_read"),
                _ => None,
            };
            if let Some(kind) = duplicate {
                return Err(Error::Duplicate {
                    origin: origin.to_string(),
                    line: number,
                    kind,
                });
            }
            history.push(record);
        }
        Ok(history)
    }

    /// Writes the history to a new file at `path` (replacing one that exists).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let error = |source| Error::Save {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(error)?;
        self.write_to(BufWriter::new(file)).map_err(error)
    }

    /// Reads the history file at `path`.
    pub fn load(path: &Path) -> Result<History, Error> {
        let origin = path.display().to_string();
        let file = File::open(path).map_err(|source| Error::Read {
            origin: origin.clone(),
            source,
        })?;
        History::read_from(BufReader::new(file), &origin)
    }
}

/// `line`, cut to a length that fits in an error message.
fn shorten(line: &str) -> String {
    const MAX: usize = 120;
    match line.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

#[cfg(test)]
#[path = "history/tests.rs"]
mod tests;
