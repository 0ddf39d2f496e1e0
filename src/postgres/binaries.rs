//! Finding the PostgreSQL server binaries and their major version.
//!
//! `[postgresql] bin_dir` wins when set; otherwise the newest of `/usr/lib/postgresql/*/bin`
//! (Debian) and `/usr/pgsql-*/bin` (RPM) by numeric major version (DESIGN §4).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;

/// The oldest major version whose recovery model (`standby.signal`, `primary_conninfo` in
/// `postgresql.conf`, `pg_promote()`) pgquorum drives.
pub const MIN_VERSION: u32 = 12;

/// Where packaged PostgreSQL installs live: (parent directory, prefix of the version folder).
const INSTALL_ROOTS: &[(&str, &str)] = &[("/usr/lib/postgresql", ""), ("/usr", "pgsql-")];

/// A directory holding `postgres`, `initdb`, `pg_basebackup` and `pg_controldata`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    /// Major version, e.g. 15.
    pub version: u32,
}

impl Binaries {
    /// The path of the tool `name` in this directory.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Uses `configured` if given, else the newest packaged install. Errors say what is
    /// missing and how to fix it. Runs `postgres --version` once to learn (and check) the
    /// major version.
    pub fn find(configured: Option<&Path>) -> Result<Binaries, Error> {
        let dir = match configured {
            Some(dir) => {
                if !dir.join("postgres").is_file() {
                    return Err(Error::NoServerBinary {
                        dir: dir.to_path_buf(),
                    });
                }
                dir.to_path_buf()
            }
            None => {
                let found = INSTALL_ROOTS
                    .iter()
                    .flat_map(|(root, prefix)| candidates(Path::new(root), prefix))
                    .max_by_key(|(version, _)| *version);
                match found {
                    Some((_, dir)) => dir,
                    None => {
                        return Err(Error::BinariesNotFound {
                            searched: "/usr/lib/postgresql/*/bin or /usr/pgsql-*/bin".into(),
                        })
                    }
                }
            }
        };
        let version = query_version(&dir)?;
        if version < MIN_VERSION {
            return Err(Error::UnsupportedVersion { version, dir });
        }
        Ok(Binaries { dir, version })
    }
}

/// `(major, root/<prefix><major>/bin)` for every folder under `root` whose name is `prefix`
/// followed by a number and which holds a `postgres` executable. Unreadable roots yield
/// nothing.
pub fn candidates(root: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let version: u32 = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect()
}

/// Runs `<dir>/postgres --version` (allowed as root: it exits before the root check).
fn query_version(dir: &Path) -> Result<u32, Error> {
    let program = dir.join("postgres");
    let output = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|source| Error::Io {
            action: format!("running {} --version", program.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| Error::CommandFailed {
        command: format!("{} --version", program.display()),
        status: output.status.to_string(),
        output: format!("unexpected output {:?}", text.trim()),
    })
}

/// The major version in `postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`; 9.6 reads as 9.
pub fn parse_version(text: &str) -> Option<u32> {
    let rest = text.split_once("(PostgreSQL) ")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_postgres_banner() {
        for (text, want) in [
            (
                "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n",
                Some(15),
            ),
            ("postgres (PostgreSQL) 17devel", Some(17)),
            ("postgres (PostgreSQL) 9.6.24", Some(9)),
            ("something else", None),
        ] {
            assert_eq!(parse_version(text), want, "{text}");
        }
    }

    #[test]
    fn newest_numeric_install_is_preferred() {
        let root = tempfile::tempdir().unwrap();
        for name in ["9", "15", "16", "latest", "pgsql-17"] {
            let bin = root.path().join(name).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
        }
        // A version folder without a server binary (client-only package) does not count.
        std::fs::create_dir_all(root.path().join("18/bin")).unwrap();
        let mut found = candidates(root.path(), "");
        found.sort();
        let versions: Vec<u32> = found.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, [9, 15, 16]);
        assert_eq!(found[2].1, root.path().join("16/bin"));
        let rpm = candidates(root.path(), "pgsql-");
        assert_eq!(rpm, [(17, root.path().join("pgsql-17/bin"))]);
    }
}
