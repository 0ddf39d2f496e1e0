//! The CAs a member signs with and trusts: the cluster CA and, while `pgquorum ca rotate`
//! runs, the one replacing it (see `crate::ca_rotation`).
//!
//! ```text
//!               signs service certs   signs node certs   trusted
//!  normally     current               current            current
//!  rotating     current               next               current + next
//! ```

use std::sync::{Arc, RwLock};

use super::{ClusterCa, Error, Trust};

/// The signing CAs and the [`Trust`] that follows them. Shared by everything that issues or
/// verifies a certificate, so a rotation's step reaches them all at once.
#[derive(Debug)]
pub struct Authority {
    cas: RwLock<Cas>,
    trust: Arc<Trust>,
}

#[derive(Debug, Clone)]
struct Cas {
    current: ClusterCa,
    next: Option<ClusterCa>,
}

impl Cas {
    fn same(&self, current: &ClusterCa, next: Option<&ClusterCa>) -> bool {
        let sha = |ca: Option<&ClusterCa>| ca.map(ClusterCa::sha256_hex);
        sha(Some(&self.current)) == sha(Some(current)) && sha(self.next.as_ref()) == sha(next)
    }

    /// The certificates of both CAs, PEM: what is trusted.
    fn bundle(&self) -> String {
        let mut pem = self.current.cert_pem().trim_end().to_string();
        if let Some(next) = &self.next {
            pem.push('\n');
            pem.push_str(next.cert_pem().trim_end());
        }
        pem.push('\n');
        pem
    }
}

impl Authority {
    /// Signs with `current` (node certificates with `next` when given) and trusts both.
    pub fn new(current: ClusterCa, next: Option<ClusterCa>) -> Result<Arc<Self>, Error> {
        let cas = Cas { current, next };
        let trust = Trust::new(&cas.bundle())?;
        Ok(Arc::new(Self {
            cas: RwLock::new(cas),
            trust,
        }))
    }

    /// Moves to `current` and `next`; false (and nothing done) if they are the ones in use.
    pub fn set(&self, current: ClusterCa, next: Option<ClusterCa>) -> Result<bool, Error> {
        let cas = Cas { current, next };
        let mut held = self.cas.write().unwrap_or_else(|e| e.into_inner());
        if held.same(&cas.current, cas.next.as_ref()) {
            return Ok(false);
        }
        self.trust.replace(&cas.bundle())?;
        *held = cas;
        Ok(true)
    }

    /// Whether `current` and `next` are the CAs in use (by their certificates' hashes).
    pub fn holds(&self, current: &ClusterCa, next: Option<&ClusterCa>) -> bool {
        let cas = self.cas.read().unwrap_or_else(|e| e.into_inner());
        cas.same(current, next)
    }

    fn read(&self) -> Cas {
        self.cas.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cluster CA: it signs the API's and PostgreSQL's certificates, and join tokens
    /// pin it.
    pub fn current(&self) -> ClusterCa {
        self.read().current
    }

    /// The CA replacing the current one, while a rotation runs.
    pub fn next(&self) -> Option<ClusterCa> {
        self.read().next
    }

    /// The CA that signs node certificates: the next one while a rotation runs.
    pub fn node_issuer(&self) -> ClusterCa {
        let cas = self.read();
        cas.next.unwrap_or(cas.current)
    }

    /// The trusted CA certificates, PEM (`pgquorum ca export`).
    pub fn bundle(&self) -> String {
        self.read().bundle()
    }

    /// What the verifiers trust (always [`Authority::bundle`]).
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }
}
