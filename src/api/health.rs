//! Patroni-compatible health checks (DESIGN §6), so HAProxy checks, load balancers and
//! Kubernetes probes written for Patroni work unchanged. The API gathers a [`HealthInput`]
//! per request; the pure [`check`] turns it into a status code and Patroni's status document.
//!
//! | path                                     | 200 iff                                                      |
//! |------------------------------------------|--------------------------------------------------------------|
//! | `/`, `/primary`, `/read-write`           | holds the lease (committed view), PostgreSQL runs, not in recovery |
//! | `/leader`                                | holds the lease (whatever PostgreSQL does); never on a witness |
//! | `/replica`                               | PostgreSQL runs in recovery, no `noloadbalance` tag, `?lag=` met |
//! | `/async`, `/asynchronous`                | `/replica` and not a recorded synchronous standby             |
//! | `/read-only`                             | `/primary` or `/replica`                                      |
//! | `/sync`, `/synchronous`                  | `/replica` and a recorded synchronous standby (`cluster::sync`) |
//! | `/health`                                | PostgreSQL runs                                              |
//! | `/readiness`                             | `/primary`, or a running replica within `?lag=` (default `maximum_lag_on_failover`) |
//! | `/patroni`                               | always (the status document)                                 |
//!
//! Everything else is 503. A witness (no PostgreSQL) has no status, so every role endpoint
//! answers 503; `/liveness` (in mod.rs) does not look at PostgreSQL.
//!
//! Query parameters, as Patroni's: `lag=<bytes | 16kB | 64MB | 1GB>`; `mode=apply|write`
//! (measure the replica by its replayed position, the default, or its received one);
//! `replication_state=streaming`; `tag_<key>=<value>`. Lag is the lease holder's WAL position,
//! from its status when fresh, minus this replica's: when the holder's position is unknown
//! (holder down or silent for `member_timeout + loop_wait`), a check with a lag limit fails.
//!
//! Synchronous standbys are the members of the rule the primary recorded for its tenure;
//! in asynchronous mode there are none, so `/sync` is 503 and `/async` is `/replica`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::cluster::{Lease, NodeId, Tags};
use crate::postgres::{Lsn, PgStatus};

/// The checks, one per meaning; several paths may share one (see [`Endpoint::PATHS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Primary,
    Leader,
    Replica,
    ReadOnly,
    Synchronous,
    Asynchronous,
    Health,
    Readiness,
    /// `/patroni`: the status document, always 200.
    Status,
}

impl Endpoint {
    /// Every health path the API serves, with its check.
    pub const PATHS: &'static [(&'static str, Endpoint)] = &[
        ("/", Endpoint::Primary),
        ("/primary", Endpoint::Primary),
        ("/read-write", Endpoint::Primary),
        ("/leader", Endpoint::Leader),
        ("/replica", Endpoint::Replica),
        ("/read-only", Endpoint::ReadOnly),
        ("/sync", Endpoint::Synchronous),
        ("/synchronous", Endpoint::Synchronous),
        ("/async", Endpoint::Asynchronous),
        ("/asynchronous", Endpoint::Asynchronous),
        ("/health", Endpoint::Health),
        ("/readiness", Endpoint::Readiness),
        ("/patroni", Endpoint::Status),
    ];
}

/// What a health check looks at, gathered by the API for each request.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthInput {
    pub me: NodeId,
    pub name: String,
    /// This member has no PostgreSQL.
    pub witness: bool,
    /// This member's PostgreSQL as of the last HA cycle; `None` for a witness or before the
    /// first cycle.
    pub pg: Option<PgStatus>,
    /// The committed lease.
    pub lease: Option<Lease>,
    pub tags: Tags,
    /// The lease holder's WAL position if it is a running primary with a fresh status (see
    /// [`primary_position`]); `None` when unknown.
    pub primary_position: Option<Lsn>,
    pub maximum_lag_on_failover: u64,
    /// This member is a recorded synchronous standby (synchronous or quorum mode).
    pub synchronous: bool,
}

impl HealthInput {
    fn holds_lease(&self) -> bool {
        !self.witness && self.lease.is_some_and(|l| l.holder == self.me)
    }

    fn running(&self) -> bool {
        self.pg.as_ref().is_some_and(|pg| pg.running)
    }

    /// Holds the lease and its PostgreSQL is a running, writable primary.
    fn is_primary(&self) -> bool {
        self.holds_lease() && self.pg.as_ref().is_some_and(PgStatus::is_writable)
    }

    fn is_running_replica(&self) -> bool {
        self.pg.as_ref().is_some_and(PgStatus::is_running_replica)
    }

    /// Bytes of WAL this replica has not replayed compared with the lease holder's position
    /// (what `?lag=` measures by default); `None` on a primary or when unknown.
    pub fn replica_lag(&self) -> Option<u64> {
        self.lag(LagMode::Apply)
    }

    /// Bytes of WAL this replica is behind the lease holder, measured per `mode`; `None` when
    /// this is not a running replica or either position is unknown.
    fn lag(&self, mode: LagMode) -> Option<u64> {
        let pg = self.pg.as_ref()?;
        let mine = match mode {
            LagMode::Apply => pg.replayed.or(pg.wal_position),
            LagMode::Write => pg.wal_position,
        }?;
        pg.lag_behind(mine, self.primary_position)
    }

    /// Whether the replica is within `limit` bytes (no limit: always); unknown lag fails.
    fn within(&self, limit: Option<u64>, mode: LagMode) -> bool {
        match limit {
            None => true,
            Some(limit) => self.lag(mode).is_some_and(|lag| lag <= limit),
        }
    }
}

/// Which position of a replica `?lag=` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum LagMode {
    /// Replayed: what queries on the replica see.
    #[default]
    Apply,
    /// Received (written): what survives a failover.
    Write,
}

/// The query parameters of a health check.
#[derive(Debug, Default)]
struct HealthQuery {
    lag: Option<u64>,
    mode: LagMode,
    replication_state: Option<String>,
    tags: Vec<(String, String)>,
}

fn parse_query(pairs: &[(String, String)]) -> Result<HealthQuery, String> {
    let mut query = HealthQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "lag" => query.lag = Some(parse_size(value)?),
            "mode" => {
                query.mode = match value.as_str() {
                    "apply" => LagMode::Apply,
                    "write" => LagMode::Write,
                    other => {
                        return Err(format!(
                            "mode={other:?} is not a lag mode; use apply or write"
                        ))
                    }
                }
            }
            "replication_state" => query.replication_state = Some(value.clone()),
            _ => {
                if let Some(tag) = key.strip_prefix("tag_") {
                    query.tags.push((tag.to_string(), value.clone()));
                }
                // Other parameters are ignored, as Patroni does.
            }
        }
    }
    Ok(query)
}

/// A size in bytes as PostgreSQL and Patroni write it: `1048576`, `1024kB`, `64MB`, `1GB`,
/// `1TB` (units are powers of 1024; their case is not significant).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad =
        || format!("lag={text:?} is not a size; write bytes or a number with kB, MB, GB or TB");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// The answer to one health check: 200 if this member is what `endpoint` asks for, 503 if
/// not, 400 for a malformed query; the body is always the status document (or the error).
pub fn check(
    endpoint: Endpoint,
    query: &[(String, String)],
    input: &HealthInput,
) -> (StatusCode, Value) {
    let query = match parse_query(query) {
        Ok(query) => query,
        Err(error) => return (StatusCode::BAD_REQUEST, json!({ "error": error })),
    };
    let replica = || {
        input.is_running_replica()
            && !input.tags.noloadbalance
            && input.within(query.lag, query.mode)
            && replication_state_matches(input, query.replication_state.as_deref())
            && tags_match(&input.tags, &query.tags)
    };
    let healthy = match endpoint {
        Endpoint::Primary => input.is_primary(),
        Endpoint::Leader => input.holds_lease(),
        Endpoint::Replica => replica(),
        Endpoint::Asynchronous => replica() && !input.synchronous,
        Endpoint::ReadOnly => input.is_primary() || replica(),
        Endpoint::Synchronous => replica() && input.synchronous,
        Endpoint::Health => input.running(),
        Endpoint::Readiness => {
            let limit = query.lag.unwrap_or(input.maximum_lag_on_failover);
            input.is_primary()
                || (input.is_running_replica() && input.within(Some(limit), query.mode))
        }
        Endpoint::Status => true,
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, status_document(input, query.mode))
}

fn replication_state(pg: &PgStatus) -> &'static str {
    if pg.streaming {
        "streaming"
    } else {
        "in archive recovery"
    }
}

fn replication_state_matches(input: &HealthInput, wanted: Option<&str>) -> bool {
    match (wanted, &input.pg) {
        (None, _) => true,
        (Some(wanted), Some(pg)) => replication_state(pg) == wanted,
        (Some(_), None) => false,
    }
}

/// Whether every `tag_<key>=<value>` matches this member's tags (compared as text, so
/// `tag_nofailover=true` and `tag_failover_priority=2` work); an unknown tag never matches.
fn tags_match(tags: &Tags, wanted: &[(String, String)]) -> bool {
    let Ok(Value::Object(mine)) = serde_json::to_value(tags) else {
        return wanted.is_empty();
    };
    wanted.iter().all(|(key, value)| match mine.get(key) {
        Some(Value::String(s)) => s == value,
        Some(other) => *other.to_string() == **value,
        None => false,
    })
}

/// Patroni's status document (`GET /patroni`), in our terms: `state`, `role`, `timeline`,
/// `xlog` positions as integers, `replication_state`, `lag` (bytes, replicas, per `mode`),
/// `pending_restart` (only when true), the lease epoch, and the tags.
fn status_document(input: &HealthInput, mode: LagMode) -> Value {
    let mut doc = Map::new();
    doc.insert("name".into(), json!(input.name));
    let (state, role) = match &input.pg {
        _ if input.witness => ("unknown", "witness"),
        None => ("unknown", "unknown"),
        Some(pg) if !pg.running => ("stopped", "unknown"),
        Some(pg) if pg.in_recovery => ("running", "replica"),
        Some(_) => ("running", "primary"),
    };
    doc.insert("state".into(), json!(state));
    doc.insert("role".into(), json!(role));
    if let Some(pg) = input.pg.as_ref().filter(|pg| pg.running) {
        if pg.timeline != 0 {
            doc.insert("timeline".into(), json!(pg.timeline));
        }
        let position = |lsn: Option<Lsn>| lsn.map(|l| l.0);
        if pg.in_recovery {
            doc.insert(
                "xlog".into(),
                json!({
                    "received_location": position(pg.wal_position),
                    "replayed_location": position(pg.replayed),
                }),
            );
            doc.insert("replication_state".into(), json!(replication_state(pg)));
            doc.insert("lag".into(), json!(input.lag(mode)));
        } else {
            doc.insert(
                "xlog".into(),
                json!({ "location": position(pg.wal_position) }),
            );
        }
        if pg.pending_restart {
            doc.insert("pending_restart".into(), json!(true));
        }
    }
    match &input.lease {
        Some(lease) => {
            doc.insert("lease_epoch".into(), json!(lease.epoch.0));
            doc.insert("lease_holder".into(), json!(lease.holder == input.me));
        }
        None => {
            doc.insert("cluster_unlocked".into(), json!(true));
        }
    }
    doc.insert("tags".into(), json!(input.tags));
    Value::Object(doc)
}

/// The lease holder's WAL position, if `statuses` shows it as a running primary.
pub fn primary_position(
    lease: Option<&Lease>,
    statuses: &BTreeMap<NodeId, PgStatus>,
) -> Option<Lsn> {
    let pg = statuses.get(&lease?.holder)?;
    if pg.is_writable() {
        pg.wal_position
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
