//! The data directory: what is there, and making one with `initdb` or `pg_basebackup`.
//!
//! Both build the new cluster in a work directory next to `data_dir` and rename it into
//! place only when complete, so a failed (or cancelled) attempt leaves `data_dir` as it was:
//! the next attempt removes the leftover work directory. When `data_dir` is an empty mount
//! point, renaming onto it is impossible; the cluster is then built in place and its
//! contents removed on failure (it was empty before, so everything in it is ours).

use std::fs;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{io_error, DataDir, Error, Postgres, Role, Upstream};

impl Postgres {
    /// What `data_dir` holds: [`DataDir::Missing`] if absent or empty;
    /// [`DataDir::Initialised`] if `pg_controldata` reads a system identifier from it;
    /// [`DataDir::Foreign`] otherwise (including unreadable). Blocks for the few
    /// milliseconds `pg_controldata` takes.
    pub fn data_dir_state(&self) -> DataDir {
        let dir = &self.settings.data_dir;
        match fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DataDir::Missing,
            Err(_) => return DataDir::Foreign,
            Ok(mut entries) => {
                if entries.next().is_none() {
                    return DataDir::Missing;
                }
            }
        }
        if !dir.join("PG_VERSION").is_file() {
            return DataDir::Foreign;
        }
        let mut cmd = self.command("pg_controldata");
        cmd.arg("-D").arg(dir);
        match cmd.output() {
            Ok(out) if out.status.success() => {
                match parse_system_id(&String::from_utf8_lossy(&out.stdout)) {
                    Some(system_id) => DataDir::Initialised { system_id },
                    None => DataDir::Foreign,
                }
            }
            Ok(out) => {
                tracing::debug!(status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr), "pg_controldata failed");
                DataDir::Foreign
            }
            Err(e) => {
                tracing::warn!(error = %e, "running pg_controldata");
                DataDir::Foreign
            }
        }
    }

    /// Creates a new cluster with `initdb` (data checksums, superuser `postgres`, local
    /// trust, SCRAM over TCP, UTF8) as the OS user, then writes the primary configuration
    /// and `pg_hba.conf`. Fails with [`Error::DataDirNotMissing`] unless `data_dir` is
    /// missing or empty.
    pub async fn initdb(&self) -> Result<(), Error> {
        self.populate("initialising a cluster", |work| async move {
            self.run(
                "initdb",
                &[
                    "-D".as_ref(),
                    work.as_os_str(),
                    "--data-checksums".as_ref(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    "--auth-local=trust".as_ref(),
                    "--auth-host=scram-sha-256".as_ref(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                ],
                &[],
            )
            .await?;
            self.write_config_in(
                &work,
                &Role::Primary {
                    synchronous_standby_names: None,
                },
            )?;
            Ok(())
        })
        .await?;
        tracing::info!(data_dir = %self.settings.data_dir.display(), "initialised a new cluster");
        Ok(())
    }

    /// Clones `from` with `pg_basebackup` (WAL streamed, fast checkpoint, through the slot
    /// `from.slot`, which must exist on the upstream) as the replication user, reading the
    /// password from the passfile: it never appears on a command line. Fails with
    /// [`Error::DataDirNotMissing`] unless `data_dir` is missing or empty. The clone gets
    /// `standby.signal` before it is moved into place, so that it is never taken for a
    /// directory last used by a primary (which would be rewound before following anyone),
    /// not even after a crash before the first start. The rest of the replica
    /// configuration is [`write_config`](Self::write_config)'s.
    pub async fn basebackup(&self, from: &Upstream) -> Result<(), Error> {
        self.populate("cloning with pg_basebackup", |work| async move {
            let port = from.port.to_string();
            self.run(
                "pg_basebackup",
                &[
                    "-D".as_ref(),
                    work.as_os_str(),
                    "-h".as_ref(),
                    from.host.as_ref(),
                    "-p".as_ref(),
                    port.as_ref(),
                    "-U".as_ref(),
                    self.creds.user.as_ref(),
                    "-S".as_ref(),
                    from.slot.as_ref(),
                    "-X".as_ref(),
                    "stream".as_ref(),
                    "-c".as_ref(),
                    "fast".as_ref(),
                    "--no-password".as_ref(),
                ],
                &self.client_env(),
            )
            .await?;
            self.write_file(&work.join("standby.signal"), b"")
        })
        .await?;
        tracing::info!(data_dir = %self.settings.data_dir.display(), host = %from.host, port = from.port, "cloned the cluster");
        Ok(())
    }

    /// Builds a cluster with `fill(work_dir)` and moves it into `data_dir` (module doc).
    pub(super) async fn populate<F, Fut>(&self, action: &'static str, fill: F) -> Result<(), Error>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let data_dir = &self.settings.data_dir;
        let state = self.data_dir_state();
        if state != DataDir::Missing {
            return Err(Error::DataDirNotMissing {
                action,
                data_dir: data_dir.clone(),
                state,
            });
        }
        let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) else {
            return Err(Error::NoDataDir {
                action,
                data_dir: data_dir.clone(),
            });
        };
        self.create_dir(parent, None)?;
        let in_place = data_dir.exists() && is_mount_point(data_dir);
        let work = if in_place {
            data_dir.clone()
        } else {
            let mut hidden = std::ffi::OsString::from(".");
            hidden.push(name);
            hidden.push(".pgquorum-new");
            let work = parent.join(hidden);
            if work.exists() {
                tracing::info!(dir = %work.display(), "removing the leftover of an earlier attempt");
                fs::remove_dir_all(&work)
                    .map_err(io_error(format!("removing {}", work.display())))?;
            }
            work
        };
        self.create_dir(&work, Some(0o700))?;
        let mut guard = Cleanup {
            work: work.clone(),
            in_place,
            armed: true,
        };
        fill(work.clone()).await?;
        if !in_place {
            // rename(2) replaces an empty directory, so an existing empty data_dir is fine.
            fs::rename(&work, data_dir).map_err(io_error(format!(
                "moving {} to {}",
                work.display(),
                data_dir.display()
            )))?;
            if let Ok(dir) = fs::File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        guard.armed = false;
        Ok(())
    }
}

/// Removes what a failed or cancelled [`Postgres::populate`] wrote.
struct Cleanup {
    work: PathBuf,
    in_place: bool,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let result = if self.in_place {
            empty_dir(&self.work)
        } else {
            fs::remove_dir_all(&self.work)
        };
        if let Err(e) = result {
            tracing::warn!(dir = %self.work.display(), error = %e, "removing a failed attempt");
        }
    }
}

fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Whether `dir` is on another filesystem than its parent.
fn is_mount_point(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (fs::metadata(dir), fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

/// The system identifier in `pg_controldata` output (run with `LC_ALL=C`).
fn parse_system_id(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("Database system identifier:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn system_identifier_is_read_from_pg_controldata() {
        let out = "pg_control version number:            1300\n\
                   Catalog version number:               202209061\n\
                   Database system identifier:           7312345678901234567\n\
                   Database cluster state:               in production\n";
        assert_eq!(super::parse_system_id(out), Some(7312345678901234567));
        assert_eq!(super::parse_system_id("garbage"), None);
    }
}
