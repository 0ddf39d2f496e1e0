//! What the pooler reads of PostgreSQL's roles.

use super::client::sql;
use super::{Error, Postgres};

impl Postgres {
    /// The stored password verifier of login role `name` (`SCRAM-SHA-256$...`, or an md5
    /// one), read as superuser over the local socket; `None` for a role that does not
    /// exist, may not log in, has expired or has no password. Roles replicate, so a replica
    /// answers as the primary would.
    pub async fn role_verifier(&self, name: &str) -> Result<Option<String>, Error> {
        let client = self.connect().await?;
        let rows = sql(
            "reading a role's password verifier",
            client.query(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin \
                 AND rolpassword IS NOT NULL \
                 AND (rolvaliduntil IS NULL OR rolvaliduntil > now())",
                &[&name],
            ),
        )
        .await?;
        Ok(rows.first().map(|row| row.get(0)))
    }
}
