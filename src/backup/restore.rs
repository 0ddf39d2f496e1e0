//! Whether a restore target is within what the repository can restore, and which backup
//! to restore it from: pure, on `pgbackrest info --output=json` for the stanza.

use crate::cluster::RestoreTarget;
use crate::postgres::Lsn;

/// One backup as `pgbackrest info` lists it.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    label: String,
    stop_unix: u64,
    stop_lsn: Option<Lsn>,
}

fn listed(info: &serde_json::Value) -> Vec<Listed> {
    let mut all: Vec<Listed> = (info["backup"].as_array().into_iter().flatten())
        .filter_map(|b| {
            Some(Listed {
                label: b["label"].as_str()?.to_string(),
                stop_unix: b.pointer("/timestamp/stop")?.as_u64()?,
                stop_lsn: b
                    .pointer("/lsn/stop")
                    .and_then(|l| l.as_str()?.parse().ok()),
            })
        })
        .collect();
    all.sort_by_key(|b| b.stop_unix);
    all
}

/// Checks `target` against the repository's backups (`info`) at `now_unix`, given the
/// WAL position of the writable primary if there is one (its WAL is archived before it
/// stops for the restore, so everything it wrote can be reached). Returns the backup to
/// restore from when pgBackRest would not choose the right one itself (`None`: its own
/// choice), or why the target is refused, naming the range and the fix.
pub fn check_target(
    target: &RestoreTarget,
    info: &serde_json::Value,
    now_unix: f64,
    primary_position: Option<Lsn>,
) -> Result<Option<String>, String> {
    let backups = listed(info);
    let Some(oldest) = backups.first() else {
        return Err(
            "the repository has no backup to restore from; take one with \
                    `pgquorum backup` (and `pgquorum backup list` shows them)"
                .to_string(),
        );
    };
    match target {
        RestoreTarget::Latest | RestoreTarget::Name(_) => Ok(None),
        RestoreTarget::Time(text) => {
            let oldest_time = rfc3339(oldest.stop_unix);
            let at = target
                .unix_seconds()
                .ok_or_else(|| format!("bad time {text}"))?;
            // pgBackRest picks a backup that ended before the target's whole second.
            let earliest = oldest.stop_unix + 1;
            if at < earliest as f64 {
                return Err(format!(
                    "{text} is before the end of the oldest backup ({}, ended {oldest_time}): \
                     nothing earlier can be restored; choose a time from {} on",
                    oldest.label,
                    rfc3339(earliest)
                ));
            }
            if at > now_unix {
                return Err(format!(
                    "{text} is in the future: WAL after now is not archived yet; choose a \
                     time before now, or latest"
                ));
            }
            Ok(None)
        }
        RestoreTarget::Lsn(text) => {
            let lsn: Lsn = text
                .parse()
                .map_err(|_| format!("bad WAL position {text}"))?;
            let Some(set) = backups
                .iter()
                .rev()
                .find(|b| b.stop_lsn.is_some_and(|stop| stop <= lsn))
            else {
                let stop = oldest.stop_lsn.map_or("?".to_string(), |l| l.to_string());
                return Err(format!(
                    "WAL position {text} is before the end of the oldest backup ({}, ended at \
                     {stop}): nothing earlier can be restored; choose a position from {stop} on",
                    oldest.label
                ));
            };
            if let Some(end) = primary_position.filter(|end| lsn > *end) {
                return Err(format!(
                    "WAL position {text} is after the last WAL the primary wrote ({end}); \
                     choose a position up to {end}, or latest"
                ));
            }
            Ok(Some(set.label.clone()))
        }
    }
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> serde_json::Value {
        serde_json::json!({"backup": [
            {"label": "20261207-100000F", "timestamp": {"start": 1_796_637_590, "stop": 1_796_637_600},
             "lsn": {"start": "0/2000028", "stop": "0/2000100"}},
            {"label": "20261207-110000F", "timestamp": {"start": 1_796_641_190, "stop": 1_796_641_200},
             "lsn": {"start": "0/9000028", "stop": "0/9000100"}},
        ]})
    }

    /// The backup to restore from, or words of the refusal.
    type Want = Result<Option<&'static str>, &'static str>;

    fn time(unix: u64) -> RestoreTarget {
        RestoreTarget::parse(&rfc3339(unix)).unwrap()
    }

    #[test]
    fn a_target_outside_the_repository_is_refused_with_the_range() {
        let now = 1_796_650_000.0;
        let end = Some("0/C000000".parse().unwrap());
        let lsn = |t: &str| RestoreTarget::Lsn(t.into());
        let cases: [(RestoreTarget, Option<Lsn>, Want); 10] = [
            (RestoreTarget::Latest, end, Ok(None)),
            (RestoreTarget::Name("before-upgrade".into()), None, Ok(None)),
            (time(1_796_640_000), end, Ok(None)),
            (
                time(1_796_637_000),
                end,
                Err("is before the end of the oldest backup (20261207-100000F, ended 2026-12-07T"),
            ),
            (
                time(1_796_637_600),
                end,
                Err("choose a time from 2026-12-07T"),
            ),
            (time(1_796_637_601), end, Ok(None)),
            (time(1_796_660_000), end, Err("is in the future")),
            (lsn("0/5000000"), end, Ok(Some("20261207-100000F"))),
            (
                lsn("0/1000000"),
                end,
                Err("choose a position from 0/2000100 on"),
            ),
            (
                lsn("0/D000000"),
                end,
                Err("after the last WAL the primary wrote (0/C000000)"),
            ),
        ];
        for (target, end, want) in cases {
            let got = check_target(&target, &info(), now, end);
            match (&got, want) {
                (Ok(set), Ok(want)) => assert_eq!(set.as_deref(), want, "{target}"),
                (Err(message), Err(want)) => assert!(message.contains(want), "{target}: {message}"),
                _ => panic!("{target}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_repository_without_backups_restores_nothing() {
        let got = check_target(
            &RestoreTarget::Latest,
            &serde_json::json!({"backup": []}),
            0.0,
            None,
        );
        assert!(got.unwrap_err().contains("take one with `pgquorum backup`"));
    }

    #[test]
    fn targets_are_read_as_operators_write_them() {
        let ok = [
            ("latest", RestoreTarget::Latest),
            ("LATEST", RestoreTarget::Latest),
            ("16/b374d848", RestoreTarget::Lsn("16/B374D848".into())),
            (
                "name:before-upgrade",
                RestoreTarget::Name("before-upgrade".into()),
            ),
            (
                "2026-12-07 14:30:00+00",
                RestoreTarget::Time("2026-12-07 14:30:00+00:00".into()),
            ),
            (
                "2026-12-07 14:30:00.25+01:00",
                RestoreTarget::Time("2026-12-07 14:30:00.250+01:00".into()),
            ),
            (
                "2026-12-07T14:30:00Z",
                RestoreTarget::Time("2026-12-07 14:30:00+00:00".into()),
            ),
            (
                "2026-12-07 14:30:00 UTC",
                RestoreTarget::Time("2026-12-07 14:30:00+00:00".into()),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(RestoreTarget::parse(text), Ok(want), "{text}");
        }
        for bad in [
            "yesterday",
            "2026-12-07 14:30:00",
            "16/xyz",
            "name:",
            "before-upgrade",
        ] {
            let err = RestoreTarget::parse(bad).unwrap_err();
            assert!(
                err.contains("latest") || err.contains("name"),
                "{bad}: {err}"
            );
        }
    }
}
