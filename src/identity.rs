//! This node's identity on disk, in its state directory:
//!
//! ```text
//! <state_dir>/node.json      cluster id, node id, name, seed member, pending bootstrap
//! <state_dir>/ca.pem node.pem node.key ca.key   certificates (keys 0600)
//! <state_dir>/admin.token    bearer token for the admin REST endpoints (0600)
//! <state_dir>/replication.password   PostgreSQL replication role's password (0600)
//! <state_dir>/rewind.password        PostgreSQL rewind role's password (0600; absent in a
//!                                    cluster made before it had one: replication's serves)
//! <state_dir>/raft/          the sled Raft store
//! ```
//!
//! These are the daemon's files, owned by its OS user (`pgquorum` in the packages). The
//! state directory also holds PostgreSQL's (`pgdata/`, `run/`, `pgpass`, `postgresql.log`),
//! owned by PostgreSQL's OS user, which can enter the directory (0711) but not read the
//! daemon's secrets.
//!
//! `init` and `node join` create it; `run` reads it, so a restarted member needs no token.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cluster::JoinToken;
use crate::secret::Secret;

/// The file holding the PostgreSQL replication password.
pub const REPLICATION_PASSWORD_FILE: &str = "replication.password";

/// The file holding the PostgreSQL rewind role's password.
pub const REWIND_PASSWORD_FILE: &str = "rewind.password";

/// The daemon's secret files: 0600, its user's alone.
pub const SECRET_FILES: [&str; 5] = [
    "ca.key",
    "node.key",
    "admin.token",
    REPLICATION_PASSWORD_FILE,
    REWIND_PASSWORD_FILE,
];

/// The daemon's other files (a directory's contents included).
const DAEMON_FILES: [&str; 6] = [
    "node.json",
    "ca.pem",
    crate::ca_rotation::NEXT_CA_FILE,
    "node.pem",
    "raft",
    "failpoints",
];

/// What `node.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub cluster_id: String,
    pub node_id: u64,
    pub name: String,
    /// A member to ask for promotion to voter (the one that answered the join).
    pub seed: Option<Seed>,
    /// Set by `init` until the first run has recorded the cluster in Raft.
    pub bootstrap: Option<BootstrapPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seed {
    pub node_id: u64,
    pub peer_addr: String,
}

/// What the first run of the initial member proposes: the cluster and its first join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapPlan {
    pub token: JoinToken,
}

/// The state directory of one node.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.path.join("raft")
    }

    fn record_path(&self) -> PathBuf {
        self.path.join("node.json")
    }

    /// Whether a node was ever set up here.
    pub fn is_initialised(&self) -> bool {
        self.record_path().exists() || self.raft_dir().exists()
    }

    /// Refuses to set up a node over an existing one. Nothing is removed, ever: starting
    /// over is the operator's explicit choice.
    pub fn ensure_fresh(&self) -> anyhow::Result<()> {
        if self.is_initialised() {
            let who = self
                .load_record()
                .map(|r| {
                    format!(
                        " as node {} ({}) of cluster {}",
                        r.node_id, r.name, r.cluster_id
                    )
                })
                .unwrap_or_default();
            bail!(
                "state directory {} is already initialised{who}; start it with `pgquorum run`, \
                 or move the directory away to set up a new node",
                self.path.display()
            );
        }
        Ok(())
    }

    /// When run as root in a state directory that belongs to another user (the package
    /// makes `/var/lib/pgquorum` the `postgres` user's, and the unit runs the daemon as that
    /// user), hands every file in it to that user, so that `sudo pgquorum init` works as an
    /// operator expects. Returns the owner's uid when it did.
    pub fn hand_to_owner(&self) -> anyhow::Result<Option<u32>> {
        use std::os::unix::fs::MetadataExt;
        if !crate::postgres::process::is_root() {
            return Ok(None);
        }
        let meta =
            fs::metadata(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        if meta.uid() == 0 {
            return Ok(None);
        }
        let (uid, gid) = (meta.uid(), meta.gid());
        let mut pending = vec![self.path.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let path = entry?.path();
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("handing {} to uid {uid}", path.display()))?;
                if fs::symlink_metadata(&path)?.is_dir() {
                    pending.push(path);
                }
            }
        }
        Ok(Some(uid))
    }

    /// Makes the daemon's files its own user's, for a daemon that runs as its own user with
    /// CAP_CHOWN: the directory (mode 0711) and every file of [`SECRET_FILES`] and
    /// `DAEMON_FILES` (a directory with its contents) owned by another user are handed to
    /// it, and a secret that others could read is made 0600. This is the migration from the
    /// layout where the daemon ran as PostgreSQL's user, who owned all of it. PostgreSQL's
    /// own files are left alone. Returns what changed.
    pub fn claim(&self, uid: u32, gid: u32) -> anyhow::Result<Vec<PathBuf>> {
        use std::os::unix::fs::MetadataExt;
        let mut changed = Vec::new();
        let take = |path: &Path, changed: &mut Vec<PathBuf>| -> anyhow::Result<()> {
            let meta = fs::symlink_metadata(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.uid() != uid || meta.gid() != gid {
                std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                    .with_context(|| format!("handing {} to uid {uid}", path.display()))?;
                changed.push(path.to_path_buf());
            }
            Ok(())
        };
        let before =
            fs::metadata(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        take(&self.path, &mut changed)?;
        if !changed.is_empty() && before.mode() & 0o7777 != 0o711 {
            fs::set_permissions(&self.path, fs::Permissions::from_mode(0o711))
                .with_context(|| format!("setting permissions of {}", self.path.display()))?;
        }
        for name in SECRET_FILES.iter().chain(&DAEMON_FILES) {
            let mut pending = vec![self.path.join(name)];
            while let Some(path) = pending.pop() {
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                take(&path, &mut changed)?;
                if meta.is_dir() {
                    for entry in fs::read_dir(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                    {
                        pending.push(entry?.path());
                    }
                }
            }
        }
        for name in SECRET_FILES {
            let path = self.path.join(name);
            if let Ok(meta) = fs::metadata(&path) {
                if meta.mode() & 0o077 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("setting permissions of {}", path.display()))?;
                    if !changed.contains(&path) {
                        changed.push(path);
                    }
                }
            }
        }
        Ok(changed)
    }

    /// The secrets of [`SECRET_FILES`] that OS user `uid` (PostgreSQL's) could read: its
    /// own, or readable by group or others.
    pub fn exposed_secrets(&self, uid: u32) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        SECRET_FILES
            .iter()
            .map(|name| self.path.join(name))
            .filter(|path| {
                fs::metadata(path).is_ok_and(|m| m.uid() == uid || m.mode() & 0o044 != 0)
            })
            .collect()
    }

    /// Creates the directory: 0711, so PostgreSQL's OS user can reach the data and socket
    /// directories inside it without listing it; every secret in it is a 0600 file.
    pub fn create(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.path)
            .with_context(|| format!("creating state directory {}", self.path.display()))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting permissions of {}", self.path.display()))?;
        Ok(())
    }

    pub fn load_record(&self) -> anyhow::Result<NodeRecord> {
        let path = self.record_path();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: this node is not set up; run `pgquorum init` on the first host or \
                 `pgquorum node join <peer> --token <token>` on the others",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save_record(&self, record: &NodeRecord) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(record).expect("record serializes");
        write_atomic(&self.record_path(), text.as_bytes(), 0o644)
    }

    pub fn save_secret(&self, file: &str, secret: &str) -> anyhow::Result<()> {
        write_atomic(&self.path.join(file), secret.as_bytes(), 0o600)
    }

    pub fn load_secret(&self, file: &str) -> anyhow::Result<Secret<String>> {
        let path = self.path.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Secret::new(text.trim().to_string()))
    }

    pub fn admin_token(&self) -> anyhow::Result<Secret<String>> {
        self.load_secret("admin.token")
    }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a crash leaves
/// either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

/// A random lowercase alphanumeric string of `len` characters.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
