//! The `[backup]` section of the dynamic configuration: one pgBackRest repository for the
//! whole cluster, where every member archives WAL and whence backups, replicas and restores
//! come. pgquorum writes each member's `pgbackrest.conf` from it (`postgres::Backrest`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a repository lives, pgBackRest's `repo1-type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    /// A directory every member mounts at the same path (NFS, say).
    #[default]
    Posix,
    S3,
    Azure,
    Gcs,
    Cifs,
}

impl RepoType {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoType::Posix => "posix",
            RepoType::S3 => "s3",
            RepoType::Azure => "azure",
            RepoType::Gcs => "gcs",
            RepoType::Cifs => "cifs",
        }
    }
}

/// The cluster's backups (`pgquorum config set backup.repo_path=/mnt/pgbackrest`). Unknown
/// keys are an error, so a misspelt one is refused rather than ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// pgBackRest's name for this cluster in the repository.
    pub stanza: String,
    pub repo_type: RepoType,
    /// `repo1-path`: the directory (posix, cifs) or the path inside the bucket.
    pub repo_path: String,
    /// Further `repo1-*` options passed through as written, without the `repo1-` prefix:
    /// `{"s3-bucket" = "db", "s3-endpoint" = "s3.eu-west-1.amazonaws.com", ...}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub repo_options: BTreeMap<String, String>,
    /// Full backups kept (`repo1-retention-full`); older ones and the WAL only they need
    /// are expired after each backup.
    pub retention_full: u32,
    /// Differential backups kept (`repo1-retention-diff`); `None`: pgBackRest's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_diff: Option<u32>,
    /// `compress-type`: none, gz, bz2, lz4 or zst.
    pub compress_type: String,
    /// Parallel processes for backups, restores and asynchronous archiving.
    pub process_max: u32,
    /// The schedule: a full backup when the newest is older than this (`None`: only on
    /// demand), and so for differential and incremental ones.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub full_every: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub diff_every: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub incr_every: Option<Duration>,
    /// Take backups on a streaming replica when there is one (pgBackRest's
    /// `backup-standby`), sparing the primary; it reaches the primary through the
    /// pgBackRest TLS server every member runs (`[postgresql] backrest_port`). Needs TLS.
    pub from_standby: bool,
    /// New members and `reinit` restore the newest backup from the repository and then
    /// stream (faster than `pg_basebackup` for a large database); when that fails they
    /// clone with `pg_basebackup` after all.
    pub create_replica_from_backup: bool,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            stanza: "pgquorum".into(),
            repo_type: RepoType::Posix,
            repo_path: String::new(),
            repo_options: BTreeMap::new(),
            retention_full: 2,
            retention_diff: None,
            compress_type: "lz4".into(),
            process_max: 2,
            full_every: None,
            diff_every: None,
            incr_every: None,
            from_standby: true,
            create_replica_from_backup: false,
        }
    }
}

/// PostgreSQL parameters `[backup]` sets itself: refused in `postgresql_parameters` while it
/// is configured.
pub const BACKUP_PARAMETERS: &[&str] = &["archive_mode", "archive_command", "restore_command"];

/// `repo1-*` options pgquorum writes from the typed keys, or that would move the repository
/// out from under them: not accepted in `repo_options`.
const TYPED_REPO_OPTIONS: &[&str] = &[
    "type",
    "path",
    "retention-full",
    "retention-full-type",
    "retention-diff",
    "host",
];

const COMPRESS_TYPES: [&str; 5] = ["none", "gz", "bz2", "lz4", "zst"];

impl BackupConfig {
    /// The first violation, as a message naming the key, its value and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
        };
        if !name_ok(&self.stanza) {
            return Err(format!(
                "backup.stanza {:?} is not a stanza name; use lowercase ascii letters, digits, \
                 '_' and '-' (for example \"main\")",
                self.stanza
            ));
        }
        if self.repo_path.is_empty() {
            return Err(
                "backup.repo_path is missing: name the repository, for example \
                        backup.repo_path=/mnt/pgbackrest (a directory every member mounts)"
                    .into(),
            );
        }
        if !self.repo_path.starts_with('/') || !plain(&self.repo_path) {
            return Err(format!(
                "backup.repo_path {:?} must be an absolute path without spaces, quotes or \
                 control characters, for example /mnt/pgbackrest",
                self.repo_path
            ));
        }
        if self.retention_full == 0 {
            return Err(
                "backup.retention_full (0) must be at least 1: with no full backup \
                        kept there is nothing to restore from"
                    .into(),
            );
        }
        if self.retention_diff == Some(0) {
            return Err("backup.retention_diff (0) must be at least 1, or left out".into());
        }
        if !COMPRESS_TYPES.contains(&self.compress_type.as_str()) {
            return Err(format!(
                "backup.compress_type {:?} is not one of {}",
                self.compress_type,
                COMPRESS_TYPES.join(", ")
            ));
        }
        if !(1..=64).contains(&self.process_max) {
            return Err(format!(
                "backup.process_max ({}) must be between 1 and 64",
                self.process_max
            ));
        }
        for (what, every) in [
            ("full_every", self.full_every),
            ("diff_every", self.diff_every),
            ("incr_every", self.incr_every),
        ] {
            if every.is_some_and(|d| d < Duration::from_secs(60)) {
                return Err(format!(
                    "backup.{what} must be at least 1m: a backup cannot be taken more often \
                     than it takes to run; raise it or leave it out"
                ));
            }
        }
        for (key, value) in &self.repo_options {
            let key_ok = name_ok(key) && !key.contains('_');
            if !key_ok {
                return Err(format!(
                    "backup.repo_options key {key:?} is not a pgBackRest repository option; \
                     write it as pgBackRest does without the repo1- prefix, for example \
                     \"s3-bucket\""
                ));
            }
            if key.starts_with("repo") || TYPED_REPO_OPTIONS.contains(&key.as_str()) {
                return Err(format!(
                    "backup.repo_options key {key:?} is set by pgquorum from backup.repo_type, \
                     repo_path and retention_*; set those instead"
                ));
            }
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(format!(
                    "backup.repo_options value of {key:?} is empty or holds a newline or \
                     another control character; give one plain value"
                ));
            }
        }
        Ok(())
    }
}

/// Safe to put, unquoted, in pgbackrest.conf and in a shell command line.
fn plain(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.' | ':' | '+' | '@' | ',')
    })
}
