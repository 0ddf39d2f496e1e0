//! rustls configurations for peer traffic: the member server, the member client (mutual TLS)
//! and the joiner's client that trusts only the CA pinned by a join token.
//!
//! Every config is built with the ring provider passed explicitly, so no process-wide default
//! provider has to be installed. All of them negotiate ALPN `h2` (gRPC).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::cert::{
    key_sha256_of_cert_der, node_id_from_cert_der, parse_certs, parse_node_server_name,
};
use super::{sha256_hex, CertSlot, Error, NodeIdentity, Trust};

const ALPN_H2: &[u8] = b"h2";

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding exactly the certificates of `ca_pem`.
pub(super) fn ca_roots(ca_pem: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for ca in parse_certs(ca_pem, "the cluster CA certificate")? {
        roots.add(ca).map_err(|source| Error::Rustls {
            what: "cluster CA root",
            source,
        })?;
    }
    Ok(roots)
}

/// The member server: presents the node certificate in `node` (`[node cert, CA certs]`, see
/// [`node_chain_slot`]) and verifies client certificates against the CAs in `trust`.
///
/// Client certificates are optional because the join RPC is called by a node that has none
/// yet; a certificate that *is* presented must chain to the cluster CA or the handshake fails.
/// Handlers therefore decide membership themselves with [`peer_node_id`]. The CA is included
/// in the chain so a joiner can find the certificate its token pins.
pub fn server_config(trust: &Arc<Trust>, node: Arc<CertSlot>) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let rustls_err = |source| Error::Rustls {
        what: "server",
        source,
    };
    let verifier = trust.client_verifier(false);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(node);
    // No session resumption: a resumed session reports the certificate of the session it
    // resumes, and the member checks (authorize_member, per RPC) must see the one presented
    // now, or a member that rotated its key would still be seen with the old one.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The slot both the member server and the member client present from: the node
/// certificate followed by the CA's (so a joiner finds the certificate its token pins), and
/// the node key. A rotation replaces them in place ([`CertSlot::replace`]).
pub fn node_chain_slot(id: &NodeIdentity) -> Result<Arc<CertSlot>, Error> {
    CertSlot::new(&node_chain(id), id.key_pem())
}

/// The PEM chain a member presents: its certificate, then the CA's.
pub fn node_chain(id: &NodeIdentity) -> String {
    format!("{}\n{}", id.cert_pem().trim_end(), id.ca_pem())
}

/// The keys each member may present, by node id: its pin (`ClusterState::keys`) and,
/// during a rotation, its next key (`ClusterState::next_keys`). The daemon keeps them equal
/// to the cluster state's; the member client's verifier reads them at every handshake.
#[derive(Clone, Debug, Default)]
pub struct KeyPins(Arc<RwLock<BTreeMap<u64, Vec<String>>>>);

impl KeyPins {
    /// Replaces every pin.
    pub fn replace(&self, pins: BTreeMap<u64, Vec<String>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = pins;
    }

    fn get(&self, id: u64) -> Option<Vec<String>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

/// The member client: trusts only the CAs in `trust` and presents this node's certificate.
///
/// Connect with `ServerName` = [`super::node_server_name`]`(target, cluster)`: the standard
/// webpki hostname check then proves the peer is the intended node, not merely a member.
pub fn member_client_config(
    trust: Arc<Trust>,
    node: Arc<CertSlot>,
    cluster_id: &str,
    pins: KeyPins,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let rustls_err = |source| Error::Rustls {
        what: "member client",
        source,
    };
    let verifier = Arc::new(PinnedMemberVerifier {
        trust,
        pins,
        cluster_id: cluster_id.to_string(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(node);
    // Every connection a full handshake with the certificate of the moment (see
    // `server_config`).
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Verifies a member server as webpki does (a chain to the cluster CA, the name
/// `node-<id>.<cluster>` asked for), then that its certificate is for the key the cluster
/// pinned for that id, when it has one: a server presenting a certificate minted for the id
/// with the CA key, or a removed member's old one, fails the handshake.
#[derive(Debug)]
struct PinnedMemberVerifier {
    trust: Arc<Trust>,
    pins: KeyPins,
    cluster_id: String,
}

impl ServerCertVerifier for PinnedMemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.trust.server_verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let ServerName::DnsName(name) = server_name else {
            return Ok(verified);
        };
        let Some(id) = parse_node_server_name(name.as_ref(), &self.cluster_id) else {
            return Ok(verified);
        };
        match self.pins.get(id) {
            Some(pins)
                if !key_sha256_of_cert_der(end_entity).is_some_and(|key| pins.contains(&key)) =>
            {
                Err(rustls::Error::General(format!(
                    "the certificate node {id} presented is not for the key the cluster recorded \
                     for it (minted for its id, or no longer its own)"
                )))
            }
            _ => Ok(verified),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .server_verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .server_verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.server_verifier().supported_verify_schemes()
    }
}

/// The joiner's client: no client certificate; trusts the server only if one of the
/// certificates it presents hashes (SHA-256 of the DER) to `ca_sha256_hex`, the pin from the
/// join token, and the server's certificate chains to that CA.
///
/// Any server name is accepted: the pin, not a hostname, is the trust anchor. A mismatch fails
/// the handshake with a message containing `does not match`. Fails with
/// [`Error::InvalidPin`] unless the pin is 64 hex characters.
pub fn pinned_client_config(ca_sha256_hex: &str) -> Result<Arc<ClientConfig>, Error> {
    if ca_sha256_hex.len() != 64 || !ca_sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidPin {
            pin: ca_sha256_hex.to_owned(),
        });
    }
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        pin: ca_sha256_hex.to_ascii_lowercase(),
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Rustls {
            what: "pinned client",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The node id in the peer's end-entity certificate (first of `conn_certs`), as
/// [`node_id_from_cert_der`] reads it; `None` if the peer sent no certificate.
///
/// Meaningful only for certificates rustls has verified, i.e. the `peer_certificates()` of a
/// connection accepted with [`server_config`] or made with [`member_client_config`].
pub fn peer_node_id(conn_certs: Option<&[CertificateDer<'_>]>, cluster_id: &str) -> Option<u64> {
    node_id_from_cert_der(conn_certs?.first()?, cluster_id)
}

/// Accepts a server whose presented chain contains the pinned CA and whose end-entity
/// certificate is valid (signature, validity period, server-auth usage) under that CA.
#[derive(Debug)]
struct PinnedCaVerifier {
    /// Lowercase hex SHA-256 of the CA certificate DER.
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| sha256_hex(c) == self.pin) else {
            let got = match intermediates.last() {
                Some(c) => sha256_hex(c),
                None => "(none: the peer sent no CA certificate)".to_owned(),
            };
            return Err(rustls::Error::General(format!(
                "peer's CA sha256 {got} does not match the join token's {}: the token is for \
                 another cluster",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let rest: Vec<CertificateDer<'_>> =
            intermediates.iter().filter(|c| *c != ca).cloned().collect();
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            &rest,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
