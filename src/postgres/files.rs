//! Files the daemon writes for PostgreSQL: atomically, and owned by PostgreSQL's OS user
//! when that is not the daemon's.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Error, Postgres};

impl Postgres {
    /// Writes `bytes` to `path` atomically (temporary file, fsync, rename), mode 0600 and
    /// owned by the OS user, creating missing parent directories. Each call has its own
    /// temporary file: tasks that write the same file at once (the HA loop and the backup
    /// agent both write `pgbackrest.conf`) must not rename each other's away.
    pub(super) fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let action = || format!("writing {}", path.display());
        if let Some(parent) = path.parent() {
            self.create_dir(parent, None)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        tmp.push(format!(".pgquorum-tmp-{}-{n}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            self.chown(&tmp)?;
            fs::rename(&tmp, path)
        })();
        result.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            Error::Io {
                action: action(),
                source,
            }
        })
    }

    /// Creates `dir` and its missing parents. Directories created here, and `dir` itself
    /// when `mode` is given, are owned by the OS user; `mode` is applied to `dir`.
    pub(super) fn create_dir(&self, dir: &Path, mode: Option<u32>) -> Result<(), Error> {
        let action = || format!("creating {}", dir.display());
        let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: action(),
            source,
        })?;
        for created in &missing {
            self.chown(created).map_err(|source| Error::Io {
                action: action(),
                source,
            })?;
        }
        if let Some(mode) = mode {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                .and_then(|()| self.chown(dir))
                .map_err(|source| Error::Io {
                    action: action(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Gives `path` to the OS user when PostgreSQL runs as another user; a no-op otherwise.
    pub(super) fn chown(&self, path: &Path) -> io::Result<()> {
        match &self.account {
            Some(a) => std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)),
            None => Ok(()),
        }
    }
}
