//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for the pooler, at both ends, from a role's verifier
//! as `pg_authid` keeps it (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`).
//!
//! As the server a client logs in to, [`ServerExchange`] checks the client's proof; the
//! proof also yields the client's ClientKey. As a client of PostgreSQL, [`KeyedClient`]
//! proves the same role with that ClientKey. So the pooler logs in to PostgreSQL as the
//! client's role without ever holding a password (PgBouncer's SCRAM pass-through).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac};
use subtle::ConstantTimeEq as _;

/// How a SCRAM exchange went wrong. Messages are for the server log; a client is told only
/// that authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("the role's password is not a SCRAM-SHA-256 verifier")]
    NotScram,
    #[error("channel binding (SCRAM-SHA-256-PLUS) is not supported")]
    ChannelBinding,
    #[error("the nonce does not continue the exchange's")]
    Nonce,
    #[error("wrong password")]
    Proof,
    #[error("the server's signature does not match: it does not know the role's verifier")]
    ServerSignature,
}

/// A role's SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl std::str::FromStr for Verifier {
    type Err = ScramError;

    fn from_str(text: &str) -> Result<Verifier, ScramError> {
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::NotScram)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::NotScram)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::NotScram)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::NotScram)?;
        let key = |b64: &str| -> Result<[u8; 32], ScramError> {
            let bytes = B64.decode(b64).map_err(|_| ScramError::NotScram)?;
            bytes.try_into().map_err(|_| ScramError::NotScram)
        };
        Ok(Verifier {
            iterations: iterations.parse().map_err(|_| ScramError::NotScram)?,
            salt: B64.decode(salt).map_err(|_| ScramError::NotScram)?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, data);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    (digest::digest(&digest::SHA256, data).as_ref())
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The value of attribute `name` (`r=...`) in a comma-separated SCRAM message.
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// A fresh nonce: 18 random bytes in base64 (printable, no comma).
pub fn nonce() -> String {
    B64.encode(rand::random::<[u8; 18]>())
}

/// The server's side of one exchange, after the client's first message.
pub struct ServerExchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The GS2 header the client sent, which its final message must echo (base64).
    channel: String,
}

impl ServerExchange {
    /// Starts from the client-first message (`n,,n=,r=<nonce>`), adding `server_nonce` to
    /// the client's nonce. A client that asks for channel binding (`p=`) is refused; one
    /// that could bind but thinks the server cannot (`y,,`) is accepted.
    pub fn start(
        verifier: Verifier,
        client_first: &str,
        server_nonce: &str,
    ) -> Result<ServerExchange, ScramError> {
        let (header, bare) = if let Some(bare) = client_first.strip_prefix("n,,") {
            ("n,,", bare)
        } else if let Some(bare) = client_first.strip_prefix("y,,") {
            ("y,,", bare)
        } else if client_first.starts_with("p=") {
            return Err(ScramError::ChannelBinding);
        } else {
            return Err(ScramError::Malformed("GS2 header"));
        };
        let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed("client nonce"))?;
        if client_nonce.is_empty() || attribute(bare, 'm').is_some() {
            return Err(ScramError::Malformed("client-first message"));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok(ServerExchange {
            verifier,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            channel: B64.encode(header),
        })
    }

    /// The server-first message to send.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message (`c=..,r=..,p=<proof>`); returns the server-final
    /// message to send and the client's ClientKey.
    pub fn finish(&self, client_final: &str) -> Result<(String, [u8; 32]), ScramError> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client proof"))?;
        if attribute(without_proof, 'c') != Some(self.channel.as_str()) {
            return Err(ScramError::Malformed("channel binding data"));
        }
        if attribute(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = (B64.decode(proof).ok())
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("client proof"))?;
        let auth = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth.as_bytes());
        let client_key = xor(&proof, &signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)), client_key))
    }
}

/// A client proving a role with its ClientKey (from [`ServerExchange::finish`]) and
/// checking the server with the ServerKey of the same verifier.
pub struct KeyedClient {
    client_key: [u8; 32],
    server_key: [u8; 32],
    nonce: String,
    auth: Option<String>,
}

impl KeyedClient {
    pub fn new(client_key: [u8; 32], server_key: [u8; 32], nonce: String) -> KeyedClient {
        KeyedClient {
            client_key,
            server_key,
            nonce,
            auth: None,
        }
    }

    /// The client-first message (PostgreSQL takes the role from the startup message).
    pub fn client_first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    /// The client-final message for the server-first one.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let nonce = attribute(server_first, 'r').ok_or(ScramError::Malformed("server nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n=,r={},{server_first},{without_proof}", self.nonce);
        let stored_key = sha256(&self.client_key);
        let signature = hmac_sha256(&stored_key, auth.as_bytes());
        let proof = xor(&self.client_key, &signature);
        self.auth = Some(auth);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server knows the verifier.
    pub fn verify_server(&self, server_final: &str) -> Result<(), ScramError> {
        let auth = self
            .auth
            .as_ref()
            .ok_or(ScramError::Malformed("out of order"))?;
        let got = attribute(server_final, 'v')
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("server signature"))?;
        let want = hmac_sha256(&self.server_key, auth.as_bytes());
        match bool::from(want.as_slice().ct_eq(&got)) {
            true => Ok(()),
            false => Err(ScramError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier PostgreSQL would store for `password` with `salt` and `iterations`.
    fn verifier_of(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).unwrap(),
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// RFC 7677 section 3, user "user", password "pencil".
    #[test]
    fn the_rfc_7677_exchange_is_accepted_and_signed_as_the_rfc_says() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = verifier_of("pencil", &salt, 4096);
        let exchange = ServerExchange::start(
            verifier.clone(),
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            exchange.server_first(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (server_final, client_key) = exchange
            .finish(
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(sha256(&client_key), verifier.stored_key);
    }

    #[test]
    fn a_wrong_password_a_replayed_nonce_and_channel_binding_are_refused() {
        let verifier = verifier_of("pencil", b"0123456789abcdef", 4096);
        let wrong = verifier_of("pencil2", b"0123456789abcdef", 4096);
        let start = |v: &Verifier| ServerExchange::start(v.clone(), "n,,n=,r=abc", "XYZ").unwrap();
        let mut client = KeyedClient::new(
            xor(&[0; 32], &hmac_sha256(&[0; 32], b"x")),
            wrong.server_key,
            "abc".into(),
        );
        let exchange = start(&verifier);
        let final_ = client.client_final(exchange.server_first()).unwrap();
        assert_eq!(exchange.finish(&final_), Err(ScramError::Proof));
        let replay = final_.replace("r=abcXYZ", "r=abcOLD");
        assert_eq!(exchange.finish(&replay), Err(ScramError::Nonce));
        assert_eq!(
            ServerExchange::start(verifier.clone(), "p=tls-server-end-point,,n=,r=a", "b").err(),
            Some(ScramError::ChannelBinding)
        );
        for garbage in ["", "n,", "x,,n=,r=a", "n,,n=,r="] {
            assert!(
                ServerExchange::start(verifier.clone(), garbage, "b").is_err(),
                "{garbage:?}"
            );
        }
        assert!(exchange.finish("c=biws,r=abcXYZ").is_err());
        assert!(exchange.finish("c=biws,r=abcXYZ,p=!!").is_err());
        assert_eq!(
            "md5abc".parse::<Verifier>().err(),
            Some(ScramError::NotScram)
        );
    }

    /// A real client (postgres-protocol's, with the password) logs in to the pooler; the
    /// ClientKey that yields logs in again, to a server holding the same verifier, with no
    /// password: what the pooler does with PostgreSQL.
    #[test]
    fn the_client_key_a_login_yields_logs_in_again_without_the_password() {
        let text = postgres_protocol::password::scram_sha_256(b"correct horse");
        let verifier: Verifier = text.parse().unwrap();
        let mut real = postgres_protocol::authentication::sasl::ScramSha256::new(
            b"correct horse",
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let first = String::from_utf8(real.message().to_vec()).unwrap();
        let exchange = ServerExchange::start(verifier.clone(), &first, &nonce()).unwrap();
        real.update(exchange.server_first().as_bytes()).unwrap();
        let final_ = String::from_utf8(real.message().to_vec()).unwrap();
        let (server_final, client_key) = exchange.finish(&final_).unwrap();
        real.finish(server_final.as_bytes()).unwrap();

        let mut keyed = KeyedClient::new(client_key, verifier.server_key, nonce());
        let again = ServerExchange::start(verifier, &keyed.client_first(), &nonce()).unwrap();
        let final_ = keyed.client_final(again.server_first()).unwrap();
        let (server_final, _) = again.finish(&final_).unwrap();
        keyed.verify_server(&server_final).unwrap();
        assert_eq!(
            keyed.verify_server("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
    }
}
