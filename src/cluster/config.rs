//! The cluster-wide dynamic configuration, replicated through Raft and changed with
//! `Command::SetConfig`. Per-host settings live in the node's TOML file instead
//! (`config::NodeConfig`); the type names keep the split visible (STYLE §2.9).

use std::collections::BTreeMap;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::{Deserialize, Serialize};

use super::backup::{BackupConfig, BACKUP_PARAMETERS};

/// How the supervisor manages `synchronous_standby_names`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousMode {
    /// Asynchronous replication only.
    #[default]
    Off,
    /// `synchronous_node_count` named standbys, each of which must confirm every commit
    /// (Patroni's `synchronous_mode: on`); failover only to one of them.
    On,
    /// Quorum commit: every streaming standby is listed and `synchronous_node_count` of them
    /// confirm each commit (`ANY k (..)`); failover to the most advanced member of any
    /// group that must hold every commit.
    Quorum,
}

/// Cluster-wide settings, with Patroni's key names. Durations are written `"2s"`,
/// `"500ms"`; omitted keys take their defaults and unknown keys are an error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicConfig {
    /// How long a lease lives without a committed renewal before another member may take it.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Period of the HA loop, and so of lease renewals.
    #[serde(with = "humantime_serde")]
    pub loop_wait: Duration,
    /// How long a Raft proposal or a PostgreSQL call may take before it is treated as failed.
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// How long a peer may stay silent before its status is treated as unknown.
    #[serde(with = "humantime_serde")]
    pub member_timeout: Duration,
    /// A replica further behind the primary than this many bytes of WAL is not promoted.
    pub maximum_lag_on_failover: u64,
    pub synchronous_mode: SynchronousMode,
    /// In synchronous mode, block writes rather than fall back to asynchronous replication
    /// when no synchronous standby is available.
    pub synchronous_mode_strict: bool,
    /// How many standbys confirm each commit in synchronous or quorum mode.
    pub synchronous_node_count: u32,
    /// PostgreSQL parameters applied on every member.
    pub postgresql_parameters: BTreeMap<String, String>,
    /// The operator's `pg_hba.conf` rules for client connections (Patroni's
    /// `postgresql.pg_hba`), one rule per entry. When given they replace pgquorum's default
    /// catch-all rules (`host all all 0.0.0.0/0 scram-sha-256`, and `::/0`); the local socket
    /// and the members' own replication and rewind rules always come first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
    /// When pg_rewind cannot bring a former primary back (it failed part-way), clone it
    /// afresh from the primary. The old data directory is moved aside (renamed
    /// `<data dir>.rewind-failed-<unix time>`), never deleted. Off: the member stays out
    /// and `list` and the log say why (Patroni's key, same default).
    pub remove_data_directory_on_rewind_failure: bool,
    /// How long the lease holder tries to restart a crashed PostgreSQL in place before it
    /// releases the lease so another member takes over (Patroni's primary_start_timeout,
    /// whose 300 s default is what users complain about).
    #[serde(with = "humantime_serde")]
    pub primary_start_timeout: Duration,
    /// How long a switchover lets transactions open on the primary finish before it stops
    /// it (poolers hold new ones meanwhile); those still open then are cut. Not written
    /// while it is the default, so that older members can still read the state.
    #[serde(
        with = "humantime_serde",
        skip_serializing_if = "is_default_switchover_drain"
    )]
    pub switchover_drain_timeout: Duration,
    /// Backups, WAL archiving and restores with pgBackRest (`None`: no repository; WAL is
    /// not archived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfig>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: Duration::from_secs(2),
            loop_wait: Duration::from_millis(500),
            retry_timeout: Duration::from_secs(1),
            member_timeout: Duration::from_secs(1),
            maximum_lag_on_failover: 1024 * 1024,
            synchronous_mode: SynchronousMode::Off,
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            postgresql_parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            remove_data_directory_on_rewind_failure: false,
            primary_start_timeout: Duration::from_secs(5),
            switchover_drain_timeout: DEFAULT_SWITCHOVER_DRAIN,
            backup: None,
        }
    }
}

const DEFAULT_SWITCHOVER_DRAIN: Duration = Duration::from_secs(5);

fn is_default_switchover_drain(d: &Duration) -> bool {
    *d == DEFAULT_SWITCHOVER_DRAIN
}

/// PostgreSQL parameters that pgquorum sets itself and a user may not override.
pub const MANAGED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_permissions",
    "wal_level",
    "hot_standby",
    "wal_log_hints",
    "max_wal_senders",
    "max_replication_slots",
    "wal_keep_size",
    "wal_keep_segments",
    "hot_standby_feedback",
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
];

/// The connection types a `pg_hba.conf` rule starts with.
const HBA_TYPES: [&str; 6] = [
    "local",
    "host",
    "hostssl",
    "hostnossl",
    "hostgssenc",
    "hostnogssenc",
];

/// One operator rule for `pg_hba.conf`: a single line, a known connection type, at least
/// database, user and method, and no `include` of another file.
fn check_hba_rule(rule: &str) -> Result<(), String> {
    if rule.chars().any(char::is_control) {
        return Err(format!(
            "pg_hba rule {rule:?} holds a newline or another control character; give one rule \
             per list entry"
        ));
    }
    let words: Vec<&str> = rule.split_whitespace().collect();
    match words.first() {
        Some(kind) if HBA_TYPES.contains(kind) => {}
        Some(kind) if kind.starts_with("include") => {
            return Err(format!(
                "pg_hba rule {rule:?} includes another file; write the rules themselves"
            ))
        }
        _ => {
            return Err(format!(
                "pg_hba rule {rule:?} does not start with a connection type ({}); for example \
                 \"hostssl all all 10.0.0.0/8 scram-sha-256\"",
                HBA_TYPES.join(", ")
            ))
        }
    }
    let needed = if words[0] == "local" { 4 } else { 5 };
    if words.len() < needed {
        return Err(format!(
            "pg_hba rule {rule:?} is incomplete: a {} rule needs type, database, user, {}method",
            words[0],
            if words[0] == "local" { "" } else { "address, " }
        ));
    }
    Ok(())
}

/// Configuration-file directives that read other files: never accepted as parameters.
pub const INCLUDE_DIRECTIVES: &[&str] = &["include", "include_dir", "include_if_exists"];

impl DynamicConfig {
    /// How long a peer's status answer counts as fresh: one poll interval plus the time a
    /// poll may take. Older answers are kept, but readers do not trust them.
    pub fn status_horizon(&self) -> Duration {
        self.member_timeout + self.loop_wait
    }

    /// Checks the rules that keep the lease safe and the parameters well-formed. Returns the
    /// first violation as a message that names the key, its value and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let ttl = format_duration(self.ttl);
        let loop_wait = format_duration(self.loop_wait);
        if self.ttl < Duration::from_secs(1) {
            return Err(format!(
                "ttl ({ttl}) must be at least 1s so a holder can renew through raft before the \
                 lease expires; raise ttl"
            ));
        }
        if self.loop_wait < Duration::from_millis(100) {
            return Err(format!(
                "loop_wait ({loop_wait}) must be at least 100ms so lease renewals do not flood \
                 the raft log; raise loop_wait"
            ));
        }
        if self.loop_wait.saturating_mul(3) > self.ttl {
            return Err(format!(
                "loop_wait ({loop_wait}) must be at most a third of ttl ({ttl}) so a holder can \
                 renew at least twice before the lease expires; lower loop_wait or raise ttl"
            ));
        }
        if self.retry_timeout >= self.ttl {
            return Err(format!(
                "retry_timeout ({}) must be less than ttl ({ttl}) so a stuck call fails before \
                 the lease expires; lower retry_timeout or raise ttl",
                format_duration(self.retry_timeout)
            ));
        }
        if self.member_timeout >= self.ttl {
            return Err(format!(
                "member_timeout ({}) must be less than ttl ({ttl}) so a silent member is noticed \
                 before the lease expires; lower member_timeout or raise ttl",
                format_duration(self.member_timeout)
            ));
        }
        if self.primary_start_timeout < Duration::from_secs(1) {
            return Err(format!(
                "primary_start_timeout ({}) must be at least 1s so a crashed primary gets one \
                 restart attempt; raise primary_start_timeout",
                format_duration(self.primary_start_timeout)
            ));
        }
        if self.synchronous_node_count == 0 {
            return Err(
                "synchronous_node_count (0) must be at least 1; to replicate \
                        asynchronously set synchronous_mode = \"off\" instead"
                    .to_string(),
            );
        }
        for rule in &self.pg_hba {
            check_hba_rule(rule)?;
        }
        if let Some(backup) = &self.backup {
            backup.validate()?;
            if let Some(name) = (self.postgresql_parameters.keys())
                .find(|name| BACKUP_PARAMETERS.contains(&name.as_str()))
            {
                return Err(format!(
                    "postgresql_parameters key {name:?} is set by pgquorum while [backup] is \
                     configured (archiving to the pgBackRest repository); remove it"
                ));
            }
        }
        for (name, value) in &self.postgresql_parameters {
            if INCLUDE_DIRECTIVES.contains(&name.as_str()) {
                return Err(format!(
                    "postgresql_parameters key {name:?} is not a parameter but a directive that \
                     makes PostgreSQL read another file (any its OS user can read); set the \
                     parameters themselves instead"
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(format!(
                    "postgresql_parameters value of {name:?} holds a newline or another control \
                     character, which would end the parameter's line in the configuration file \
                     and start another; remove it"
                ));
            }
            if MANAGED_PARAMETERS.contains(&name.as_str()) {
                return Err(format!(
                    "postgresql_parameters key {name:?} is managed by pgquorum itself \
                     (replication, addresses, files); remove it"
                ));
            }
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.'));
            if !valid {
                return Err(format!(
                    "postgresql_parameters key {name:?} is not a parameter name; use lowercase \
                     ascii letters, digits, '_' and '.' (for example \"work_mem\")"
                ));
            }
        }
        Ok(())
    }
}
