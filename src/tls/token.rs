//! Join tokens: `pgq1.<ca-sha256>.<id>.<secret>`, in the spirit of kubeadm's bootstrap tokens.
//!
//! The CA hash lets the joiner authenticate the cluster (it pins the CA, see
//! [`super::pinned_client_config`]); the secret lets the cluster authenticate the joiner. The
//! cluster stores only [`JoinTokenString::secret_sha256_hex`] and checks a presented secret
//! with [`secret_matches`], in constant time.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use subtle::ConstantTimeEq;

use super::sha256_hex;
use crate::secret::Secret;

const VERSION: &str = "pgq1";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const HINT: &str = "copy the whole token printed by pgquorum init or pgquorum token create";

/// A parsed or freshly generated join token.
///
/// `Display` prints the whole token, secret included: it is shown to the operator once and
/// must not be logged. `Debug` redacts the secret.
#[derive(Clone)]
pub struct JoinTokenString {
    ca_sha256: String,
    id: String,
    secret: Secret<String>,
}

impl JoinTokenString {
    /// A token for the CA whose certificate hashes to `ca_sha256` (64 hex characters, as
    /// returned by `ClusterCa::sha256_hex`), with a random 6-character id and a random
    /// 16-character secret (about 82 bits) from `[a-z0-9]`.
    pub fn generate(ca_sha256: &str) -> Self {
        Self {
            ca_sha256: ca_sha256.to_ascii_lowercase(),
            id: random_string(ID_LEN),
            secret: Secret::new(random_string(SECRET_LEN)),
        }
    }

    /// The pinned CA hash, lowercase hex.
    pub fn ca_sha256(&self) -> &str {
        &self.ca_sha256
    }

    /// The public token id, used to look up the stored hash and to revoke the token.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half of the token.
    pub fn secret(&self) -> &Secret<String> {
        &self.secret
    }

    /// Lowercase hex SHA-256 of the secret: what the cluster stores instead of the secret.
    pub fn secret_sha256_hex(&self) -> String {
        sha256_hex(self.secret.expose().as_bytes())
    }
}

/// Returns true if and only if `secret` hashes to `expected_sha256_hex` (hex, any case).
///
/// The digests are compared in constant time, so the comparison leaks nothing about how much
/// of a guess was right. A malformed `expected_sha256_hex` never matches.
pub fn secret_matches(secret: &str, expected_sha256_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_sha256_hex) else {
        return false;
    };
    let actual = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    // Lengths are public (32 bytes); ct_eq on slices of different lengths returns false.
    bool::from(actual.as_ref().ct_eq(&expected))
}

fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(CHARSET[rng.random_range(0..CHARSET.len())]))
        .collect()
}

impl fmt::Display for JoinTokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION}.{}.{}.{}",
            self.ca_sha256,
            self.id,
            self.secret.expose()
        )
    }
}

impl fmt::Debug for JoinTokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenString")
            .field("ca_sha256", &self.ca_sha256)
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Why a string is not a join token. Messages are one line, name the problem and the fix,
/// and never include the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not four dot-separated parts.
    #[error(
        "malformed join token: expected pgq1.<ca-sha256>.<id>.<secret> (4 dot-separated \
         parts), got {got}; {HINT}"
    )]
    PartCount {
        /// How many parts were found.
        got: usize,
    },

    /// The first part is not `pgq1`.
    #[error(
        "unsupported join token version {got:?}: expected pgq1; create a new token with \
         pgquorum token create on a cluster member"
    )]
    Version {
        /// The first part, truncated to 8 characters.
        got: String,
    },

    /// The CA hash is not 64 hex characters.
    #[error(
        "malformed join token: the CA hash (2nd part) must be 64 hex characters, got {len} \
         characters{}; {HINT}",
        if *.hex { "" } else { " that are not all hex" }
    )]
    CaHash {
        /// Its length in bytes.
        len: usize,
        /// Whether every character was a hex digit.
        hex: bool,
    },

    /// The id is not 6 characters from `[a-z0-9]`.
    #[error(
        "malformed join token: the id (3rd part) must be 6 characters from [a-z0-9], got \
         {got:?}; {HINT}"
    )]
    Id {
        /// The id as given (public, not secret), truncated to 16 characters.
        got: String,
    },

    /// The secret is not 16 characters from `[a-z0-9]`.
    #[error(
        "malformed join token: the secret (4th part) must be 16 characters from [a-z0-9], got \
         {len} characters{}; {HINT}",
        if *.charset_ok { "" } else { " including others" }
    )]
    Secret {
        /// Its length in bytes.
        len: usize,
        /// Whether every character was in `[a-z0-9]`.
        charset_ok: bool,
    },
}

impl FromStr for JoinTokenString {
    type Err = TokenError;

    /// Parses `pgq1.<ca-sha256>.<id>.<secret>`, ignoring surrounding whitespace (a pasted
    /// newline). The CA hash may be in either case and is stored lowercase.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [version, ca_sha256, id, secret] = parts[..] else {
            return Err(TokenError::PartCount { got: parts.len() });
        };
        if version != VERSION {
            return Err(TokenError::Version {
                got: version.chars().take(8).collect(),
            });
        }
        let hex = ca_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if ca_sha256.len() != 64 || !hex {
            return Err(TokenError::CaHash {
                len: ca_sha256.len(),
                hex,
            });
        }
        if !is_token_part(id, ID_LEN) {
            return Err(TokenError::Id {
                got: id.chars().take(16).collect(),
            });
        }
        if !is_token_part(secret, SECRET_LEN) {
            return Err(TokenError::Secret {
                len: secret.len(),
                charset_ok: secret.bytes().all(|b| CHARSET.contains(&b)),
            });
        }
        Ok(Self {
            ca_sha256: ca_sha256.to_ascii_lowercase(),
            id: id.to_owned(),
            secret: Secret::new(secret.to_owned()),
        })
    }
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| CHARSET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &str) -> Result<JoinTokenString, TokenError> {
        s.parse()
    }

    #[test]
    fn generated_token_round_trips_through_display_and_from_str() {
        let token = JoinTokenString::generate(CA);
        let text = token.to_string();
        assert!(text.starts_with("pgq1."), "{text}");
        let parsed = parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed.ca_sha256(), CA);
        assert_eq!(parsed.id(), token.id());
        assert_eq!(parsed.secret().expose(), token.secret().expose());
        assert_eq!(parsed.to_string(), text);
        assert_eq!(token.id().len(), 6);
        assert_eq!(token.secret().expose().len(), 16);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let token = JoinTokenString::generate(CA);
        let debug = format!("{token:?}");
        assert!(!debug.contains(token.secret().expose().as_str()), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn uppercase_ca_hash_is_accepted_and_normalized() {
        let token = parse(&format!(
            "pgq1.{}.abc123.0123456789abcdef",
            CA.to_uppercase()
        ))
        .unwrap();
        assert_eq!(token.ca_sha256(), CA);
    }

    #[test]
    fn malformed_tokens_are_rejected_with_a_message_naming_the_problem() {
        let cases: &[(&str, String, TokenError, &str)] = &[
            (
                "two parts",
                "abc123.0123456789abcdef".into(),
                TokenError::PartCount { got: 2 },
                "(4 dot-separated parts), got 2; copy the whole token",
            ),
            (
                "five parts",
                format!("pgq1.{CA}.abc123.0123456789abcdef.x"),
                TokenError::PartCount { got: 5 },
                "got 5",
            ),
            (
                "wrong version",
                format!("pgq2.{CA}.abc123.0123456789abcdef"),
                TokenError::Version { got: "pgq2".into() },
                "unsupported join token version \"pgq2\"",
            ),
            (
                "short ca hash",
                "pgq1.abcd.abc123.0123456789abcdef".into(),
                TokenError::CaHash { len: 4, hex: true },
                "must be 64 hex characters, got 4 characters;",
            ),
            (
                "non-hex ca hash",
                format!("pgq1.{}.abc123.0123456789abcdef", CA.replace('a', "g")),
                TokenError::CaHash {
                    len: 64,
                    hex: false,
                },
                "not all hex",
            ),
            (
                "uppercase id",
                format!("pgq1.{CA}.ABC123.0123456789abcdef"),
                TokenError::Id {
                    got: "ABC123".into(),
                },
                "the id (3rd part) must be 6 characters from [a-z0-9], got \"ABC123\"",
            ),
            (
                "short secret",
                format!("pgq1.{CA}.abc123.0123"),
                TokenError::Secret {
                    len: 4,
                    charset_ok: true,
                },
                "got 4 characters;",
            ),
            (
                "secret with punctuation",
                format!("pgq1.{CA}.abc123.0123456789abcde!"),
                TokenError::Secret {
                    len: 16,
                    charset_ok: false,
                },
                "including others",
            ),
        ];
        for (name, input, want, fragment) in cases {
            let err = parse(input)
                .err()
                .unwrap_or_else(|| panic!("{name}: parsed {input:?}"));
            assert_eq!(&err, want, "{name}");
            let msg = err.to_string();
            assert!(msg.contains(fragment), "{name}: {msg:?} lacks {fragment:?}");
            assert!(
                !msg.contains('\n'),
                "{name}: message is not one line: {msg:?}"
            );
            assert!(
                !msg.contains("0123456789abcde"),
                "{name}: message leaks the secret"
            );
        }
    }

    #[test]
    fn secret_matches_only_the_hashed_secret() {
        let token = JoinTokenString::generate(CA);
        let stored = token.secret_sha256_hex();
        assert_eq!(stored.len(), 64);
        assert!(secret_matches(token.secret().expose(), &stored));
        assert!(secret_matches(
            token.secret().expose(),
            &stored.to_uppercase()
        ));
        assert!(!secret_matches("0000000000000000", &stored));
        assert!(!secret_matches(token.secret().expose(), &stored[..62]));
        assert!(!secret_matches(token.secret().expose(), "not hex"));
        assert!(!secret_matches(token.secret().expose(), ""));
    }
}
