//! Cluster PKI: the cluster CA, node certificates, join tokens and the rustls configurations
//! that peer traffic uses (DESIGN §7).
//!
//! Owns everything cryptographic about membership; performs no network IO. `init` creates a
//! [`ClusterCa`] and the first [`NodeIdentity`]; `token create` prints a [`JoinTokenString`];
//! a joiner generates a [`NodeKey`], sends its CSR over a connection built with
//! [`pinned_client_config`] (trust = the CA hash in the token) and receives a certificate from
//! [`ClusterCa::issue_node`]. From then on every RPC is mutual TLS:
//!
//! ```text
//!  joiner                                       member (server_config)
//!  ──────                                       ──────────────────────
//!  pinned_client_config(token.ca_sha256) ──TLS──► presents [node cert, CA cert]
//!    no client cert                                client cert optional
//!    accepts the chain only if one of the         handler: token secret_matches,
//!    presented CAs hashes to the pin               issue_node(fresh id, CSR)
//!
//!  member_client_config(identity) ───────mTLS──► server_config(identity)
//!    ServerName = node-<target>.<cluster>          peer_node_id(peer certs) = caller's id
//! ```
//!
//! Node names are `node-<id>.<cluster-id>` ([`node_server_name`]); the standard webpki
//! hostname check therefore proves the client reached the node it meant to, and the server
//! maps a verified client certificate back to a node id with [`peer_node_id`].

mod authority;
mod ca;
mod cert;
mod config;
mod https;
mod token;
mod trust;

use std::path::PathBuf;

pub use authority::Authority;
pub use ca::{
    ca_sha256_hex, node_cert_renew_at, ClusterCa, ServerCert, BACKREST_SERVICE, NODE_VALIDITY,
};
pub use cert::{
    key_sha256_of_cert_der, key_sha256_of_cert_pem, node_id_from_cert_der, node_server_name,
    validity_of_cert_pem, NodeIdentity, NodeKey,
};
pub use config::{
    member_client_config, node_chain, node_chain_slot, peer_node_id, pinned_client_config,
    server_config, KeyPins,
};
pub use https::{
    api_client_config, api_server_config, plain_server_config, CertSlot, VerifyClient,
};
pub use token::{secret_matches, JoinTokenString, TokenError};
pub use trust::Trust;

/// Errors from the cluster PKI. Every variant says what was being done and, where relevant,
/// for which node or file; the underlying cause is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key or certificate generation failed inside rcgen (for example the system RNG failed).
    #[error("generating {what}")]
    Generate {
        /// What was being generated, e.g. `the CA for cluster 3f2a…`.
        what: String,
        #[source]
        source: rcgen::Error,
    },

    /// A PEM or DER input could not be parsed.
    #[error("parsing {what}: {reason}")]
    Parse {
        /// Which input, e.g. `the cluster CA certificate`.
        what: String,
        /// Why it was rejected, in words.
        reason: String,
    },

    /// The CA key does not belong to the CA certificate, or the certificate is not a CA.
    #[error("loading the cluster CA: {reason}")]
    InvalidCa {
        /// Why the pair was rejected.
        reason: String,
    },

    /// A joiner's certificate signing request was unparsable or its self-signature did not
    /// verify, so it does not prove possession of the private key.
    #[error("rejecting the certificate signing request for node {node_id}")]
    InvalidCsr {
        /// The node id the certificate would have been issued for.
        node_id: u64,
        #[source]
        source: rcgen::Error,
    },

    /// An extra subject alternative name is neither an IP address nor a valid DNS name.
    #[error(
        "issuing a certificate for node {node_id}: subject alternative name {name:?} is neither \
         an IP address nor a DNS name; fix the advertised address"
    )]
    InvalidSan {
        /// The node the certificate was for.
        node_id: u64,
        /// The offending name.
        name: String,
    },

    /// Signing a node certificate with the cluster CA failed.
    #[error("signing the certificate for node {node_id}")]
    Sign {
        /// The node the certificate was for.
        node_id: u64,
        #[source]
        source: rcgen::Error,
    },

    /// A join token's CA hash (or any pin) is not 64 hex characters.
    #[error(
        "invalid CA pin {pin:?}: expected the 64 hex characters of the cluster CA certificate's \
         sha256, as printed in the join token"
    )]
    InvalidPin {
        /// The rejected pin (a public hash, not a secret).
        pin: String,
    },

    /// rustls refused the certificates or key while building a TLS configuration.
    #[error("building the TLS {what} configuration")]
    Rustls {
        /// Which configuration, e.g. `server`.
        what: &'static str,
        #[source]
        source: rustls::Error,
    },

    /// The client-certificate verifier could not be built (for example, no usable CA root).
    #[error("building the client certificate verifier for the cluster CA")]
    Verifier {
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    /// The server-certificate verifier could not be built (for example, no usable CA root).
    #[error("building the server certificate verifier for the cluster CA")]
    ServerVerifier {
        #[source]
        source: rustls::client::VerifierBuilderError,
    },

    /// Reading or writing a file of the node identity failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. `reading` or `renaming into place`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A join token did not parse.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// When each of this member's certificates expires (`node`, `api`, `postgresql`), kept
/// current by whoever renews them and read by `/metrics`, so that an alert can fire on a
/// renewal that keeps failing well before clients refuse the certificate.
#[derive(Debug, Default)]
pub struct Expiries(
    std::sync::Mutex<std::collections::BTreeMap<&'static str, std::time::SystemTime>>,
);

impl Expiries {
    /// Records that certificate `name` now expires at `at`.
    pub fn set(&self, name: &'static str, at: std::time::SystemTime) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, at);
    }

    /// Every certificate's expiry, in seconds since the Unix epoch, by name.
    pub fn unix_seconds(&self) -> Vec<(&'static str, u64)> {
        let expiries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (expiries.iter())
            .map(|(name, at)| {
                let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                (*name, secs.as_secs())
            })
            .collect()
    }
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

#[cfg(test)]
mod tests;
