//! A pgBackRest repository the test's members share (one directory, as an NFS mount would
//! be on real hosts), and what the tests read from it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use tempfile::TempDir;

use super::node::{assert_success, Node};
use super::wait::eventually;

/// The repository directory, owned by PostgreSQL's OS user when the tests run as root (the
/// members run pgbackrest as that user), inside a temp dir it can traverse.
pub struct Repo {
    dir: TempDir,
}

/// Whether Debian's pgbackrest is installed (a skip, or a failure in CI, if not).
pub fn require_pgbackrest() -> bool {
    super::needs(
        Path::new("/usr/bin/pgbackrest")
            .is_file()
            .then_some(())
            .ok_or_else(|| "pgbackrest is not installed (apt-get install pgbackrest)".into()),
    )
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("pgq-repo-")
            .tempdir()
            .expect("creating the repository's temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let repo = Repo { dir };
        std::fs::create_dir(repo.path()).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["postgres:postgres", &repo.path().to_string_lossy()])
                .status()
                .expect("running chown");
            assert!(status.success(), "chown of the repository to postgres");
        }
        repo
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Sets `[backup]` to this repository, with `extra` keys (`backup.<key>=<value>`),
    /// through `node`.
    pub fn set(&self, node: &Node, extra: &[&str]) {
        let repo_path = format!("backup.repo_path={}", self.path().display());
        let mut args = vec!["config", "set", &repo_path];
        args.extend_from_slice(extra);
        assert_success(&node.cli(&args), "config set backup.repo_path");
    }

    /// Waits until `primary` has created the stanza and checked archiving.
    pub fn wait_stanza(&self, primary: &Node, patience: Duration) {
        eventually(patience, "the primary creates the stanza", || {
            primary
                .log()
                .contains("pgBackRest stanza ready: WAL is archived")
                .then_some(())
                .ok_or("not yet")
        });
    }

    /// The stanza's WAL archive directory for its one database (`<stanza>/<major>-1`).
    fn archive(&self, stanza: &str) -> Option<PathBuf> {
        let base = self.path().join("archive").join(stanza);
        std::fs::read_dir(&base)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
    }

    /// Every file name in the stanza's archive (segments, `.partial` ones, histories).
    pub fn archived(&self, stanza: &str) -> Vec<String> {
        let Some(root) = self.archive(stanza) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        collect(&root, &mut names);
        names.sort();
        names
    }

    /// Deletes the archived files whose names start with `prefix` (a segment's name);
    /// returns how many.
    pub fn remove_archived(&self, stanza: &str, prefix: &str) -> usize {
        fn walk(dir: &Path, prefix: &str) -> usize {
            let mut removed = 0;
            for path in std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
            {
                if path.is_dir() {
                    removed += walk(&path, prefix);
                } else if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                {
                    std::fs::remove_file(&path).unwrap();
                    removed += 1;
                }
            }
            removed
        }
        self.archive(stanza).map_or(0, |root| walk(&root, prefix))
    }

    /// Whether the history file of `timeline` is archived.
    pub fn has_history(&self, stanza: &str, timeline: u32) -> bool {
        let name = format!("{timeline:08X}.history");
        self.archived(stanza).iter().any(|n| n == &name)
    }

    /// The segment number of WAL file `name` (16 MB segments).
    pub fn segment_of(name: &str) -> u64 {
        let log = u64::from_str_radix(&name[8..16], 16).unwrap();
        log * 256 + u64::from_str_radix(&name[16..24], 16).unwrap()
    }

    /// The segment numbers (16 MB segments) archived on any timeline, whole or partial.
    pub fn segments(&self, stanza: &str) -> BTreeSet<u64> {
        self.archived(stanza)
            .iter()
            .filter(|n| n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|n| {
                let log = u64::from_str_radix(&n[8..16], 16).unwrap();
                let seg = u64::from_str_radix(&n[16..24], 16).unwrap();
                log * 256 + seg
            })
            .collect()
    }

    /// The first missing segment between the lowest and the highest archived one, if any.
    pub fn gap(&self, stanza: &str) -> Option<u64> {
        self.gap_from(stanza, 0)
    }

    /// [`gap`](Self::gap) from segment `from` on: segments older than the stanza were
    /// archived by `:`, and a promoted member may push the few its pg_wal still held.
    pub fn gap_from(&self, stanza: &str, from: u64) -> Option<u64> {
        let segments: BTreeSet<u64> = self
            .segments(stanza)
            .into_iter()
            .filter(|s| *s >= from)
            .collect();
        let (first, last) = (*segments.first()?, *segments.last()?);
        (first..=last).find(|s| !segments.contains(s))
    }
}

fn collect(dir: &Path, names: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, names);
        } else if let Some(name) = path.file_name() {
            names.push(name.to_string_lossy().into_owned());
        }
    }
}
