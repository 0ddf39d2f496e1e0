//! The CA certificates a member trusts, replaceable while it serves: one CA normally, the
//! old and the new one while `pgquorum ca rotate` moves the cluster (see
//! `crate::ca_rotation`). Every verifier of the peer port and the API reads them at each
//! handshake, so a change takes effect with no restart; connections already open keep
//! what they were accepted with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::config::{ca_roots, provider};
use super::Error;

/// The trusted CA certificates (PEM, one or more) and the verifiers built from them.
#[derive(Debug)]
pub struct Trust(RwLock<Verifiers>, AtomicU64);

#[derive(Debug)]
struct Verifiers {
    pem: String,
    server: Arc<WebPkiServerVerifier>,
    /// Client certificates optional (a presented one must chain) and mandatory.
    optional: Arc<dyn ClientCertVerifier>,
    mandatory: Arc<dyn ClientCertVerifier>,
}

impl Verifiers {
    fn build(pem: &str) -> Result<Self, Error> {
        let roots = Arc::new(ca_roots(pem)?);
        let client = || WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        let built = |b: Result<_, _>| b.map_err(|source| Error::Verifier { source });
        Ok(Self {
            pem: pem.to_string(),
            server: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|source| Error::ServerVerifier { source })?,
            optional: built(client().allow_unauthenticated().build())?,
            mandatory: built(client().build())?,
        })
    }
}

impl Trust {
    /// Trusts the CA certificates in `pem`.
    pub fn new(pem: &str) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self(
            RwLock::new(Verifiers::build(pem)?),
            AtomicU64::new(0),
        )))
    }

    /// Trusts the CA certificates in `pem` instead, from the next handshake on.
    pub fn replace(&self, pem: &str) -> Result<(), Error> {
        let verifiers = Verifiers::build(pem)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = verifiers;
        self.1.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many times the trusted CAs were replaced.
    pub(super) fn generation(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    /// The trusted CA certificates, PEM: what clients of this member need.
    pub fn pem(&self) -> String {
        self.read().pem.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Verifiers> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The webpki verifier of server certificates, as trusted now.
    pub(super) fn server_verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.read().server.clone()
    }

    /// A verifier of client certificates that follows this trust: `mandatory`, or optional
    /// (a certificate that is presented must still chain to a trusted CA).
    pub(super) fn client_verifier(self: &Arc<Self>, mandatory: bool) -> Arc<TrustedClients> {
        Arc::new(TrustedClients {
            trust: self.clone(),
            mandatory,
        })
    }

    fn current_client(&self, mandatory: bool) -> Arc<dyn ClientCertVerifier> {
        let verifiers = self.read();
        match mandatory {
            true => verifiers.mandatory.clone(),
            false => verifiers.optional.clone(),
        }
    }
}

/// Client certificates checked against the trust of the moment (see [`Trust`]).
///
/// It hints no CA names to clients (the names are behind a lock, the trait wants them
/// borrowed); per RFC 8446 a client then offers whatever certificate it has.
#[derive(Debug)]
pub(super) struct TrustedClients {
    trust: Arc<Trust>,
    mandatory: bool,
}

impl ClientCertVerifier for TrustedClients {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        (self.trust.current_client(self.mandatory)).verify_client_cert(
            end_entity,
            intermediates,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        (self.trust.current_client(self.mandatory)).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        (self.trust.current_client(self.mandatory)).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        (self.trust.current_client(self.mandatory)).supported_verify_schemes()
    }
}
