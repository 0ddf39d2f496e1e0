//! The history file: records round-trip, load in order, and bad lines are named.

use super::*;

fn sample_history() -> History {
    History {
        meta: Some(Meta {
            seed: 7,
            description: "quorum mode, 50 ms one way".to_string(),
        }),
        writes: vec![
            Write {
                value: 1,
                path: "writer port of n2".to_string(),
                invoked_ms: 10,
                completed_ms: 14,
                outcome: Outcome::Acknowledged,
                error: None,
            },
            Write {
                value: 2,
                path: "VIP".to_string(),
                invoked_ms: 11,
                completed_ms: 2011,
                outcome: Outcome::Unknown,
                error: Some("timeout after COMMIT".to_string()),
            },
            Write {
                value: -3,
                path: "direct n1".to_string(),
                invoked_ms: 12,
                completed_ms: 13,
                outcome: Outcome::Failed,
                error: Some("connection refused".to_string()),
            },
        ],
        faults: vec![
            Fault {
                kind: FaultKind::Partition,
                target: Some("n1".to_string()),
                start_ms: 500,
                end_ms: 9500,
            },
            Fault {
                kind: FaultKind::RollingRestart,
                target: None,
                start_ms: 10_000,
                end_ms: 11_000,
            },
        ],
        samples: vec![
            Sample {
                ms: 520,
                member: "n1".to_string(),
                accepted_writes: true,
            },
            Sample {
                ms: 521,
                member: "n2".to_string(),
                accepted_writes: false,
            },
        ],
        final_read: Some(FinalRead {
            ms: 12_000,
            member: "n2".to_string(),
            values: vec![1, 2],
        }),
    }
}

#[test]
fn a_history_survives_a_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let history = sample_history();
    history.save(&path).unwrap();
    assert_eq!(History::load(&path).unwrap(), history);
    // Every kind has a variant in the sample, so every kind of line was exercised.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1 + 3 + 2 + 2 + 1, "{text}");
}

#[test]
fn every_fault_kind_round_trips_by_its_snake_case_name() {
    for kind in FaultKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert!(json
            .chars()
            .all(|c| c == '"' || c == '_' || c.is_ascii_lowercase()));
        assert_eq!(serde_json::from_str::<FaultKind>(&json).unwrap(), kind);
    }
}

#[test]
fn each_line_is_one_object_tagged_with_its_type() {
    let mut out = Vec::new();
    sample_history().write_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let types: Vec<String> = text
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["type"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        types,
        [
            "campaign",
            "write",
            "write",
            "write",
            "fault",
            "fault",
            "sample",
            "sample",
            "final_read"
        ]
    );
    let first_write = text.lines().nth(1).unwrap();
    assert_eq!(
        first_write,
        r#"{"type":"write","value":1,"path":"writer port of n2","invoked_ms":10,"completed_ms":14,"outcome":"acknowledged"}"#
    );
}

#[test]
fn records_appended_as_they_happen_load_into_their_groups_in_order() {
    let history = sample_history();
    // Interleaved the way a running campaign would write them.
    let lines = [
        Record::Campaign(history.meta.clone().unwrap()),
        Record::Write(history.writes[0].clone()),
        Record::Sample(history.samples[0].clone()),
        Record::Write(history.writes[1].clone()),
        Record::Fault(history.faults[0].clone()),
        Record::Sample(history.samples[1].clone()),
        Record::Write(history.writes[2].clone()),
        Record::Fault(history.faults[1].clone()),
        Record::FinalRead(history.final_read.clone().unwrap()),
    ];
    let text: String = lines.iter().map(|r| r.to_line() + "\n\n").collect();
    let loaded = History::read_from(text.as_bytes(), "appended").unwrap();
    assert_eq!(loaded, history);
}

#[test]
fn a_bad_line_is_named_by_its_number_and_content() {
    let campaign = Record::Campaign(sample_history().meta.unwrap()).to_line();
    let final_read = Record::FinalRead(sample_history().final_read.unwrap()).to_line();
    let good = Record::Sample(sample_history().samples[0].clone()).to_line();
    // (case, the bad line, what the error must say)
    let cases = [
        ("not JSON", "{\"type\":\"write\",".to_string(), "EOF"),
        (
            "unknown type",
            r#"{"type":"nemesis","ms":1}"#.to_string(),
            "unknown variant `nemesis`",
        ),
        (
            "unknown field",
            r#"{"type":"sample","ms":1,"member":"n1","accepted_writes":true,"lag":0}"#
                .to_string(),
            "unknown field `lag`",
        ),
        (
            "missing field",
            r#"{"type":"sample","ms":1,"member":"n1"}"#.to_string(),
            "missing field `accepted_writes`",
        ),
        (
            "unknown outcome",
            r#"{"type":"write","value":1,"path":"VIP","invoked_ms":1,"completed_ms":2,"outcome":"maybe"}"#
                .to_string(),
            "unknown variant `maybe`",
        ),
        (
            "negative time",
            r#"{"type":"sample","ms":-1,"member":"n1","accepted_writes":true}"#.to_string(),
            "invalid value",
        ),
        (
            "second final read",
            final_read.clone(),
            "a second `final_read` record; a history has at most one",
        ),
        (
            "second campaign",
            campaign.clone(),
            "a second `campaign` record",
        ),
    ];
    for (case, bad, needle) in cases {
        let text = format!("{campaign}\n{final_read}\n{bad}\n{good}\n");
        let error = History::read_from(text.as_bytes(), "h.jsonl").unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("h.jsonl:3: "), "{case}: {message}");
        assert!(message.contains(needle), "{case}: {message}");
    }
}

#[test]
fn loading_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.jsonl");
    let message = History::load(&path).unwrap_err().to_string();
    assert!(message.contains("nope.jsonl"), "{message}");
    assert!(
        message.starts_with("reading the history from "),
        "{message}"
    );
}

#[test]
fn the_clock_counts_milliseconds_from_its_start_and_never_below_zero() {
    let clock = Clock::start();
    if let Some(before) = clock.started.checked_sub(std::time::Duration::from_secs(1)) {
        assert_eq!(clock.ms_at(before), 0);
    }
    let later = clock.started + std::time::Duration::from_micros(2_999_999);
    assert_eq!(clock.ms_at(later), 2999);
    assert!(clock.now_ms() < 60_000);
}
