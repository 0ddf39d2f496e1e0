//! The cluster CA: created once by `pgquorum init`, it signs every node certificate. Its
//! SHA-256 is the trust anchor a joiner pins from the join token.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::cert::{node_server_name, parse_certs};
use super::{sha256_hex, Error};
use crate::secret::Secret;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Lifetime of the cluster CA certificate.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);
/// Default lifetime of a node certificate (`[tls] node_certificate_lifetime`); a running
/// member rotates its own two thirds of the way through (see `crate::rotate`).
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start being valid this long before they are issued, so a peer whose clock is
/// slightly behind the issuer's does not reject a fresh certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

/// The cluster certificate authority: its certificate and private key, both PEM.
///
/// Invariant (checked by [`ClusterCa::generate`] and [`ClusterCa::from_pem`]): the certificate
/// parses, is a CA, and belongs to the key.
#[derive(Clone, Debug)]
pub struct ClusterCa {
    cert_pem: String,
    key_pem: Secret<String>,
    /// SHA-256 of the certificate DER, computed once; it is what join tokens pin.
    sha256_hex: String,
    /// How long the node certificates it issues last.
    node_validity: Duration,
}

impl ClusterCa {
    /// Creates a self-signed CA for `cluster_id` with a fresh ECDSA P-256 key: common name
    /// `pgquorum cluster <id> CA`, path length 0 (it signs node certificates only), valid for
    /// 20 years.
    pub fn generate(cluster_id: &str) -> Result<Self, Error> {
        Self::generate_named(cluster_id, format!("pgquorum cluster {cluster_id} CA"))
    }

    /// A CA to replace this one (`pgquorum ca rotate`): as [`ClusterCa::generate`], with
    /// the time of its creation in its common name, so that the two are told apart by name
    /// as well as by key.
    pub fn successor(&self, cluster_id: &str) -> Result<Self, Error> {
        let now = humantime::format_rfc3339_seconds(SystemTime::now());
        let ca = Self::generate_named(
            cluster_id,
            format!("pgquorum cluster {cluster_id} CA {now}"),
        )?;
        Ok(ca.with_node_validity(self.node_validity))
    }

    fn generate_named(cluster_id: &str, name: String) -> Result<Self, Error> {
        let generate = |source| Error::Generate {
            what: format!("the CA for cluster {cluster_id}"),
            source,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        params.serial_number = Some(random_serial());

        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Self {
            sha256_hex: sha256_hex(cert.der()),
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
            node_validity: NODE_VALIDITY,
        })
    }

    /// Loads a CA saved from [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`].
    ///
    /// Fails if either does not parse, if the certificate is not a CA, or if the key is not
    /// the certificate's key.
    pub fn from_pem(cert_pem: String, key_pem: Secret<String>) -> Result<Self, Error> {
        let der = parse_certs(&cert_pem, "the cluster CA certificate")?.swap_remove(0);
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|e| Error::Parse {
            what: "the cluster CA key".into(),
            reason: e.to_string(),
        })?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| Error::Parse {
            what: "the cluster CA certificate".into(),
            reason: e.to_string(),
        })?;
        if !cert.is_ca() {
            return Err(Error::InvalidCa {
                reason: "the certificate is not a CA (basicConstraints cA is not set)".into(),
            });
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::InvalidCa {
                reason: "the key does not match the certificate; was ca.key replaced?".into(),
            });
        }
        Ok(Self {
            sha256_hex: sha256_hex(&der),
            cert_pem,
            key_pem,
            node_validity: NODE_VALIDITY,
        })
    }

    /// The same CA, issuing node certificates that last `validity` (default
    /// [`NODE_VALIDITY`]).
    pub fn with_node_validity(mut self, validity: Duration) -> Self {
        self.node_validity = validity;
        self
    }

    /// The CA certificate, PEM. Public: every node and joiner gets it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Whoever holds it can mint members.
    pub fn key_pem(&self) -> &Secret<String> {
        &self.key_pem
    }

    /// Lowercase hex SHA-256 of the CA certificate DER: the pin carried by join tokens.
    pub fn sha256_hex(&self) -> String {
        self.sha256_hex.clone()
    }

    /// Checks a joiner's CSR and extra names as [`issue_node`](Self::issue_node) would, by
    /// signing one for node id 0 and throwing it away: a join checks this before the cluster
    /// registers the member, so a bad CSR neither spends a token use nor leaves a member
    /// that has no certificate. Returns the pin of the CSR's key
    /// ([`key_sha256_of_cert_der`](super::key_sha256_of_cert_der)), which the member's
    /// record gets. Errors are `issue_node`'s.
    pub fn check_node_request(
        &self,
        cluster_id: &str,
        csr_pem: &str,
        extra_sans: &[String],
    ) -> Result<String, Error> {
        let pem = self.issue_node(0, cluster_id, csr_pem, extra_sans)?;
        super::key_sha256_of_cert_pem(&pem).ok_or_else(|| Error::InvalidCa {
            reason: "a certificate it signed does not parse".into(),
        })
    }

    /// Issues the certificate of node `node_id` for the key in `csr_pem`, returned as PEM.
    ///
    /// Only the CSR's public key is used, after its self-signature has verified (proof that
    /// the requester holds the private key). Every other field is chosen here: common name
    /// `node-<id>`, DNS SAN [`node_server_name`] plus `extra_sans` (IP addresses become IP
    /// SANs, anything else must be a DNS name), server and client auth, valid for the CA's
    /// node validity ([`NODE_VALIDITY`] unless [`ClusterCa::with_node_validity`]).
    ///
    /// Fails with [`Error::InvalidCsr`] for an unparsable or badly signed CSR (rcgen verifies
    /// the signature while parsing) and [`Error::InvalidSan`] for an unusable extra name.
    pub fn issue_node(
        &self,
        node_id: u64,
        cluster_id: &str,
        csr_pem: &str,
        extra_sans: &[String],
    ) -> Result<String, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|source| Error::InvalidCsr { node_id, source })?;

        let mut params = leaf_params(
            format!("node-{node_id}"),
            node_sans(node_id, cluster_id, extra_sans)?,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        params.not_after = (SystemTime::now() + self.node_validity).into();

        let sign = |source| Error::Sign { node_id, source };
        // The invariant of ClusterCa makes these parses succeed; errors still surface as Sign.
        let key = KeyPair::from_pem(self.key_pem.expose()).map_err(sign)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(sign)?;
        let cert = params.signed_by(&csr.public_key, &issuer).map_err(sign)?;
        Ok(cert.pem())
    }
}

/// A server certificate of one of a member's client-facing services (its PostgreSQL, its
/// REST API), with its fresh key and when it expires.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: Secret<String>,
    /// When it was issued (its validity starts [`CLOCK_SKEW`] earlier).
    pub issued: SystemTime,
    /// When it stops being valid: `issued` + the lifetime asked for.
    pub not_after: SystemTime,
}

impl ServerCert {
    /// When it should be replaced: two thirds into its lifetime, so a renewal that fails
    /// (the CA unreadable, a full disk) has a third of the lifetime to be noticed and fixed
    /// before clients refuse the certificate.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or_default();
        self.issued + lifetime * 2 / 3
    }
}

impl ClusterCa {
    /// A server certificate and a fresh key for `service` (`postgresql`, `api`) of member
    /// `node_id`, valid for `lifetime`, naming `hosts` (its advertised and listen addresses,
    /// IPs or DNS names) besides its node name: replicas, `pg_basebackup` and `pg_rewind`
    /// dial PostgreSQL with `sslmode=verify-full`, the CLI and load balancers verify the
    /// API, and clients can verify both with the CA (`pgquorum ca export`).
    pub fn issue_server(
        &self,
        node_id: u64,
        cluster_id: &str,
        service: &str,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<ServerCert, Error> {
        let sign = |source| Error::Sign { node_id, source };
        let key = KeyPair::generate().map_err(sign)?;
        // pgBackRest's certificate is its server's and, when this member takes a backup
        // from a standby, its client's; the servers admit clients by common name.
        let (name, usages) = match service {
            BACKREST_SERVICE => (
                crate::postgres::backrest_client_cn(node_id),
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            _ => (
                format!("{service} node-{node_id}"),
                vec![ExtendedKeyUsagePurpose::ServerAuth],
            ),
        };
        let mut sans = node_sans(node_id, cluster_id, hosts)?;
        if service == BACKREST_SERVICE {
            // pgBackRest (2.45) matches the host it dials against DNS names only, so an
            // address is named that way too.
            for host in hosts.iter().filter(|h| h.parse::<IpAddr>().is_ok()) {
                let name = host.clone().try_into().map_err(|_| Error::InvalidSan {
                    node_id,
                    name: host.clone(),
                })?;
                sans.push(SanType::DnsName(name));
            }
        }
        let mut params = leaf_params(name, sans, usages);
        let issued = SystemTime::now();
        params.not_before = (issued - CLOCK_SKEW).into();
        params.not_after = (issued + lifetime).into();
        let ca_key = KeyPair::from_pem(self.key_pem.expose()).map_err(sign)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(sign)?;
        let cert = params.signed_by(&key, &issuer).map_err(sign)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
            issued,
            not_after: issued + lifetime,
        })
    }
}

/// The service name of pgBackRest's certificate (see [`ClusterCa::issue_server`]).
pub const BACKREST_SERVICE: &str = "pgbackrest";

/// When the node certificate `cert_pem` (issued by [`ClusterCa::issue_node`]) should be
/// replaced: two thirds into its lifetime, as [`ServerCert::renew_at`].
pub fn node_cert_renew_at(cert_pem: &str) -> Option<SystemTime> {
    let (not_before, not_after) = super::validity_of_cert_pem(cert_pem)?;
    let issued = not_before + CLOCK_SKEW;
    let lifetime = not_after.duration_since(issued).unwrap_or_default();
    Some(issued + lifetime * 2 / 3)
}

/// Lowercase hex SHA-256 of the DER of the first certificate in `cert_pem`.
pub fn ca_sha256_hex(cert_pem: &str) -> Result<String, Error> {
    let der = parse_certs(cert_pem, "the CA certificate")?.swap_remove(0);
    Ok(sha256_hex(&der))
}

fn common_name(cn: String) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// The parameters every leaf certificate of the cluster CA shares (not a CA, signing and key
/// encipherment, the CA's key identifier, [`NODE_VALIDITY`], a random serial), with its
/// common name, names and extended key usages.
fn leaf_params(
    cn: String,
    sans: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(cn);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALIDITY);
    params.serial_number = Some(random_serial());
    params
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + validity + DAY).into();
}

/// 16 random bytes with the top bit clear (serials must be positive, RFC 5280 §4.1.2.2).
/// Random rather than rcgen's default (a hash of the public key), so re-issuing for the same
/// key yields a distinct serial.
fn random_serial() -> SerialNumber {
    let mut bytes = vec![0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so the DER length is stable
    SerialNumber::from(bytes)
}

fn node_sans(node_id: u64, cluster_id: &str, extra: &[String]) -> Result<Vec<SanType>, Error> {
    let own = node_server_name(node_id, cluster_id);
    let mut names: Vec<&str> = vec![&own];
    for name in extra {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let invalid = || Error::InvalidSan {
                node_id,
                name: name.to_owned(),
            };
            if let Ok(ip) = name.parse::<IpAddr>() {
                return Ok(SanType::IpAddress(ip));
            }
            rustls_pki_types::DnsName::try_from(name).map_err(|_| invalid())?;
            Ok(SanType::DnsName(name.try_into().map_err(|_| invalid())?))
        })
        .collect()
}
