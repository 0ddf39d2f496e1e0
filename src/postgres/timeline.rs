//! Choosing the timeline a promotion creates.
//!
//! At the end of recovery PostgreSQL names its new timeline one above the newest
//! `<TLI>.history` it finds in `pg_wal`, probing upwards from its recovery target (there is
//! no archive here). A primary that is promoted and cut off before anyone fetched its history
//! file leaves no trace on the others, so the next promotion elsewhere picks the same ID for
//! a different history. pg_rewind then sees one timeline where there are two, judges "no
//! rewind required" and the old primary replays foreign WAL over its own (seen in the fault
//! campaign: the replica then never became consistent).
//!
//! So the cluster state reserves every promotion's timeline (`Command::ReserveTimeline`),
//! and before promoting the holder fills the gap between what its `pg_wal` knows and the
//! reserved ID with placeholder history files, which PostgreSQL only tests for existence
//! when it picks the ID.
//!
//! The placeholders then stay on the new primary: a standby connecting to it fetches the
//! history file of *every* timeline between its own and the primary's, and gives up on one
//! the primary does not have. Below a real history file they are harmless, because
//! PostgreSQL looks for a newer timeline only upwards from the one it is on. A placeholder
//! with no real history file above it (a promotion that failed, a fetch cut short) could
//! become a recovery target, which PostgreSQL would refuse: those strays are removed after
//! every promotion attempt and before every start.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The first line of every placeholder; what tells one from a real history file.
pub const PLACEHOLDER: &str = "# pgquorum placeholder";

/// What a placeholder says, for whoever opens one.
pub fn placeholder_text() -> String {
    format!(
        "{PLACEHOLDER}: keeps PostgreSQL from promoting to a timeline ID below the one the \
         cluster reserved; standbys fetch it like any history file\n"
    )
}

/// The last switch a history file records: the parent timeline, the position where it
/// ended, and PostgreSQL's reason. Lines are `<parent TLI>\t<LSN>\t<reason>`; comments and
/// blank lines (and a placeholder) yield `None`.
pub fn last_switch(text: &str) -> Option<(u32, super::Lsn, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.splitn(3, char::is_whitespace);
            let parent = fields.next()?.parse().ok()?;
            let lsn = fields.next()?.trim().parse().ok()?;
            let reason = fields.next().unwrap_or("").trim().to_string();
            Some((parent, lsn, reason))
        })
        .next_back()
}

/// `pg_wal/<TLI>.history` for timeline `tli`.
pub fn history_path(pg_wal: &Path, tli: u32) -> PathBuf {
    pg_wal.join(format!("{tli:08X}.history"))
}

/// The timeline of a `pg_wal` file name, if it is a history file's.
pub fn history_timeline(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".history")?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// The lowest timeline a promotion of a data directory on timeline `current` with these
/// history files may create: one above every timeline it knows of. PostgreSQL itself would
/// pick exactly this when the files have no gap above `current`.
pub fn lowest_next(current: u32, histories: impl IntoIterator<Item = u32>) -> u32 {
    histories
        .into_iter()
        .fold(current, u32::max)
        .saturating_add(1)
}

/// The timelines between `current` and `reserved` (both excluded) without a history file:
/// the placeholders that make PostgreSQL's upward probe from any of them end at `reserved`.
pub fn missing_below(
    current: u32,
    reserved: u32,
    histories: impl IntoIterator<Item = u32>,
) -> Vec<u32> {
    let known: std::collections::BTreeSet<u32> = histories.into_iter().collect();
    (current.saturating_add(1)..reserved)
        .filter(|tli| !known.contains(tli))
        .collect()
}

/// The timelines of the history files in `pg_wal`, placeholders included.
pub fn histories(pg_wal: &Path) -> io::Result<Vec<u32>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(pg_wal)? {
        let entry = entry?;
        if let Some(tli) = entry.file_name().to_str().and_then(history_timeline) {
            found.push(tli);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Whether the history file at `path` is a placeholder.
pub fn is_placeholder(path: &Path) -> io::Result<bool> {
    let text = fs::read(path)?;
    Ok(text.starts_with(PLACEHOLDER.as_bytes()))
}

/// The placeholders among `files` (timeline, is a placeholder) that no real history file
/// covers: one is covered when a real history file of a higher timeline exists and every
/// timeline in between has a file too, so that PostgreSQL's upward search from any
/// timeline below passes it and ends on a real one.
pub fn strays(files: &[(u32, bool)]) -> Vec<u32> {
    let mut sorted = files.to_vec();
    sorted.sort_unstable();
    sorted.dedup_by_key(|(tli, _)| *tli);
    let mut strays = Vec::new();
    let mut covered = false;
    let mut above: Option<u32> = None;
    for &(tli, placeholder) in sorted.iter().rev() {
        if above != tli.checked_add(1) {
            covered = false;
        }
        if !placeholder {
            covered = true;
        } else if !covered {
            strays.push(tli);
        }
        above = Some(tli);
    }
    strays.sort_unstable();
    strays
}

/// Removes the stray placeholders (see [`strays`]) from `pg_wal`; returns their timelines.
/// A missing `pg_wal` (no data directory yet) has none.
pub fn remove_stray_placeholders(pg_wal: &Path) -> io::Result<Vec<u32>> {
    let tlis = match histories(pg_wal) {
        Ok(tlis) => tlis,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::with_capacity(tlis.len());
    for tli in tlis {
        files.push((tli, is_placeholder(&history_path(pg_wal, tli))?));
    }
    let strays = strays(&files);
    for tli in &strays {
        fs::remove_file(history_path(pg_wal, *tli))?;
    }
    Ok(strays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_switch_of_a_history_file_is_its_newest_line() {
        let text = "1\t0/3000060\tno recovery target specified\n\n\
                    2\t0/5000100\tno recovery target specified\n";
        assert_eq!(
            last_switch(text),
            Some((
                2,
                "0/5000100".parse().unwrap(),
                "no recovery target specified".into()
            ))
        );
        assert_eq!(last_switch(&placeholder_text()), None);
        assert_eq!(last_switch("garbage\n"), None);
    }

    #[test]
    fn history_file_names_parse_and_others_do_not() {
        for (name, want) in [
            ("00000001.history", Some(1)),
            ("0000000A.history", Some(10)),
            ("0000000a.history", Some(10)),
            ("000000010000000000000004", None),
            ("00000001.history.pgquorum-tmp-7-0", None),
            ("1.history", None),
            ("0000000G.history", None),
            ("archive_status", None),
        ] {
            assert_eq!(history_timeline(name), want, "{name}");
            if let Some(tli) = want {
                let path = history_path(Path::new("/w"), tli);
                let file = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(history_timeline(file), Some(tli), "{file}");
            }
        }
    }

    #[test]
    fn the_lowest_next_timeline_is_above_everything_known() {
        for (current, histories, want) in [
            (1, vec![], 2),
            (4, vec![2, 3, 4], 5),
            // A standby on 4 that fetched the history of 6 (not 5, another branch).
            (4, vec![2, 3, 4, 6], 7),
            (7, vec![2, 3], 8),
        ] {
            assert_eq!(
                lowest_next(current, histories.clone()),
                want,
                "{histories:?}"
            );
        }
    }

    #[test]
    fn placeholders_fill_exactly_the_gap_below_the_reservation() {
        for (current, reserved, histories, want) in [
            (4, 5, vec![2, 3, 4], vec![]),
            (4, 6, vec![2, 3, 4], vec![5]),
            (4, 9, vec![2, 3, 4, 6], vec![5, 7, 8]),
            (1, 2, vec![], vec![]),
            (5, 5, vec![], vec![]),
        ] {
            assert_eq!(
                missing_below(current, reserved, histories.clone()),
                want,
                "current {current}, reserved {reserved}, known {histories:?}"
            );
        }
    }

    #[test]
    fn a_placeholder_is_stray_unless_a_real_history_file_above_covers_it() {
        let (real, placeholder) = (false, true);
        for (files, want) in [
            // The new primary of timeline 5, promoted from 3 past a reserved 4: kept.
            (
                vec![(2, real), (3, real), (4, placeholder), (5, real)],
                vec![],
            ),
            // A promotion from 3 that failed after placing 4 and 5: both stray.
            (
                vec![(2, real), (3, real), (4, placeholder), (5, placeholder)],
                vec![4, 5],
            ),
            // A standby whose fetch stopped after the placeholder: stray until refetched.
            (vec![(3, real), (4, placeholder)], vec![4]),
            // A gap breaks the cover: 4 would end PostgreSQL's search from 3.
            (vec![(3, real), (4, placeholder), (6, real)], vec![4]),
            (
                vec![
                    (4, placeholder),
                    (5, placeholder),
                    (6, real),
                    (7, placeholder),
                ],
                vec![7],
            ),
            (vec![], vec![]),
            (vec![(2, real)], vec![]),
        ] {
            assert_eq!(strays(&files), want, "{files:?}");
        }
    }

    #[test]
    fn only_stray_placeholders_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path();
        let real = "1\t0/3000000\tno recovery target specified\n";
        fs::write(history_path(wal, 2), real).unwrap();
        fs::write(history_path(wal, 3), placeholder_text()).unwrap();
        fs::write(history_path(wal, 4), real).unwrap();
        fs::write(history_path(wal, 5), placeholder_text()).unwrap();
        fs::write(history_path(wal, 6), placeholder_text()).unwrap();
        fs::write(wal.join("000000020000000000000003"), b"segment").unwrap();
        assert_eq!(histories(wal).unwrap(), vec![2, 3, 4, 5, 6]);
        assert_eq!(remove_stray_placeholders(wal).unwrap(), vec![5, 6]);
        assert_eq!(histories(wal).unwrap(), vec![2, 3, 4]);
        assert!(is_placeholder(&history_path(wal, 3)).unwrap());
        assert!(wal.join("000000020000000000000003").exists());
        assert_eq!(remove_stray_placeholders(wal).unwrap(), Vec::<u32>::new());
        assert_eq!(
            remove_stray_placeholders(&wal.join("missing")).unwrap(),
            Vec::<u32>::new()
        );
    }
}
