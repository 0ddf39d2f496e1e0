//! Node keys, node names and the on-disk node identity (`ca.pem`, `node.pem`, `node.key`).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use super::Error;
use crate::secret::Secret;

/// The TLS server name of node `node_id` in cluster `cluster_id`: `node-<id>.<cluster-id>`.
///
/// Node certificates carry it as a DNS subject alternative name and clients connect with it as
/// the `ServerName`, so hostname verification proves which node answered. Cluster ids are
/// lowercase hex, hence a valid DNS label.
pub fn node_server_name(node_id: u64, cluster_id: &str) -> String {
    format!("node-{node_id}.{cluster_id}")
}

/// The pin of the key a certificate certifies: lowercase hex SHA-256 of its
/// SubjectPublicKeyInfo (DER), or `None` if the DER does not parse. The cluster records each
/// member's (`ClusterState::keys`) and accepts a peer only with a certificate for that key.
pub fn key_sha256_of_cert_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(super::sha256_hex(cert.public_key().raw))
}

/// When the first certificate in `cert_pem` starts and stops being valid.
pub fn validity_of_cert_pem(
    cert_pem: &str,
) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    };
    Some((
        at(cert.validity().not_before)?,
        at(cert.validity().not_after)?,
    ))
}

/// [`key_sha256_of_cert_der`] of the first certificate in `cert_pem`.
pub fn key_sha256_of_cert_pem(cert_pem: &str) -> Option<String> {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()?
        .ok()?;
    key_sha256_of_cert_der(der.as_ref())
}

/// Returns the node id named by the certificate's DNS subject alternative name
/// `node-<id>.<cluster_id>`, or `None` if the DER does not parse, no SAN has exactly that form
/// for this `cluster_id`, or several SANs name different ids.
///
/// This reads the certificate only; it proves nothing unless the certificate was verified
/// against the cluster CA (as rustls does for the peer of an established connection).
pub fn node_id_from_cert_der(der: &[u8], cluster_id: &str) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        let Some(id) = parse_node_server_name(dns, cluster_id) else {
            continue;
        };
        match found {
            None => found = Some(id),
            Some(previous) if previous == id => {}
            Some(_) => return None,
        }
    }
    found
}

/// Parses `node-<id>.<cluster_id>` with `<id>` in canonical decimal (no sign, no leading zero).
pub(super) fn parse_node_server_name(name: &str, cluster_id: &str) -> Option<u64> {
    let (id, cluster) = name.strip_prefix("node-")?.split_once('.')?;
    if cluster != cluster_id || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = id.parse().ok()?;
    // Reject `node-01`: only the spelling node_server_name produces names a node.
    (node_server_name(id, cluster_id) == name).then_some(id)
}

/// A node's private key (ECDSA P-256). It never leaves the node: the CA receives only a CSR.
pub struct NodeKey {
    key: KeyPair,
}

impl NodeKey {
    /// Generates a fresh ECDSA P-256 key from the system RNG.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            Error::Generate {
                what: "the node key".into(),
                source,
            }
        })?;
        Ok(Self { key })
    }

    /// Loads a PKCS#8 PEM key such as the one [`NodeKey::key_pem`] returns.
    pub fn from_pem(pem: &Secret<String>) -> Result<Self, Error> {
        let key = KeyPair::from_pem(pem.expose()).map_err(|e| Error::Parse {
            what: "the node key".into(),
            reason: e.to_string(),
        })?;
        Ok(Self { key })
    }

    /// The private key as PKCS#8 PEM, for `node.key`.
    pub fn key_pem(&self) -> Secret<String> {
        Secret::new(self.key.serialize_pem())
    }

    /// A PEM certificate signing request for this key with common name `node_name`.
    ///
    /// The CA keeps only the public key from it and chooses every other field itself, so
    /// `node_name` is informational (a hostname helps when reading logs).
    pub fn csr_pem(&self, node_name: &str) -> Result<String, Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_name);
        params.distinguished_name = dn;
        let generate = |source| Error::Generate {
            what: format!("a certificate signing request for {node_name:?}"),
            source,
        };
        params
            .serialize_request(&self.key)
            .map_err(generate)?
            .pem()
            .map_err(generate)
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(***)")
    }
}

/// What a member needs for mutual TLS: the cluster CA certificate, its own certificate and
/// its private key, all PEM.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    ca_pem: String,
    cert_pem: String,
    key_pem: Secret<String>,
}

impl NodeIdentity {
    /// File name of the cluster CA certificate inside the identity directory.
    pub const CA_FILE: &'static str = "ca.pem";
    /// File name of the node certificate inside the identity directory.
    pub const CERT_FILE: &'static str = "node.pem";
    /// File name of the node private key inside the identity directory (mode 0600).
    pub const KEY_FILE: &'static str = "node.key";

    /// Bundles already-obtained PEM material. Does no validation and no IO; the TLS config
    /// builders report unparsable input.
    pub fn new(ca_pem: String, cert_pem: String, key_pem: Secret<String>) -> Self {
        Self {
            ca_pem,
            cert_pem,
            key_pem,
        }
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// This node's certificate, PEM (it may be followed by further chain certificates).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This node's private key, PEM.
    pub fn key_pem(&self) -> &Secret<String> {
        &self.key_pem
    }

    /// The node id this identity's certificate names in `cluster_id`, or `None` if the
    /// certificate does not parse or names no node of that cluster.
    pub fn node_id(&self, cluster_id: &str) -> Option<u64> {
        let der = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()?
            .ok()?;
        node_id_from_cert_der(&der, cluster_id)
    }

    /// Reads `ca.pem`, `node.pem` and `node.key` from `dir` and checks that each parses.
    ///
    /// Errors name the file. Warns (but loads) if `node.key` is readable by group or others.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let ca_path = dir.join(Self::CA_FILE);
        let cert_path = dir.join(Self::CERT_FILE);
        let key_path = dir.join(Self::KEY_FILE);
        let ca_pem = read(&ca_path)?;
        let cert_pem = read(&cert_path)?;
        let key_pem = Secret::new(read(&key_path)?);
        parse_certs(&ca_pem, &ca_path.display().to_string())?;
        parse_certs(&cert_pem, &cert_path.display().to_string())?;
        parse_key(&key_pem, &key_path.display().to_string())?;

        let mode = fs::metadata(&key_path)
            .map_err(|source| Error::Io {
                action: "reading metadata of",
                path: key_path.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %key_path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "node key is readable by group or others; chmod 600 it"
            );
        }
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// Writes the identity into `dir` (created with mode 0700 if missing): `ca.pem` and
    /// `node.pem` with mode 0644, `node.key` with mode 0600.
    ///
    /// Each file is written to a temporary sibling, fsynced and renamed into place, then the
    /// directory is fsynced, so a crash leaves either the old or the new version of each file.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| Error::Io {
                action: "creating directory",
                path: dir.to_path_buf(),
                source,
            })?;
        write_atomic(dir, Self::CA_FILE, self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(dir, Self::CERT_FILE, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(dir, Self::KEY_FILE, self.key_pem.expose().as_bytes(), 0o600)?;
        sync_dir(dir)
    }
}

impl NodeIdentity {
    /// File names the next certificate and key take while a rotation writes them.
    const NEXT_CERT_FILE: &'static str = "node.next.pem";
    const NEXT_KEY_FILE: &'static str = "node.next.key";

    /// Replaces the certificate and key in `dir` with this identity's, so that a crash at
    /// any moment leaves a matching pair for [`NodeIdentity::load`]: both are written
    /// beside the old ones first, then the key is renamed into place, then the certificate.
    /// A crash before the key's rename leaves the old pair (the next files are dropped at
    /// load); one after it, the new key with the next certificate still to be renamed,
    /// which load finishes.
    pub fn save_rotated(&self, dir: &Path) -> Result<(), Error> {
        write_atomic(dir, Self::NEXT_CERT_FILE, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(
            dir,
            Self::NEXT_KEY_FILE,
            self.key_pem.expose().as_bytes(),
            0o600,
        )?;
        sync_dir(dir)?;
        rename(dir, Self::NEXT_KEY_FILE, Self::KEY_FILE)?;
        sync_dir(dir)?;
        rename(dir, Self::NEXT_CERT_FILE, Self::CERT_FILE)?;
        sync_dir(dir)
    }

    /// Finishes or undoes a rotation that [`NodeIdentity::save_rotated`] left half done;
    /// the daemon calls it before [`NodeIdentity::load`] at start.
    pub fn recover_rotation(dir: &Path) -> Result<(), Error> {
        let (next_cert, next_key) = (
            dir.join(Self::NEXT_CERT_FILE),
            dir.join(Self::NEXT_KEY_FILE),
        );
        match (next_cert.exists(), next_key.exists()) {
            (true, false) => {
                tracing::warn!("finishing a certificate rotation interrupted by a crash");
                rename(dir, Self::NEXT_CERT_FILE, Self::CERT_FILE)?;
                sync_dir(dir)
            }
            (_, true) => {
                tracing::warn!(
                    "dropping a certificate rotation interrupted before it took effect; the \
                     old certificate stays"
                );
                for path in [next_cert, next_key] {
                    match fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(Error::Io {
                                action: "removing",
                                path,
                                source: e,
                            })
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            (false, false) => Ok(()),
        }
    }
}

fn rename(dir: &Path, from: &str, to: &str) -> Result<(), Error> {
    fs::rename(dir.join(from), dir.join(to)).map_err(|source| Error::Io {
        action: "renaming into place",
        path: dir.join(to),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            action: "syncing directory",
            path: dir.to_path_buf(),
            source,
        })
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `dir/name` via `dir/.name.tmp` + fsync + rename. The temporary file is created
/// fresh (`create_new`) so `mode` applies even if a stale one was left by a crash.
fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), Error> {
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("removing stale", &tmp)(e));
        }
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))
}

/// Every `CERTIFICATE` block of `pem`, in order; fails if there is none. `what` names the
/// input in the error.
pub(crate) fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Parse {
            what: what.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Parse {
            what: what.into(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `pem`. `what` names the input in the
/// error; the key material itself never appears in it.
pub(crate) fn parse_key(pem: &Secret<String>, what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.expose().as_bytes()).map_err(|e| Error::Parse {
        what: what.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_server_name_parses_only_in_its_canonical_form() {
        let name = node_server_name(42, "3f2a9c01");
        assert_eq!(name, "node-42.3f2a9c01");
        assert_eq!(parse_node_server_name(&name, "3f2a9c01"), Some(42));
        assert_eq!(parse_node_server_name(&name, "3f2a9c02"), None);
        assert_eq!(parse_node_server_name(&name, "3f2a9c0"), None);
        for bad in [
            "node-042.3f2a9c01",
            "node-+42.3f2a9c01",
            "node-.3f2a9c01",
            "node-42.3f2a9c01.evil",
            "node-18446744073709551616.3f2a9c01",
            "Node-42.3f2a9c01",
            "db-42.3f2a9c01",
        ] {
            assert_eq!(parse_node_server_name(bad, "3f2a9c01"), None, "{bad}");
        }
    }
}
