//! rustls configurations for the REST API (HTTPS with the cluster CA): the server, whose
//! certificate the daemon renews while it runs ([`CertSlot`]), and the client the CLI
//! and tests use, which trusts only the cluster CA and checks the name it dialled.
//!
//! Client certificates follow Patroni's `restapi.verify_client` ([`VerifyClient`]): any
//! certificate the cluster CA signed (every member's node certificate) counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};

use super::cert::{parse_certs, parse_key};
use super::config::{ca_roots, provider};
use super::{Error, ServerCert, Trust};
use crate::secret::Secret;

const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Whether the API asks clients for a certificate signed by the cluster CA, as Patroni's
/// `restapi.verify_client`: `none` never; `optional` for the unsafe calls (admin endpoints,
/// `/config`), health checks and reads stay open; `required` for every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyClient {
    #[default]
    None,
    Optional,
    Required,
}

/// The certificate a TLS endpoint presents (as a server, or as a client asked for one),
/// replaceable while it serves: new handshakes get the new one, connections already open
/// keep theirs. The API's renewed certificate and a member's rotated node certificate take
/// effect this way, with no restart.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>, AtomicU64);

impl CertSlot {
    /// Holds `chain_pem` (the leaf first, then any chain certificates sent with it) and
    /// its key.
    pub fn new(chain_pem: &str, key_pem: &Secret<String>) -> Result<Arc<Self>, Error> {
        let key = certified_key(chain_pem, key_pem)?;
        Ok(Arc::new(Self(RwLock::new(key), AtomicU64::new(0))))
    }

    /// Holds a service's certificate.
    pub fn of_service(cert: &ServerCert) -> Result<Arc<Self>, Error> {
        Self::new(&cert.cert_pem, &cert.key_pem)
    }

    /// Presents `chain_pem` and `key_pem` from the next handshake on.
    pub fn replace(&self, chain_pem: &str, key_pem: &Secret<String>) -> Result<(), Error> {
        let key = certified_key(chain_pem, key_pem)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        self.1.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many times the certificate was replaced.
    fn generation(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for CertSlot {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_key(chain_pem: &str, key_pem: &Secret<String>) -> Result<Arc<CertifiedKey>, Error> {
    let chain = parse_certs(chain_pem, "the certificate")?;
    let key = parse_key(key_pem, "the key")?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| Error::Rustls {
            what: "certificate key",
            source,
        })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A server that presents `cert` and asks clients for none (the pooled port: clients log
/// in with SCRAM).
pub fn plain_server_config(cert: Arc<CertSlot>) -> Result<Arc<ServerConfig>, Error> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Rustls {
            what: "pooler server",
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(Arc::new(config))
}

/// The API server: presents `cert`, and asks for client certificates chaining to a CA in
/// `trust` as `verify` says (a certificate that is presented must chain, or the handshake fails;
/// with `optional` the handlers decide, see [`VerifyClient`]).
pub fn api_server_config(
    cert: Arc<CertSlot>,
    trust: &Arc<Trust>,
    verify: VerifyClient,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let rustls_err = |source| Error::Rustls {
        what: "API server",
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?;
    let builder = match verify {
        VerifyClient::None => builder.with_no_client_auth(),
        VerifyClient::Optional | VerifyClient::Required => builder
            .with_client_cert_verifier(trust.client_verifier(verify == VerifyClient::Required)),
    };
    let mut config = builder.with_cert_resolver(cert.clone());
    config.session_storage = Arc::new(Sessions {
        trust: trust.clone(),
        cert,
        cache: RwLock::new(((0, 0), fresh_cache())),
    });
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The API's TLS sessions, for resumption, forgotten whenever the trusted CAs or the API's
/// certificate change: a resumed session skips the certificate checks of both sides, so a
/// client certificate of a CA no longer trusted (after `ca rotate --finish`), or a client
/// that would not trust the renewed certificate (HAProxy with the old CA alone), would go on
/// being accepted. (Without resumption at all every health check costs a full handshake.)
#[derive(Debug)]
struct Sessions {
    trust: Arc<Trust>,
    cert: Arc<CertSlot>,
    cache: RwLock<((u64, u64), Arc<ServerSessionMemoryCache>)>,
}

fn fresh_cache() -> Arc<ServerSessionMemoryCache> {
    ServerSessionMemoryCache::new(256)
}

impl Sessions {
    fn current(&self) -> Arc<ServerSessionMemoryCache> {
        let now = (self.trust.generation(), self.cert.generation());
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if cache.0 == now {
                return cache.1.clone();
            }
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.0 != now {
            *cache = (now, fresh_cache());
        }
        cache.1.clone()
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.current().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A client of the API: trusts only `ca_pem` and checks the server's name as webpki does
/// (the host or IP dialled must be in its certificate), presenting `client` (certificate
/// and key PEM) when given.
pub fn api_client_config(
    ca_pem: &str,
    client: Option<(&str, &Secret<String>)>,
) -> Result<Arc<ClientConfig>, Error> {
    let rustls_err = |source| Error::Rustls {
        what: "API client",
        source,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_root_certificates(ca_roots(ca_pem)?);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                parse_certs(cert, "the client certificate")?,
                parse_key(key, "the client key")?,
            )
            .map_err(rustls_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
