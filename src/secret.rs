//! A wrapper that keeps secrets out of logs.
//!
//! `Secret<T>` prints `***` through both `Debug` and `Display`, so a secret that ends up in a
//! `tracing` field, an error message or a `{:?}` dump does not leak. Reading the value takes
//! an explicit [`Secret::expose`], which makes every use easy to find in review.

use std::fmt;

/// A value that must not appear in logs, error messages or `ps` output.
///
/// `Debug` and `Display` print `***`; the inner value is reachable only through
/// [`Secret::expose`]. Equality is deliberately not derived: comparing secrets should be done
/// in constant time by the caller (see `tls::token::secret_matches`).
#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`. Does no copying or zeroing beyond moving it.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Returns the secret value. Every call is a place where the secret can leak, so keep the
    /// borrow short and never log what it returns.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_redact_the_value() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
