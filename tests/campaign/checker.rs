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
mod tests {
    use super::*;
    use crate::history::Write;

    /// A history built one line per event.
    #[derive(Default)]
    struct Builder(History);

    fn history() -> Builder {
        Builder::default()
    }

    impl Builder {
        /// Value `value` through `path`, invoked at `invoked` and completed at `completed`.
        fn write(mut self, value: i64, outcome: Outcome, invoked: u64, completed: u64) -> Self {
            self = self.write_via(value, "VIP", outcome, invoked, completed);
            self
        }

        fn write_via(
            mut self,
            value: i64,
            path: &str,
            outcome: Outcome,
            invoked: u64,
            completed: u64,
        ) -> Self {
            self.0.writes.push(Write {
                value,
                path: path.to_string(),
                invoked_ms: invoked,
                completed_ms: completed,
                outcome,
                error: None,
            });
            self
        }

        fn fault(mut self, kind: FaultKind, target: &str, start: u64, end: u64) -> Self {
            self.0.faults.push(Fault {
                kind,
                target: Some(target.to_string()),
                start_ms: start,
                end_ms: end,
            });
            self
        }

        fn sample(mut self, ms: u64, member: &str, accepted_writes: bool) -> Self {
            self.0.samples.push(Sample {
                ms,
                member: member.to_string(),
                accepted_writes,
            });
            self
        }

        fn build(self) -> History {
            self.0
        }
    }

    fn read(ms: u64, values: &[i64]) -> FinalRead {
        FinalRead {
            ms,
            member: "n2".to_string(),
            values: values.to_vec(),
        }
    }

    use FaultKind::*;
    use Outcome::*;

    #[test]
    fn each_write_is_classified_against_the_final_table() {
        #[derive(Debug, PartialEq)]
        enum Class {
            Fine,
            Lost,
            Reappeared,
            Committed,
            NotCommitted,
        }
        use Class::*;
        // (case, outcome, present at the end, class)
        let cases = [
            ("acknowledged, kept", Acknowledged, true, Fine),
            ("acknowledged, missing: lost", Acknowledged, false, Lost),
            ("failed, missing", Failed, false, Fine),
            ("failed, present: reappeared", Failed, true, Reappeared),
            ("unknown, present: no loss", Unknown, true, Committed),
            ("unknown, missing", Unknown, false, NotCommitted),
        ];
        for (case, outcome, present, expected) in cases {
            let h = history().write(1, outcome, 10, 20).build();
            let values: &[i64] = if present { &[1] } else { &[] };
            let report = check(&h, &read(100, values)).unwrap();
            let class = if !report.lost.is_empty() {
                Lost
            } else if !report.reappeared.is_empty() {
                Reappeared
            } else if !report.unknown_committed.is_empty() {
                Committed
            } else if !report.unknown_not_committed.is_empty() {
                NotCommitted
            } else {
                Fine
            };
            assert_eq!(class, expected, "{case}");
            assert_eq!(report.is_safe(), expected != Lost, "{case}: is_safe");
            let counts = (report.acknowledged, report.failed, report.unknown);
            let expected_counts = match outcome {
                Acknowledged => (1, 0, 0),
                Failed => (0, 1, 0),
                Unknown => (0, 0, 1),
            };
            assert_eq!(counts, expected_counts, "{case}: counts");
        }
    }

    #[test]
    fn an_inconsistent_history_is_rejected_with_what_is_wrong() {
        // (case, history, final read, what the error must say)
        let cases = [
            (
                "an ack after the final read cannot happen",
                history().write(1, Acknowledged, 90, 101).build(),
                read(100, &[1]),
                "write 1 through VIP completed (acknowledged) at 101 ms, after the final read at \
                 100 ms: the clients must stop before the final table is read",
            ),
            (
                "nor a failure after it",
                history().write(1, Failed, 90, 150).build(),
                read(100, &[]),
                "completed (failed) at 150 ms, after the final read",
            ),
            (
                "completion before invocation",
                history().write(1, Acknowledged, 50, 40).build(),
                read(100, &[1]),
                "write 1 through VIP completed at 40 ms, before it was invoked at 50 ms",
            ),
            (
                "the same value written twice",
                history()
                    .write_via(7, "direct n1", Acknowledged, 1, 2)
                    .write_via(7, "VIP", Failed, 3, 4)
                    .build(),
                read(100, &[7]),
                "value 7 is written twice (through direct n1 and VIP)",
            ),
            (
                "the same value read twice",
                history().write(7, Acknowledged, 1, 2).build(),
                read(100, &[7, 7]),
                "value 7 appears 2 times in the final table read on n2",
            ),
            (
                "a row nobody wrote",
                history().write(7, Acknowledged, 1, 2).build(),
                read(100, &[7, 8]),
                "value 8 is in the final table read on n2 but no write of the history has it",
            ),
            (
                "a fault healed before it started",
                history().fault(Partition, "n1", 50, 40).build(),
                read(100, &[]),
                "fault partition of n1 ends at 40 ms, before it starts at 50 ms",
            ),
            (
                "a fault healed after the final read",
                history().fault(PauseDaemonLong, "n3", 50, 120).build(),
                read(100, &[]),
                "fault pause daemon > ttl of n3 is healed at 120 ms, after the final read at \
                 100 ms",
            ),
        ];
        for (case, h, final_read, needle) in cases {
            match check(&h, &final_read) {
                Ok(report) => panic!("{case}: accepted:\n{}", report.render()),
                Err(error) => {
                    let message = error.to_string();
                    assert!(message.contains(needle), "{case}: {message}");
                }
            }
        }
    }

    #[test]
    fn writes_completing_exactly_at_the_read_are_judged() {
        let h = history()
            .write(1, Acknowledged, 90, 100)
            .fault(KillDaemon, "n1", 95, 100)
            .build();
        assert!(check(&h, &read(100, &[1])).unwrap().is_safe());
    }

    #[test]
    fn a_lost_write_is_attributed_to_the_fault_during_which_it_was_acknowledged() {
        // (case, faults, ack time of the lost write, expected fault index)
        type Case<'a> = (&'a str, Vec<(FaultKind, u64, u64)>, u64, Option<usize>);
        let cases: [Case; 6] = [
            (
                "a loss during a partition goes to the partition",
                vec![(KillPostgres, 0, 10), (Partition, 100, 5000)],
                2000,
                Some(1),
            ),
            (
                "at the injection instant",
                vec![(Partition, 100, 5000)],
                100,
                Some(0),
            ),
            (
                "at the heal instant",
                vec![(Partition, 100, 5000)],
                5000,
                Some(0),
            ),
            (
                "after the heal: outside any fault",
                vec![(Partition, 100, 5000)],
                5001,
                None,
            ),
            (
                "overlapping faults: the one injected last",
                vec![(RollingRestart, 0, 9000), (PartitionInbound, 3000, 4000)],
                3500,
                Some(1),
            ),
            (
                "overlapping faults, only the outer one still active",
                vec![(RollingRestart, 0, 9000), (PartitionInbound, 3000, 4000)],
                4500,
                Some(0),
            ),
        ];
        for (case, faults, acked, expected) in cases {
            let mut b = history().write(1, Acknowledged, acked - 5, acked);
            for (kind, start, end) in faults {
                b = b.fault(kind, "n1", start, end);
            }
            let report = check(&b.build(), &read(10_000, &[])).unwrap();
            assert_eq!(report.lost.len(), 1, "{case}");
            assert_eq!(report.lost[0].fault, expected, "{case}");
            let attributed: usize = report.faults.iter().map(|f| f.lost).sum();
            assert_eq!(attributed, usize::from(expected.is_some()), "{case}");
            assert_eq!(
                report.lost_outside_faults(),
                usize::from(expected.is_none()),
                "{case}"
            );
            if let Some(index) = expected {
                let kind = report.faults[index].fault.kind;
                let summary = report.kinds.iter().find(|k| k.kind == kind).unwrap();
                assert_eq!(summary.lost, 1, "{case}: per kind");
            }
        }
    }

    #[test]
    fn the_outage_is_the_longest_gap_between_durable_acks_from_injection_to_recovery() {
        // (case, fault (start, end), writes (value, outcome, invoked, completed), values in
        // the final table, expected outage)
        type Case<'a> = (
            &'a str,
            (u64, u64),
            Vec<(i64, Outcome, u64, u64)>,
            Vec<i64>,
            Option<u64>,
        );
        let cases: Vec<Case> = vec![
            (
                "the longest gap in the middle of the window, not the first nor the last",
                (1000, 5000),
                vec![
                    (1, Acknowledged, 1000, 1100),
                    (2, Acknowledged, 1100, 1200),
                    (3, Acknowledged, 1200, 3200),
                    (4, Acknowledged, 3200, 3300),
                    (5, Acknowledged, 5000, 5050),
                ],
                vec![1, 2, 3, 4, 5],
                // 1000, 1100, 1200, 3200, 3300, 5050: gaps 100, 100, 2000, 100, 1750.
                Some(2000),
            ),
            (
                "a gap before the injection is not counted",
                (1000, 2000),
                vec![
                    (1, Acknowledged, 0, 100),
                    (2, Acknowledged, 1040, 1050),
                    (3, Acknowledged, 1450, 1500),
                    (4, Acknowledged, 2000, 2100),
                ],
                vec![1, 2, 3, 4],
                // 1000, 1050, 1500, 2100; not 100 to 1050 (950).
                Some(600),
            ),
            (
                "acks completing after writes flow again are not counted",
                (1000, 1000),
                vec![
                    (1, Acknowledged, 900, 950),
                    (2, Acknowledged, 1000, 1300),
                    (3, Acknowledged, 990, 4000),
                    (4, Acknowledged, 4100, 9000),
                ],
                vec![1, 2, 3, 4],
                // Until 1300: the gaps 1300 to 4000 and 4000 to 9000 are after it.
                Some(300),
            ),
            (
                "the earliest completion after the end wins over the earliest invocation",
                (1000, 1000),
                vec![(1, Acknowledged, 1000, 4000), (2, Acknowledged, 1100, 1200)],
                vec![1, 2],
                Some(200),
            ),
            (
                "a quick ack just after the injection does not hide the outage that follows",
                (1000, 4000),
                vec![
                    (1, Acknowledged, 1000, 1007),
                    (2, Failed, 1010, 1500),
                    (3, Unknown, 1500, 3000),
                    (4, Acknowledged, 4000, 4100),
                ],
                vec![1, 4],
                // 1000, 1007, 4100: the graceful restart that served for a moment.
                Some(3093),
            ),
            (
                "an ack invoked during the hold does not end it, even if it completes after",
                (1000, 2000),
                vec![(1, Acknowledged, 1900, 2100), (2, Acknowledged, 2000, 3500)],
                vec![1, 2],
                // 1000, 2100, 3500: until is 3500, not 2100.
                Some(1400),
            ),
            (
                "lost acks neither fill the gap nor end the outage",
                (1000, 3000),
                vec![
                    (1, Acknowledged, 1000, 1100),
                    (2, Acknowledged, 1200, 1250),
                    (3, Acknowledged, 2000, 2100),
                    (4, Acknowledged, 3000, 3010),
                    (5, Acknowledged, 3000, 3300),
                ],
                // 2, 3 and 4 were acknowledged by an isolated primary and lost.
                vec![1, 5],
                // 1000, 1100, 3300.
                Some(2200),
            ),
            (
                "only failed or unknown writes after the end: unrecovered",
                (1000, 2000),
                vec![
                    (1, Acknowledged, 1000, 1100),
                    (2, Failed, 2000, 2100),
                    // Committed, but the client was never told: not a write that flowed.
                    (3, Unknown, 2100, 2500),
                    // Reappeared: the client was told it failed.
                    (4, Failed, 2500, 2600),
                ],
                vec![1, 3, 4],
                None,
            ),
            (
                "acks only before the end: unrecovered",
                (1000, 2000),
                vec![(1, Acknowledged, 100, 200), (2, Acknowledged, 1999, 2500)],
                vec![1, 2],
                None,
            ),
            (
                "a partition held 5 s while writes kept flowing: the longest short gap",
                (1000, 6000),
                vec![
                    (1, Acknowledged, 1000, 1200),
                    (2, Acknowledged, 1200, 1500),
                    (3, Acknowledged, 1500, 2300),
                    (4, Acknowledged, 2300, 2600),
                    (5, Acknowledged, 2600, 3300),
                    (6, Acknowledged, 3300, 4000),
                    (7, Acknowledged, 4000, 4500),
                    (8, Acknowledged, 4500, 5000),
                    (9, Acknowledged, 5000, 5500),
                    (10, Acknowledged, 5500, 6000),
                    (11, Acknowledged, 6000, 6050),
                ],
                (1..=11).collect(),
                // Gaps 200, 300, 800, 300, 700, 700, 500, 500, 500, 500, 50.
                Some(800),
            ),
            (
                "a write invoked at the heal instant counts",
                (1000, 2000),
                vec![(1, Acknowledged, 1400, 1500), (2, Acknowledged, 2000, 2000)],
                vec![1, 2],
                Some(500),
            ),
            (
                "a zero-length fault with an immediate durable write: no outage",
                (1000, 1000),
                vec![(1, Acknowledged, 1000, 1000)],
                vec![1],
                Some(0),
            ),
            (
                "a zero-length fault and a write completing after a short while",
                (1000, 1000),
                vec![(1, Acknowledged, 500, 1000), (2, Acknowledged, 1000, 1007)],
                vec![1, 2],
                // The completion at the injection instant is not after it: 1000, 1007.
                Some(7),
            ),
        ];
        for (case, (start, end), writes, values, expected) in cases {
            let mut b = history().fault(Partition, "n1", start, end);
            for (value, outcome, invoked, completed) in writes {
                b = b.write(value, outcome, invoked, completed);
            }
            let report = check(&b.build(), &read(10_000, &values)).unwrap();
            assert_eq!(report.faults[0].outage_ms, expected, "{case}");
            assert_eq!(
                report.unrecovered(),
                usize::from(expected.is_none()),
                "{case}: unrecovered"
            );
            let summary = &report.kinds[0];
            assert_eq!(
                (summary.median_outage_ms, summary.max_outage_ms),
                (expected, expected),
                "{case}: per kind"
            );
        }
    }

    #[test]
    fn kinds_summarise_count_median_and_maximum_outage_over_recovered_faults() {
        // Each partition is held 50 ms; the only durable ack of its window is invoked at its
        // heal, so its outage runs from the injection to that ack's completion.
        let mut b = history();
        let partitions = [(0, 400), (1000, 100), (2000, 300), (3000, 200)];
        for (i, (start, outage)) in partitions.into_iter().enumerate() {
            b = b.fault(Partition, "n1", start, start + 50).write(
                i as i64,
                Acknowledged,
                start + 50,
                start + outage,
            );
        }
        b = b
            .fault(KillDaemon, "n2", 5000, 5000)
            .write(10, Acknowledged, 5000, 5070)
            .fault(KillDaemon, "n3", 6000, 6000)
            // Completes in the middle of the outage of the kill at 6000, which ends at 6500.
            .write(11, Acknowledged, 5990, 6010)
            .write(12, Acknowledged, 6000, 6500)
            .fault(KillDaemon, "n1", 7000, 7000)
            .write(13, Acknowledged, 7000, 7500)
            // Unrecovered: only a failure is written after it.
            .fault(Switchover, "n2", 8000, 8100)
            .write(14, Failed, 8100, 8200);
        let report = check(&b.build(), &read(9000, &[0, 1, 2, 3, 10, 11, 12, 13])).unwrap();
        let summary = |kind| {
            report
                .kinds
                .iter()
                .find(|k| k.kind == kind)
                .unwrap()
                .clone()
        };
        let partition = summary(Partition);
        // Even count: the mean of 200 and 300.
        assert_eq!(
            (
                partition.count,
                partition.recovered,
                partition.median_outage_ms,
                partition.max_outage_ms
            ),
            (4, 4, Some(250), Some(400))
        );
        let kill = summary(KillDaemon);
        // Odd count: the middle one. The kill at 5000 is out 70 ms; the one at 6000 490 ms
        // (6010 to 6500, not the 10 ms to the first ack); the one at 7000 500 ms.
        let outages: Vec<Option<u64>> = report
            .faults
            .iter()
            .filter(|f| f.fault.kind == KillDaemon)
            .map(|f| f.outage_ms)
            .collect();
        assert_eq!(outages, [Some(70), Some(490), Some(500)]);
        assert_eq!(
            (kill.count, kill.median_outage_ms, kill.max_outage_ms),
            (3, Some(490), Some(500))
        );
        let switchover = summary(Switchover);
        assert_eq!((switchover.count, switchover.recovered), (1, 0));
        assert_eq!(
            (switchover.median_outage_ms, switchover.max_outage_ms),
            (None, None)
        );
        // Listed in FaultKind::ALL order, only the kinds that occurred.
        let kinds: Vec<FaultKind> = report.kinds.iter().map(|k| k.kind).collect();
        assert_eq!(kinds, [KillDaemon, Partition, Switchover]);
        assert_eq!(report.unrecovered(), 1);
        assert!(
            report.is_safe(),
            "unrecovered faults are not a safety failure"
        );
    }

    #[test]
    fn dual_primary_intervals_follow_the_sample_rule() {
        // (case, samples (ms, member, accepted writes), expected (start, end, members, ended))
        type Case<'a> = (
            &'a str,
            Vec<(u64, &'a str, bool)>,
            Vec<(u64, u64, &'a [&'a str], bool)>,
        );
        let cases: Vec<Case> = vec![
            (
                "one writable member at a time: none",
                vec![
                    (0, "n1", true),
                    (0, "n2", false),
                    (100, "n1", false),
                    (150, "n2", true),
                ],
                vec![],
            ),
            (
                "two members writable for one sample only",
                vec![
                    (0, "n1", true),
                    (0, "n2", false),
                    (50, "n2", true),
                    (100, "n1", true),
                    (100, "n2", false),
                ],
                vec![(50, 100, &["n1", "n2"], true)],
            ),
            (
                "held until the next sample that shows at most one",
                vec![
                    (0, "n1", true),
                    (10, "n2", true),
                    (20, "n3", false),
                    (30, "n1", false),
                ],
                vec![(10, 30, &["n1", "n2"], true)],
            ),
            (
                "a member not yet sampled is not writable",
                vec![(0, "n1", true), (0, "n2", false), (50, "n3", false)],
                vec![],
            ),
            (
                "samples out of order in the file are sorted by time",
                vec![
                    (100, "n1", false),
                    (0, "n1", true),
                    (50, "n2", true),
                    (150, "n2", false),
                ],
                vec![(50, 100, &["n1", "n2"], true)],
            ),
            (
                "samples at the same instant apply together",
                vec![
                    (0, "n1", true),
                    (10, "n2", true),
                    (10, "n1", false),
                    (20, "n3", false),
                ],
                vec![],
            ),
            (
                "three members, handing over inside one interval",
                vec![
                    (0, "n1", true),
                    (10, "n2", true),
                    (20, "n1", false),
                    (20, "n3", true),
                    (30, "n2", false),
                    (40, "n3", false),
                ],
                vec![(10, 30, &["n1", "n2", "n3"], true)],
            ),
            (
                "two separate intervals",
                vec![
                    (0, "n1", true),
                    (10, "n2", true),
                    (20, "n2", false),
                    (30, "n2", true),
                    (45, "n2", false),
                ],
                vec![(10, 20, &["n1", "n2"], true), (30, 45, &["n1", "n2"], true)],
            ),
            (
                "still open when the samples run out",
                vec![(0, "n1", true), (10, "n2", true), (25, "n3", false)],
                vec![(10, 25, &["n1", "n2"], false)],
            ),
        ];
        for (case, samples, expected) in cases {
            let mut b = history();
            for (ms, member, accepts) in samples {
                b = b.sample(ms, member, accepts);
            }
            let got: Vec<(u64, u64, Vec<String>, bool)> =
                dual_primary_intervals(&b.build().samples)
                    .into_iter()
                    .map(|d| (d.start_ms, d.end_ms, d.members, d.ended))
                    .collect();
            let expected: Vec<(u64, u64, Vec<String>, bool)> = expected
                .into_iter()
                .map(|(s, e, m, ended)| (s, e, m.iter().map(|m| m.to_string()).collect(), ended))
                .collect();
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn two_writable_members_make_a_run_unsafe_and_are_totalled() {
        let h = history()
            .write(1, Acknowledged, 0, 5)
            .sample(0, "n1", true)
            .sample(50, "n2", true)
            .sample(80, "n2", false)
            .sample(200, "n3", true)
            .sample(260, "n3", false)
            .build();
        let report = check(&h, &read(1000, &[1])).unwrap();
        assert_eq!(report.dual_primary.len(), 2);
        assert_eq!(report.dual_primary_ms(), 30 + 60);
        assert!(report.lost.is_empty());
        assert!(!report.is_safe());
    }

    #[test]
    fn the_loss_window_runs_from_the_injection_to_the_last_write_a_fault_lost() {
        let h = history()
            .fault(Partition, "n1", 1000, 5000)
            .fault(Partition, "n2", 8000, 9000)
            .fault(KillDaemon, "n3", 10000, 10000)
            // Lost to the first partition: acknowledged at 1100 and 1400 (then fenced).
            .write_via(1, "direct n1", Acknowledged, 1050, 1100)
            .write_via(2, "direct n1", Acknowledged, 1350, 1400)
            // Durable during it: not part of the window.
            .write(3, Acknowledged, 1500, 3000)
            // Lost to the second partition, 300 ms in.
            .write_via(4, "direct n2", Acknowledged, 8200, 8300)
            .write(5, Acknowledged, 9000, 9100)
            .write(6, Acknowledged, 10000, 10100)
            .build();
        let report = check(&h, &read(20000, &[3, 5, 6])).unwrap();
        let windows: Vec<Option<u64>> = report.faults.iter().map(|f| f.loss_window_ms).collect();
        assert_eq!(windows, [Some(400), Some(300), None]);
        let partition = report.kinds.iter().find(|k| k.kind == Partition).unwrap();
        assert_eq!(
            (partition.lost, partition.max_loss_window_ms),
            (3, Some(400))
        );
        let kill = report.kinds.iter().find(|k| k.kind == KillDaemon).unwrap();
        assert_eq!((kill.lost, kill.max_loss_window_ms), (0, None));
    }

    #[test]
    fn render_prints_the_summary_table_and_the_details() {
        let h = history()
            .fault(KillDaemon, "n1", 1000, 1000)
            .fault(Partition, "n1", 2000, 6000)
            .write(1, Acknowledged, 1000, 1800)
            .write_via(2, "direct n1", Acknowledged, 2000, 2010)
            .write(3, Acknowledged, 2000, 5000)
            .write(4, Failed, 2100, 2200)
            .write(5, Unknown, 2300, 4300)
            .write(6, Unknown, 2400, 4400)
            // After the heal: the partition's outage is 2000 to 5000, then 5000 to 6100.
            .write(7, Acknowledged, 6000, 6100)
            .sample(0, "n1", true)
            .sample(3000, "n2", true)
            .sample(3040, "n1", false)
            .build();
        let report = check(&h, &read(7000, &[1, 3, 4, 5, 7])).unwrap();
        let expected = "\
final table: 5 rows, read on n2 at 7000 ms
writes: 7 (4 acknowledged, 1 failed, 2 unknown)

fault kind                 faults  recovered  outage median (ms)  outage max (ms)  lost  loss window max (ms)
kill daemon                     1          1                 800              800     0                     -
partition                       1          1                3000             3000     1                    10
all faults                      2          2                1900             3000     1                    10
outage: the longest time without a durable acknowledged write, from the fault's injection until writes flow again after its end
loss window: from the fault's injection to the acknowledgement of the last write it lost

acknowledged writes lost:            1 (0 outside any fault)
failed writes that reappeared:       1
unknown writes committed:            1 of 2
two writable members:                1 intervals, 40 ms
faults not recovered:                0 of 2
verdict: UNSAFE
  lost 2 through direct n1, acknowledged at 2010 ms during partition of n1 (2000-6000 ms)
  writable together: n1, n2 from 3000 to 3040 ms
";
        assert_eq!(report.render(), expected, "got:\n{}", report.render());
    }

    #[test]
    fn a_clean_run_renders_as_safe() {
        let h = history()
            .fault(PausePostgresShort, "n2", 100, 900)
            .write(1, Acknowledged, 100, 950)
            .write(2, Acknowledged, 950, 960)
            .sample(0, "n1", true)
            .build();
        let report = check(&h, &read(1000, &[1, 2])).unwrap();
        assert!(report.is_safe());
        let text = report.render();
        assert!(text.contains("pause postgres < ttl"), "{text}");
        assert!(
            text.contains("faults not recovered:                0 of 1"),
            "{text}"
        );
        assert!(
            text.contains("verdict: SAFE (no acknowledged write lost, never two writable members)"),
            "{text}"
        );
    }

    #[test]
    fn a_campaign_sized_history_is_checked() {
        // 200 faults over 100,000 writes: the campaign's scale. (No timed assertion: how long
        // the check takes is the campaign's own printed figure, not a pass/fail criterion.)
        let mut h = History::default();
        for i in 0..100_000i64 {
            let ms = i as u64 * 3;
            h.writes.push(Write {
                value: i,
                path: "VIP".to_string(),
                invoked_ms: ms,
                completed_ms: ms + 2,
                outcome: Acknowledged,
                error: None,
            });
        }
        for i in 0..200u64 {
            h.faults.push(Fault {
                kind: FaultKind::ALL[(i % 13) as usize],
                target: Some("n1".to_string()),
                start_ms: i * 1500,
                end_ms: i * 1500 + 700,
            });
        }
        let values: Vec<i64> = (0..100_000).filter(|v| v % 1000 != 0).collect();
        let report = check(&h, &read(400_000, &values)).unwrap();
        assert_eq!(report.lost.len(), 100);
        // Durable acks complete every 3 ms, 6 ms apart around a lost one.
        assert!(report
            .faults
            .iter()
            .all(|f| f.outage_ms.is_some_and(|ms| (2..=6).contains(&ms))));
    }
}
