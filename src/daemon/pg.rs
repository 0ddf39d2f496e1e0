//! This member's supervised PostgreSQL: how it is built from the config file, and the
//! warning when its OS user could read the daemon's secrets.

use crate::config::{NodeConfig, PostgresqlConfig};
use crate::identity::StateDir;
use crate::postgres::{self, Postgres};
use crate::secret::Secret;
use anyhow::Context;

/// The supervised PostgreSQL of this member.
pub(super) fn postgres_for(
    config: &NodeConfig,
    pg: &PostgresqlConfig,
    state: &StateDir,
    replication_password: &Secret<String>,
    rewind_password: &Secret<String>,
) -> anyhow::Result<Postgres> {
    let settings = postgres::Settings {
        bin_dir: pg.bin_dir.clone(),
        data_dir: pg.data_dir.clone(),
        listen_host: pg.listen.ip().to_string(),
        port: pg.listen.port(),
        socket_dir: state.path().join("run"),
        os_user: pg.os_user.clone(),
        passfile: state.path().join("pgpass"),
        log_file: state.path().join("postgresql.log"),
        tls: pg
            .tls
            .then(|| postgres::TlsFiles::in_dir(&state.path().join("pgtls"))),
        backrest_dir: state.path().join("pgbackrest"),
        backrest_server: pg.tls.then(|| postgres::BackrestServer {
            listen: std::net::SocketAddr::new(pg.listen.ip(), pg.backrest_port),
            advertise_host: advertised_host(&pg.advertise),
        }),
    };
    let creds = postgres::ReplicationCredentials {
        user: "pgquorum_replicator".into(),
        password: replication_password.clone(),
        rewind_password: rewind_password.clone(),
    };
    Postgres::new(settings, creds)
        .with_context(|| format!("[postgresql] in {}", config.path.display()))
}

/// Says so when PostgreSQL's OS user can read one of the daemon's secrets: a superuser role
/// could then read it with `pg_read_file` or `COPY ... TO PROGRAM`.
pub(super) fn warn_of_exposed_secrets(pg: &Postgres, state: &StateDir) {
    match pg.os_uid() {
        None => tracing::warn!(
            state_dir = %state.path().display(),
            "PostgreSQL runs as the daemon's own OS user, so any PostgreSQL superuser can read \
             this member's secrets (CA key, node key, admin token); run the daemon as a user of \
             its own with the capabilities to switch (the packaged unit runs it as pgquorum) or \
             as root"
        ),
        Some(uid) => {
            for path in state.exposed_secrets(uid) {
                tracing::warn!(
                    path = %path.display(),
                    "PostgreSQL's OS user can read this secret; make it 0600 and the daemon's \
                     user's (chown, chmod), or restart the daemon under the packaged unit, which \
                     does it"
                );
            }
        }
    }
}

/// The host part of an advertised `host:port` (an IPv6 address without its brackets).
fn advertised_host(advertise: &str) -> String {
    let host = advertise
        .rsplit_once(':')
        .map_or(advertise, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}
