//! What the pooler reads of PostgreSQL's roles.

use std::sync::Arc;

use tokio_postgres::Client;

use super::client::sql;
use super::{Error, Postgres};

const VERIFIER_QUERY: &str = "SELECT rolpassword FROM pg_authid WHERE rolname = $1 \
     AND rolcanlogin AND rolpassword IS NOT NULL \
     AND (rolvaliduntil IS NULL OR rolvaliduntil > now())";

impl Postgres {
    /// The stored password verifier of login role `name` (`SCRAM-SHA-256$...`, or an md5
    /// one), read as superuser over the local socket; `None` for a role that does not
    /// exist, may not log in, has expired or has no password. Roles replicate, so a replica
    /// answers as the primary would.
    pub async fn role_verifier(&self, name: &str) -> Result<Option<String>, Error> {
        let client = self.connect().await?;
        verifier_on(&client, name).await
    }
}

async fn verifier_on(client: &Client, name: &str) -> Result<Option<String>, Error> {
    let rows = sql(
        "reading a role's password verifier",
        client.query(VERIFIER_QUERY, &[&name]),
    )
    .await?;
    Ok(rows.first().map(|row| row.get(0)))
}

/// [`Postgres::role_verifier`] on one kept connection: a login through the pooler costs a
/// query, not a new PostgreSQL backend. The connection is opened on first use and again
/// after it fails (PostgreSQL restarted, the member was rewound).
pub struct RoleLookup {
    postgres: Arc<Postgres>,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl RoleLookup {
    pub fn new(postgres: Arc<Postgres>) -> RoleLookup {
        RoleLookup {
            postgres,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn verifier(&self, name: &str) -> Result<Option<String>, Error> {
        let mut kept = self.client.lock().await;
        let client = match kept.take() {
            Some(client) if !client.is_closed() => client,
            _ => self.postgres.connect().await?,
        };
        let found = verifier_on(&client, name).await;
        // A failed query may have been the connection's: the next lookup opens another.
        if found.is_ok() {
            *kept = Some(client);
        }
        found
    }
}
