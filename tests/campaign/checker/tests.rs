//! The checker on hand-made histories: each write classified against the final table,
//! losses attributed to faults, outages and the per-kind summary.

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
        let got: Vec<(u64, u64, Vec<String>, bool)> = dual_primary_intervals(&b.build().samples)
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
