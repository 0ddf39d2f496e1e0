//! Judges a campaign: a pure function from a [`History`] and the [`FinalRead`] to a
//! [`Report`]. Reads no clock, file or network, so every rule below is unit-tested on
//! hand-made histories.
//!
//! # Rules
//! - **Consistency first.** A history that cannot have happened is rejected with an
//!   [`Error`] rather than judged: a write completed before it was invoked or after the final
//!   read (the clients stop before the read), a value written twice, a value read twice or read
//!   but never written, a fault healed before it started or after the final read.
//! - **Writes against the final table.** Acknowledged and missing: *lost* (must not happen in
//!   quorum mode). Failed and present: *reappeared*: allowed but counted, because the client
//!   was told the write did not happen and it did (an error reported after the server had
//!   committed, or a client that files an ambiguous error as a failure); kept apart from
//!   *unknown* writes, where either ending is expected and both are counted. Acknowledged and
//!   present, failed and missing: as they should be.
//! - **Lost writes are attributed** to the fault during which they were acknowledged: the
//!   fault with `start_ms <= completed_ms <= end_ms` that started last (the most specific one
//!   when faults overlap); a lost write acknowledged outside every fault is attributed to none,
//!   and says so in the report.
//! - **Outage** of a fault: the longest time without a *durable* acknowledged write (one
//!   acknowledged and in the final table, through any path), from the fault's injection
//!   (`start_ms`) until writes flow again after its end (`end_ms`, its undo or heal). The
//!   window closes at `until`, the earliest completion of a durable acknowledged write invoked
//!   at or after `end_ms`; the outage is the largest gap between consecutive instants of
//!   `start_ms` followed by every durable completion in `(start_ms, until]` (0 if `until` is
//!   `start_ms`). From the injection, for every kind including partitions and pauses, because
//!   the outage a fault causes starts then: many faults bite only after a while (a primary
//!   restarted gracefully serves for a moment, a daemon paused past the ttl is replaced only
//!   after the ttl), so a quick write just after the injection says nothing, and the cluster
//!   is meant to route around a partition or a long pause while it lasts, so the gaps during
//!   the hold count. Until the first durable write invoked after the end, because the cluster
//!   must have recovered from the fault itself, not merely ridden it out. Only durable writes
//!   count, because an isolated primary may acknowledge writes that are lost later
//!   (asynchronous mode): those are the loss, not availability. For a pause shorter than the
//!   ttl the cluster is meant to wait, so its outage is about the pause's length, which is why
//!   short and long pauses are kinds of their own. A fault with no durable acknowledged write
//!   invoked at or after its end is *unrecovered* and has no outage; the campaign must keep
//!   writing after its last fault for this to mean something.
//! - **Two writable members**: see [`dual_primary_intervals`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::history::{Fault, FaultKind, FinalRead, History, Outcome, Sample};

/// Why a history was rejected: it describes something that cannot have happened, so judging
/// it would report nonsense.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "write {value} through {path} completed at {completed_ms} ms, before it was invoked at \
         {invoked_ms} ms"
    )]
    CompletedBeforeInvoked {
        value: i64,
        path: String,
        invoked_ms: u64,
        completed_ms: u64,
    },
    #[error(
        "write {value} through {path} completed ({outcome}) at {completed_ms} ms, after the \
         final read at {read_ms} ms: the clients must stop before the final table is read"
    )]
    WriteAfterFinalRead {
        value: i64,
        path: String,
        outcome: Outcome,
        completed_ms: u64,
        read_ms: u64,
    },
    #[error(
        "value {value} is written twice (through {first_path} and {second_path}): each write \
         needs a value of its own, or a missing row cannot be told apart"
    )]
    DuplicateWrite {
        value: i64,
        first_path: String,
        second_path: String,
    },
    #[error(
        "value {value} appears {count} times in the final table read on {member}: each value \
         is inserted once, so the table needs a primary key or the read is wrong"
    )]
    DuplicateRow {
        value: i64,
        count: usize,
        member: String,
    },
    #[error(
        "value {value} is in the final table read on {member} but no write of the history has \
         it: the table must be created for the campaign and written only by its clients"
    )]
    UnknownRow { value: i64, member: String },
    #[error("fault {fault} ends at {end_ms} ms, before it starts at {start_ms} ms")]
    FaultEndsBeforeStart {
        fault: String,
        start_ms: u64,
        end_ms: u64,
    },
    #[error(
        "fault {fault} is healed at {end_ms} ms, after the final read at {read_ms} ms: heal \
         every fault and let the cluster converge before reading the final table"
    )]
    FaultAfterFinalRead {
        fault: String,
        end_ms: u64,
        read_ms: u64,
    },
}

/// An acknowledged write missing from the final table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    pub value: i64,
    pub path: String,
    /// When the client saw the acknowledgement.
    pub acknowledged_ms: u64,
    /// Index into [`History::faults`] (and [`Report::faults`]) of the fault it is attributed
    /// to; `None` if it was acknowledged outside every fault.
    pub fault: Option<usize>,
}

/// A stretch of time during which two or more members accepted writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DualPrimary {
    pub start_ms: u64,
    /// The first sample instant at which at most one member accepted writes, or the last
    /// sample's instant if none came (then `ended` is false).
    pub end_ms: u64,
    /// Every member seen accepting writes during the interval, sorted.
    pub members: Vec<String>,
    /// False if the samples ran out before the interval ended.
    pub ended: bool,
}

impl DualPrimary {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

/// One fault and how the cluster came through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultResult {
    pub fault: Fault,
    /// The longest time without a durable acknowledged write, from the injection until the
    /// first one invoked at or after the fault's end completes (see the module's rules);
    /// `None`: unrecovered, no such write.
    pub outage_ms: Option<u64>,
    /// Lost writes attributed to this fault.
    pub lost: usize,
    /// From the injection to the acknowledgement of the last write lost to this fault: how
    /// long the fault went on acknowledging writes that did not survive. `None` if it lost
    /// none.
    pub loss_window_ms: Option<u64>,
}

/// The faults of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSummary {
    pub kind: FaultKind,
    pub count: usize,
    pub recovered: usize,
    /// Over the recovered faults; the mean of the two middle values for an even number.
    pub median_outage_ms: Option<u64>,
    /// Over the recovered faults.
    pub max_outage_ms: Option<u64>,
    pub lost: usize,
    /// The longest loss window of a fault of this kind (see [`FaultResult::loss_window_ms`]).
    pub max_loss_window_ms: Option<u64>,
}

/// What the checker found. Lists are sorted by value or time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub read_member: String,
    pub read_ms: u64,
    pub rows: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Acknowledged writes missing at the end, by value.
    pub lost: Vec<LostWrite>,
    /// Values of failed writes present at the end.
    pub reappeared: Vec<i64>,
    /// Values of unknown writes present at the end.
    pub unknown_committed: Vec<i64>,
    /// Values of unknown writes missing at the end.
    pub unknown_not_committed: Vec<i64>,
    pub dual_primary: Vec<DualPrimary>,
    /// One per fault of the history, in its order.
    pub faults: Vec<FaultResult>,
    /// One per kind that occurred, in [`FaultKind::ALL`] order.
    pub kinds: Vec<KindSummary>,
}

/// Checks `history` against `final_read`, the table read on the primary after heal and
/// convergence (usually `history.final_read`, passed apart so a test or a re-check can supply
/// another). Fails, without judging, on an inconsistent history: see [`Error`].
pub fn check(history: &History, final_read: &FinalRead) -> Result<Report, Error> {
    let present = validate(history, final_read)?;
    let (mut lost, mut reappeared, mut unknown_committed, mut unknown_not_committed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut acknowledged, mut failed, mut unknown) = (0, 0, 0);
    for write in &history.writes {
        let is_present = present.contains(&write.value);
        match write.outcome {
            Outcome::Acknowledged => {
                acknowledged += 1;
                if !is_present {
                    lost.push(LostWrite {
                        value: write.value,
                        path: write.path.clone(),
                        acknowledged_ms: write.completed_ms,
                        fault: attribute(&history.faults, write.completed_ms),
                    });
                }
            }
            Outcome::Failed => {
                failed += 1;
                if is_present {
                    reappeared.push(write.value);
                }
            }
            Outcome::Unknown => {
                unknown += 1;
                if is_present {
                    unknown_committed.push(write.value);
                } else {
                    unknown_not_committed.push(write.value);
                }
            }
        }
    }
    lost.sort_by_key(|l| l.value);
    reappeared.sort_unstable();
    unknown_committed.sort_unstable();
    unknown_not_committed.sort_unstable();

    let outages = Outages::new(history, &present);
    let faults: Vec<FaultResult> = history
        .faults
        .iter()
        .enumerate()
        .map(|(index, fault)| {
            let own = lost.iter().filter(|l| l.fault == Some(index));
            FaultResult {
                fault: fault.clone(),
                outage_ms: outages.longest(fault),
                lost: own.clone().count(),
                loss_window_ms: own
                    .map(|l| l.acknowledged_ms.saturating_sub(fault.start_ms))
                    .max(),
            }
        })
        .collect();
    let kinds = FaultKind::ALL
        .into_iter()
        .filter_map(|kind| summarise(kind, &faults))
        .collect();

    Ok(Report {
        read_member: final_read.member.clone(),
        read_ms: final_read.ms,
        rows: final_read.values.len(),
        acknowledged,
        failed,
        unknown,
        lost,
        reappeared,
        unknown_committed,
        unknown_not_committed,
        dual_primary: dual_primary_intervals(&history.samples),
        faults,
        kinds,
    })
}

/// Every consistency rule; on success, the set of values in the final table.
fn validate(history: &History, final_read: &FinalRead) -> Result<BTreeSet<i64>, Error> {
    let mut written: HashMap<i64, &str> = HashMap::with_capacity(history.writes.len());
    for write in &history.writes {
        if write.completed_ms < write.invoked_ms {
            return Err(Error::CompletedBeforeInvoked {
                value: write.value,
                path: write.path.clone(),
                invoked_ms: write.invoked_ms,
                completed_ms: write.completed_ms,
            });
        }
        if write.completed_ms > final_read.ms {
            return Err(Error::WriteAfterFinalRead {
                value: write.value,
                path: write.path.clone(),
                outcome: write.outcome,
                completed_ms: write.completed_ms,
                read_ms: final_read.ms,
            });
        }
        if let Some(first) = written.insert(write.value, &write.path) {
            return Err(Error::DuplicateWrite {
                value: write.value,
                first_path: first.to_string(),
                second_path: write.path.clone(),
            });
        }
    }
    for fault in &history.faults {
        if fault.end_ms < fault.start_ms {
            return Err(Error::FaultEndsBeforeStart {
                fault: fault.to_string(),
                start_ms: fault.start_ms,
                end_ms: fault.end_ms,
            });
        }
        if fault.end_ms > final_read.ms {
            return Err(Error::FaultAfterFinalRead {
                fault: fault.to_string(),
                end_ms: fault.end_ms,
                read_ms: final_read.ms,
            });
        }
    }
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for value in &final_read.values {
        *counts.entry(*value).or_default() += 1;
    }
    if let Some((&value, &count)) = counts.iter().find(|(_, &count)| count > 1) {
        return Err(Error::DuplicateRow {
            value,
            count,
            member: final_read.member.clone(),
        });
    }
    if let Some(&value) = counts.keys().find(|v| !written.contains_key(v)) {
        return Err(Error::UnknownRow {
            value,
            member: final_read.member.clone(),
        });
    }
    Ok(counts.into_keys().collect())
}

/// The index of the fault active at `ms` that started last (the later one on a tie).
fn attribute(faults: &[Fault], ms: u64) -> Option<usize> {
    faults
        .iter()
        .enumerate()
        .filter(|(_, f)| f.start_ms <= ms && ms <= f.end_ms)
        .max_by_key(|(index, f)| (f.start_ms, *index))
        .map(|(index, _)| index)
}

/// The durable acknowledged writes (acknowledged and in the final table), indexed so that a
/// fault's outage costs two binary searches and a walk over the completions in its window.
struct Outages {
    /// Every durable completion, sorted: the instants at which writes flowed.
    completions: Vec<u64>,
    /// Invocation instants, sorted.
    invoked: Vec<u64>,
    /// `earliest_completion[i]` = min completed_ms of the writes `i..` in invocation order.
    earliest_completion: Vec<u64>,
}

impl Outages {
    /// Indexes the durable writes of `history`; `present`: the values in the final table.
    fn new(history: &History, present: &BTreeSet<i64>) -> Outages {
        let mut durable: Vec<(u64, u64)> = history
            .writes
            .iter()
            .filter(|w| w.outcome == Outcome::Acknowledged && present.contains(&w.value))
            .map(|w| (w.invoked_ms, w.completed_ms))
            .collect();
        durable.sort_unstable();
        let mut earliest_completion = vec![u64::MAX; durable.len()];
        let mut earliest = u64::MAX;
        for (i, &(_, completed)) in durable.iter().enumerate().rev() {
            earliest = earliest.min(completed);
            earliest_completion[i] = earliest;
        }
        let mut completions: Vec<u64> = durable.iter().map(|&(_, completed)| completed).collect();
        completions.sort_unstable();
        Outages {
            completions,
            invoked: durable.iter().map(|&(invoked, _)| invoked).collect(),
            earliest_completion,
        }
    }

    /// The earliest completion of a durable acknowledged write invoked at or after `ms`.
    fn first_invoked_from(&self, ms: u64) -> Option<u64> {
        let first = self.invoked.partition_point(|&invoked| invoked < ms);
        self.earliest_completion.get(first).copied()
    }

    /// The longest stretch without a durable completion from `fault`'s injection until the
    /// first durable write invoked at or after its end completes; `None` if there is none.
    fn longest(&self, fault: &Fault) -> Option<u64> {
        let until = self.first_invoked_from(fault.end_ms)?;
        let first = self
            .completions
            .partition_point(|&completed| completed <= fault.start_ms);
        let mut previous = fault.start_ms;
        let mut longest = 0;
        // `until` is itself a durable completion, so the walk ends on it.
        for &completed in self.completions[first..]
            .iter()
            .take_while(|&&completed| completed <= until)
        {
            longest = longest.max(completed - previous);
            previous = completed;
        }
        Some(longest)
    }
}

/// The summary of the faults of `kind`, or `None` if none occurred.
fn summarise(kind: FaultKind, faults: &[FaultResult]) -> Option<KindSummary> {
    let of_kind: Vec<&FaultResult> = faults.iter().filter(|f| f.fault.kind == kind).collect();
    if of_kind.is_empty() {
        return None;
    }
    let mut times: Vec<u64> = of_kind.iter().filter_map(|f| f.outage_ms).collect();
    times.sort_unstable();
    Some(KindSummary {
        kind,
        count: of_kind.len(),
        recovered: times.len(),
        median_outage_ms: median(&times),
        max_outage_ms: times.last().copied(),
        lost: of_kind.iter().map(|f| f.lost).sum(),
        max_loss_window_ms: of_kind.iter().filter_map(|f| f.loss_window_ms).max(),
    })
}

/// The median of sorted `times`: the middle one, or the mean of the two middle ones (rounded
/// down), as the repository's benchmarks compute it.
fn median(sorted: &[u64]) -> Option<u64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// The intervals during which two or more members accepted writes, from the samples.
///
/// The rule: samples make one step function per member. A member accepts writes from one of
/// its samples until its next one (and not before its first); samples with the same `ms`
/// apply together, in any order of the input (they are sorted by `ms`, stably). An interval
/// begins at a sample instant at which two or more members accept writes and ends at the next
/// sample instant at which at most one does; one still open at the last sample ends there,
/// marked not `ended`. So a member seen writable in a single sample opens an interval that
/// lasts until its next sample (or another member's) shows at most one writable member.
///
/// The samples must be taken so that this errs towards reporting an overlap, never away
/// from it:
/// - every member is probed continuously, each at least every P ms, from before the first
///   write until after the final read; P is the resolution (an overlap shorter than P can be
///   missed) and is stated with the results;
/// - a probe that finds the member accepting writes is stamped with the instant it was sent,
///   and one that does not with the instant its answer (or its timeout) came, so an observed
///   writable spell is stretched to the edges of its uncertainty, not shrunk;
/// - "accepting writes" is the strictest cheap test, read over the host's unix socket so a
///   network fault does not hide it: PostgreSQL is not in recovery and not read-only. A
///   primary whose commits wait for a synchronous standby counts;
/// - a probe without an answer before its timeout (kept below P) is `false`: a member that
///   cannot answer a probe does not answer a client's `COMMIT` either, and one that answers
///   late is caught by the next probe.
pub fn dual_primary_intervals(samples: &[Sample]) -> Vec<DualPrimary> {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.ms);
    let mut state: BTreeMap<&str, bool> = BTreeMap::new();
    let mut open: Option<(u64, BTreeSet<&str>)> = None;
    let mut intervals = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let ms = sorted[i].ms;
        while i < sorted.len() && sorted[i].ms == ms {
            state.insert(&sorted[i].member, sorted[i].accepted_writes);
            i += 1;
        }
        let writable: Vec<&str> = state
            .iter()
            .filter(|(_, &accepts)| accepts)
            .map(|(&member, _)| member)
            .collect();
        if writable.len() >= 2 {
            open.get_or_insert_with(|| (ms, BTreeSet::new()))
                .1
                .extend(writable);
        } else if let Some((start_ms, members)) = open.take() {
            intervals.push(DualPrimary {
                start_ms,
                end_ms: ms,
                members: members.into_iter().map(str::to_string).collect(),
                ended: true,
            });
        }
    }
    if let (Some((start_ms, members)), Some(last)) = (open, sorted.last()) {
        intervals.push(DualPrimary {
            start_ms,
            end_ms: last.ms,
            members: members.into_iter().map(str::to_string).collect(),
            ended: false,
        });
    }
    intervals
}

/// How many lost writes and intervals `render` lists one by one.
const DETAIL_LINES: usize = 20;

impl Report {
    /// True if and only if no acknowledged write was lost and no two members accepted writes
    /// at once: what CI requires. Unrecovered faults are reported but do not make a run unsafe.
    pub fn is_safe(&self) -> bool {
        self.lost.is_empty() && self.dual_primary.is_empty()
    }

    /// The total time during which two or more members accepted writes.
    pub fn dual_primary_ms(&self) -> u64 {
        self.dual_primary.iter().map(DualPrimary::duration_ms).sum()
    }

    /// Faults with no durable acknowledged write invoked at or after their end.
    pub fn unrecovered(&self) -> usize {
        self.faults.iter().filter(|f| f.outage_ms.is_none()).count()
    }

    /// Lost writes acknowledged outside every fault.
    pub fn lost_outside_faults(&self) -> usize {
        self.lost.iter().filter(|l| l.fault.is_none()).count()
    }

    /// The summary, as the benchmarks print theirs: a table of fault kinds (count, recovered,
    /// median and maximum outage, lost writes) and what an outage is, then the totals and the
    /// verdict, then the first lost writes and overlaps one by one.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ms = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "final table: {} rows, read on {} at {} ms",
            self.rows, self.read_member, self.read_ms
        );
        let _ = writeln!(
            out,
            "writes: {} ({} acknowledged, {} failed, {} unknown)",
            self.acknowledged + self.failed + self.unknown,
            self.acknowledged,
            self.failed,
            self.unknown
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<26} {:>6} {:>10} {:>19} {:>16} {:>5} {:>21}",
            "fault kind",
            "faults",
            "recovered",
            "outage median (ms)",
            "outage max (ms)",
            "lost",
            "loss window max (ms)"
        );
        let all: Vec<u64> = {
            let mut all: Vec<u64> = self.faults.iter().filter_map(|f| f.outage_ms).collect();
            all.sort_unstable();
            all
        };
        let rows = self
            .kinds
            .iter()
            .map(|k| {
                (
                    k.kind.label(),
                    k.count,
                    k.recovered,
                    k.median_outage_ms,
                    k.max_outage_ms,
                    k.lost,
                    k.max_loss_window_ms,
                )
            })
            .chain(std::iter::once((
                "all faults",
                self.faults.len(),
                all.len(),
                median(&all),
                all.last().copied(),
                self.lost.len() - self.lost_outside_faults(),
                self.faults.iter().filter_map(|f| f.loss_window_ms).max(),
            )));
        for (label, count, recovered, median, max, lost, window) in rows {
            let _ = writeln!(
                out,
                "{label:<26} {count:>6} {recovered:>10} {:>19} {:>16} {lost:>5} {:>21}",
                ms(median),
                ms(max),
                ms(window)
            );
        }
        let _ = writeln!(
            out,
            "outage: the longest time without a durable acknowledged write, from the fault's \
             injection until writes flow again after its end"
        );
        let _ = writeln!(
            out,
            "loss window: from the fault's injection to the acknowledgement of the last write \
             it lost"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "acknowledged writes lost:            {} ({} outside any fault)",
            self.lost.len(),
            self.lost_outside_faults()
        );
        let _ = writeln!(
            out,
            "failed writes that reappeared:       {}",
            self.reappeared.len()
        );
        let _ = writeln!(
            out,
            "unknown writes committed:            {} of {}",
            self.unknown_committed.len(),
            self.unknown
        );
        let _ = writeln!(
            out,
            "two writable members:                {} intervals, {} ms",
            self.dual_primary.len(),
            self.dual_primary_ms()
        );
        let _ = writeln!(
            out,
            "faults not recovered:                {} of {}",
            self.unrecovered(),
            self.faults.len()
        );
        let verdict = if self.is_safe() {
            "SAFE (no acknowledged write lost, never two writable members)"
        } else {
            "UNSAFE"
        };
        let _ = writeln!(out, "verdict: {verdict}");
        for lost in self.lost.iter().take(DETAIL_LINES) {
            let during = match lost.fault.and_then(|i| self.faults.get(i)) {
                Some(f) => format!(
                    "during {} ({}-{} ms)",
                    f.fault, f.fault.start_ms, f.fault.end_ms
                ),
                None => "outside any fault".to_string(),
            };
            let _ = writeln!(
                out,
                "  lost {} through {}, acknowledged at {} ms {during}",
                lost.value, lost.path, lost.acknowledged_ms
            );
        }
        for dual in self.dual_primary.iter().take(DETAIL_LINES) {
            let until = if dual.ended { "" } else { " (samples ran out)" };
            let _ = writeln!(
                out,
                "  writable together: {} from {} to {} ms{until}",
                dual.members.join(", "),
                dual.start_ms,
                dual.end_ms
            );
        }
        let hidden = self.lost.len().saturating_sub(DETAIL_LINES)
            + self.dual_primary.len().saturating_sub(DETAIL_LINES);
        if hidden > 0 {
            let _ = writeln!(out, "  ... and {hidden} more: see the history file");
        }
        out
    }
}

#[cfg(test)]
#[path = "checker/tests.rs"]
mod tests;
