//! PostgreSQL's TLS files (its server certificate and key from the cluster CA, and the CA
//! its clients verify against), and what a client of another member's PostgreSQL needs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{Error, Postgres};

/// Where PostgreSQL's TLS files are (written by [`Postgres::install_tls`], owned by
/// `os_user`): its server certificate and key, and the cluster CA that replicas,
/// `pg_basebackup` and `pg_rewind` verify the server against (`sslmode=verify-full`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files in directory `dir`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            ca: dir.join("ca.crt"),
        }
    }

    /// What libpq needs to verify the server: `sslmode=verify-full` against the CA, as
    /// environment variables for `pg_basebackup` and `pg_rewind`.
    fn client_env(&self) -> [(&'static str, &OsStr); 2] {
        [
            ("PGSSLMODE", OsStr::new("verify-full")),
            ("PGSSLROOTCERT", self.ca.as_os_str()),
        ]
    }
}

impl Postgres {
    /// Writes PostgreSQL's TLS files (see [`TlsFiles`]): the key 0600 and everything owned
    /// by `os_user`, as PostgreSQL requires. A no-op without `Settings::tls`. A running
    /// server picks new files up at its next reload.
    pub fn install_tls(&self, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<(), Error> {
        let Some(tls) = &self.settings.tls else {
            return Ok(());
        };
        self.write_file(&tls.key, key_pem.as_bytes())?;
        self.write_file(&tls.cert, cert_pem.as_bytes())?;
        self.write_file(&tls.ca, ca_pem.as_bytes())
    }

    /// The libpq environment for connecting to another member's PostgreSQL: the passfile,
    /// and with TLS, `verify-full` against the cluster CA.
    pub(super) fn client_env(&self) -> Vec<(&'static str, &OsStr)> {
        let mut env = vec![("PGPASSFILE", self.settings.passfile.as_os_str())];
        if let Some(tls) = &self.settings.tls {
            env.extend(tls.client_env());
        }
        env
    }
}
