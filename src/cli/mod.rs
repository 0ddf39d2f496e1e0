//! The command line. The CLI and the daemon are the same binary; every command other than
//! `run`, `init`, `node join` and `config check` is a client of the local daemon's REST API.

mod backup;
mod ca;

pub use backup::{BackupArgs, BackupCommand};
mod client;
mod output;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api::ClusterReport;
use crate::config::{self, NodeConfig};
use crate::identity::StateDir;
use crate::pooler::pool::PoolsReport;
use client::Client;

/// pgquorum: highly available PostgreSQL with one binary per host.
#[derive(Debug, Parser)]
#[command(name = "pgquorum", version, about)]
pub struct Cli {
    /// The node's config file.
    #[arg(long, short, global = true, env = "PGQUORUM_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new cluster with this host as its first member, and print a join token.
    Init {
        /// How many hosts may join with the printed token.
        #[arg(long, default_value_t = 2)]
        token_uses: u32,
        /// How long the printed token stays valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        token_ttl: Duration,
    },
    /// Run the daemon (what systemd starts).
    Run,
    /// The daemon's watchdog process (started by `run`, not by hand): kills the primary
    /// PostgreSQL if the daemon stops renewing its lease. Reads instructions on stdin.
    #[command(hide = true)]
    Fence,
    /// Show the members, their Raft roles, the term and the lease (like `patronictl list`).
    List {
        /// Print the raw JSON of GET /cluster instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the timeline history: every promotion, where and when the old timeline ended
    /// and who took over (like `patronictl history`).
    History {
        /// Print the raw JSON of GET /history instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show this member's pooler: pools, clients waiting, server connections (like
    /// PgBouncer's SHOW POOLS).
    Pools {
        /// Print the raw JSON of GET /pools instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage membership.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Take a backup into the cluster's pgBackRest repository (a replica takes it when one
    /// is healthy), or list the backups there.
    Backup(BackupArgs),
    /// Take the whole cluster back to a point in time from the backup repository: every
    /// member stops, one restores and is promoted on a new timeline, the others clone it.
    Restore(backup::RestoreArgs),
    /// The cluster CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// This member's node certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Inspect the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Hand the primary role over to another member, once it has caught up (planned: no
    /// acknowledged commit is lost).
    Switchover {
        /// The member to hand over to; default: the best eligible replica.
        #[arg(long)]
        candidate: Option<String>,
        /// Not before this time (RFC 3339, e.g. 2026-11-24T02:00:00Z); judged by the primary.
        #[arg(long)]
        at: Option<String>,
        /// Cancel a pending switchover instead.
        #[arg(long, conflicts_with_all = ["candidate", "at"])]
        cancel: bool,
    },
    /// Make CANDIDATE the primary when there is no healthy one, even if it lags or is not
    /// in the synchronous set (commits only the lost primary had are then lost).
    Failover {
        #[arg(long, required_unless_present = "cancel")]
        candidate: Option<String>,
        /// Cancel a pending failover instead.
        #[arg(long, conflicts_with = "candidate")]
        cancel: bool,
    },
    /// Restart PostgreSQL on MEMBER, or on every member (a primary keeps its lease).
    Restart { member: Option<String> },
    /// Replace a replica's data directory with a fresh clone of the primary. Its current
    /// data is deleted: `--force` says you mean it.
    Reinit {
        member: String,
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: no automatic failover or other action until `resume`. A primary
    /// keeps its lease; `list` shows the mode.
    Pause,
    /// Leave maintenance mode.
    Resume,
    /// Low-level lease operations for this member. The supervisor does this itself; these
    /// exist for operators and tests.
    #[command(subcommand)]
    Lease(LeaseCommand),
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Join the cluster that PEER (host:port of its peer port) belongs to.
    Join {
        peer: String,
        /// The token printed by `pgquorum init` or `pgquorum token create`.
        #[arg(long, env = "PGQUORUM_JOIN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Remove a member from the cluster.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the cluster CA certificate (PEM), for clients that verify PostgreSQL's
    /// certificate (`sslmode=verify-full sslrootcert=...`) or the API's; it holds no
    /// secret. During a CA rotation it prints both CAs.
    Export,
    /// Move the cluster to a new CA while it runs. Without `--finish`: every member trusts
    /// the old and the new CA and moves its node certificate to the new one; this waits
    /// until all have. Give clients `pgquorum ca export` (both CAs), then run it again with
    /// `--finish`: the API's and PostgreSQL's certificates come from the new CA and the old
    /// one is trusted no more (join tokens made before are revoked).
    Rotate {
        /// Finish the rotation under way.
        #[arg(long)]
        finish: bool,
        /// How long to wait for every member to move to the new CA.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        wait: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Move this member to a new key and certificate while it runs: the cluster trusts
    /// both until every member accepts the new one, then refuses the old one.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token.
    Create {
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// List the join tokens: id, uses left, expiry (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token before it is used up or expires.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file without starting anything or binding any port.
    Check,
    /// Show the dynamic (cluster-wide) configuration held in Raft.
    Show,
    /// Edit the dynamic configuration in $VISUAL or $EDITOR (default vi), as TOML; it is
    /// applied when the editor exits, if it changed and is valid.
    Edit,
    /// Change keys of the dynamic configuration, e.g. `ttl=3s loop_wait=1s` or
    /// `postgresql_parameters.work_mem=64MB` (applied on every member).
    Set {
        /// `key=value` pairs; values are JSON when they parse as JSON (numbers, true/false),
        /// strings otherwise.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    Acquire,
    Renew,
    Release,
}

/// A failure with the exit code it deserves: 2 for usage and config errors, 1 otherwise.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        let usage = error.downcast_ref::<config::Error>().is_some()
            || error.downcast_ref::<crate::tls::TokenError>().is_some();
        let code = if usage { 2 } else { 1 };
        Failure { code, error }
    }
}

/// Runs one command. `shutdown` is cancelled by SIGTERM/SIGINT (see `main`).
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<ExitCode, Failure> {
    let config = NodeConfig::load(&cli.config)?;
    match cli.command {
        Command::Run => {
            crate::daemon::run(config, shutdown).await?;
        }
        // `main` runs it before any of this (no runtime, no config).
        Command::Fence => {
            tokio::task::spawn_blocking(crate::fence::run).await?;
        }
        Command::Init {
            token_uses,
            token_ttl,
        } => setup::init(&config, token_uses, token_ttl)?,
        Command::Node(NodeCommand::Join { peer, token }) => {
            setup::join(&config, &peer, &token).await?
        }
        Command::Config(ConfigCommand::Check) => {
            output::config_ok(&config);
        }
        Command::Config(ConfigCommand::Show) => {
            let dynamic: serde_json::Value = client(&config, false)?.get("/config").await?;
            output::json(&dynamic);
        }
        Command::Config(ConfigCommand::Edit) => {
            let client = client(&config, true)?;
            let current: crate::cluster::DynamicConfig = client.get("/config").await?;
            match edit_config(&current)? {
                None => output::line("no change"),
                Some(edited) => {
                    let _: serde_json::Value = client
                        .put("/config", &edited)
                        .await
                        .context("changing the dynamic configuration")?;
                    output::line("dynamic configuration updated");
                }
            }
        }
        Command::Config(ConfigCommand::Set { pairs }) => {
            let mut patch = serde_json::Map::new();
            for pair in &pairs {
                let (key, value) = pair.split_once('=').ok_or_else(|| Failure {
                    code: 2,
                    error: anyhow::anyhow!("{pair:?} is not key=value, e.g. ttl=3s"),
                })?;
                let key = key.trim();
                // PostgreSQL parameters are strings as written; other values (backup.*
                // too) are JSON when they parse (numbers, true/false), strings otherwise.
                let value = match key.split_once('.') {
                    Some(("postgresql_parameters", _)) => {
                        serde_json::Value::String(value.to_string())
                    }
                    _ => serde_json::from_str(value)
                        .unwrap_or_else(|_| serde_json::Value::String(value.to_string())),
                };
                match key.split_once('.') {
                    Some((section, name)) => {
                        let entry = patch
                            .entry(section.to_string())
                            .or_insert_with(|| serde_json::json!({}));
                        if let Some(object) = entry.as_object_mut() {
                            object.insert(name.to_string(), value);
                        }
                    }
                    None => {
                        patch.insert(key.to_string(), value);
                    }
                }
            }
            let _: serde_json::Value = client(&config, true)?
                .patch("/config", &patch)
                .await
                .context("changing the dynamic configuration")?;
            output::line("dynamic configuration updated");
        }
        Command::List { json } => {
            let report: ClusterReport = client(&config, false)?.get("/cluster").await?;
            output::json_or(json, &report, output::cluster_table);
        }
        Command::History { json } => {
            let rows: Vec<serde_json::Value> = client(&config, false)?.get("/history").await?;
            output::json_or(json, &rows, |rows| output::history_table(rows));
        }
        Command::Pools { json } => {
            let report: PoolsReport = client(&config, false)?.get("/pools").await?;
            output::json_or(json, &report, output::pools_table);
        }
        Command::Node(NodeCommand::Remove { name }) => {
            let _: serde_json::Value = client(&config, true)?
                .delete(&format!("/admin/members/{name}"))
                .await
                .with_context(|| format!("removing member {name}"))?;
            output::line(&format!("removed member {name}"));
        }
        Command::Token(TokenCommand::Create { uses, ttl }) => {
            let body = serde_json::json!({ "uses": uses, "ttl": humantime::format_duration(ttl).to_string() });
            let reply: serde_json::Value =
                client(&config, true)?.post("/admin/tokens", &body).await?;
            output::line(reply["token"].as_str().unwrap_or_default());
        }
        Command::Cert(CertCommand::Rotate) => {
            let reply: serde_json::Value = client(&config, true)?
                .post("/admin/certificate/rotate", &())
                .await
                .context("rotating this member's certificate")?;
            let short = |key: &serde_json::Value| {
                key.as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(16)
                    .collect::<String>()
            };
            output::line(&format!(
                "rotated the certificate of member {}: key {}… replaced by {}…; the old one is \
                 refused from now on",
                reply["member"].as_str().unwrap_or_default(),
                short(&reply["old_key_sha256"]),
                short(&reply["new_key_sha256"]),
            ));
        }
        Command::Backup(args) => match args.command {
            None => backup::take(&config, args.kind, args.wait, false).await?,
            Some(BackupCommand::Verify { wait }) => {
                backup::take(&config, args.kind, wait, true).await?
            }
            Some(BackupCommand::List { json }) => backup::list(&config, json).await?,
            Some(BackupCommand::Info { json }) => backup::info(&config, json).await?,
        },
        Command::Restore(args) => backup::restore(&config, &args).await?,
        Command::Ca(CaCommand::Export) => {
            output::line(ca::trusted(&config)?.trim_end());
        }
        Command::Ca(CaCommand::Rotate { finish, wait }) => {
            ca::rotate(&config, finish, wait).await?;
        }
        Command::Token(TokenCommand::List { json }) => {
            let reply: serde_json::Value = client(&config, true)?.get("/admin/tokens").await?;
            if json {
                output::line(&reply.to_string());
            } else {
                output::tokens_table(&reply["tokens"]);
            }
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let _: serde_json::Value = client(&config, true)?
                .delete(&format!("/admin/tokens/{id}"))
                .await
                .with_context(|| format!("revoking join token {id}"))?;
            output::line(&format!("revoked join token {id}"));
        }
        Command::Pause | Command::Resume => {
            let pausing = matches!(cli.command, Command::Pause);
            let path = if pausing {
                "/admin/pause"
            } else {
                "/admin/resume"
            };
            let _: serde_json::Value = client(&config, true)?.post(path, &()).await?;
            output::line(if pausing {
                "maintenance mode on: no automatic action until `pgquorum resume`"
            } else {
                "maintenance mode off"
            });
        }
        Command::Failover { candidate, cancel } => {
            let client = client(&config, true)?;
            let _: serde_json::Value = if cancel {
                client
                    .delete("/admin/failover")
                    .await
                    .context("cancelling the failover")?
            } else {
                let body = crate::api::MemberRequest { member: candidate };
                client
                    .post("/admin/failover", &body)
                    .await
                    .context("requesting a failover")?
            };
            output::line(if cancel {
                "failover cancelled"
            } else {
                "failover requested; the candidate takes the lease once it is vacant (watch \
                 `pgquorum list`)"
            });
        }
        Command::Restart { member } => {
            let body = crate::api::MemberRequest {
                member: member.clone(),
            };
            let _: serde_json::Value = client(&config, true)?
                .post("/admin/restart", &body)
                .await
                .context("requesting a restart")?;
            output::line(&format!(
                "restart requested of {}",
                member.as_deref().unwrap_or("every member")
            ));
        }
        Command::Reinit { member, force } => {
            if !force {
                return Err(Failure {
                    code: 2,
                    error: anyhow::anyhow!(
                        "reinit deletes {member}'s data directory and clones the primary \
                         afresh; run again with --force if that is what you want"
                    ),
                });
            }
            let body = crate::api::MemberRequest {
                member: Some(member.clone()),
            };
            let _: serde_json::Value = client(&config, true)?
                .post("/admin/reinit", &body)
                .await
                .context("requesting a reinit")?;
            output::line(&format!(
                "reinit of {member} requested: it clones the primary afresh"
            ));
        }
        Command::Switchover {
            candidate,
            at,
            cancel,
        } => {
            let client = client(&config, true)?;
            let _: serde_json::Value = if cancel {
                client
                    .delete("/admin/switchover")
                    .await
                    .context("cancelling the switchover")?
            } else {
                let body = crate::api::SwitchoverRequest {
                    candidate: candidate.clone(),
                    at: at.clone(),
                };
                client
                    .post("/admin/switchover", &body)
                    .await
                    .context("requesting a switchover")?
            };
            output::line(if cancel {
                "switchover cancelled"
            } else {
                "switchover requested; the primary hands over once the candidate has caught up \
                 (watch `pgquorum list`)"
            });
        }
        Command::Lease(command) => {
            let action = match command {
                LeaseCommand::Acquire => "acquire",
                LeaseCommand::Renew => "renew",
                LeaseCommand::Release => "release",
            };
            let reply: serde_json::Value = client(&config, true)?
                .post(&format!("/admin/lease/{action}"), &())
                .await
                .with_context(|| format!("lease {action}"))?;
            output::json(&reply);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A client of this node's daemon; with the admin token when `admin`.
pub(super) fn client(config: &NodeConfig, admin: bool) -> anyhow::Result<Client> {
    let token = if admin {
        Some(StateDir::new(&config.state_dir).admin_token().context(
            "admin commands read the token in the state directory; run them as the daemon's user",
        )?)
    } else {
        None
    };
    Client::new(&config.api_advertise, token, api_tls(config)?)
}

/// The CLI's TLS with its daemon's API, unless `[api] tls = false`: it trusts the cluster
/// CA in the state directory and, when the API asks for client certificates, presents this
/// member's own (when this user may read its key).
fn api_tls(config: &NodeConfig) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
    if !config.api_tls {
        return Ok(None);
    }
    let ca = ca::trusted(config)?;
    let identity = match config.api_verify_client {
        crate::tls::VerifyClient::None => None,
        _ => crate::tls::NodeIdentity::load(&config.state_dir).ok(),
    };
    let client = identity.as_ref().map(|id| (id.cert_pem(), id.key_pem()));
    Ok(Some(crate::tls::api_client_config(&ca, client)?))
}

/// Lets the user edit `current` as TOML in their editor; `None` when nothing changed.
/// A file that does not parse (an unknown key, a bad duration) is an error naming it.
fn edit_config(
    current: &crate::cluster::DynamicConfig,
) -> Result<Option<crate::cluster::DynamicConfig>, Failure> {
    let fail = |code: u8, error: anyhow::Error| Failure { code, error };
    let text = toml::to_string(current).map_err(|e| fail(1, e.into()))?;
    let path = std::env::temp_dir().join(format!(
        "pgquorum-config-{}-{}.toml",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _cleanup = RemoveOnDrop(path.clone());
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail(1, e.into()))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| fail(1, e.into()))?;
    }
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let editor = set("VISUAL")
        .or_else(|| set("EDITOR"))
        .unwrap_or_else(|| "vi".to_string());
    // Through the shell, so that EDITOR may carry arguments ("code --wait").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| fail(1, anyhow::anyhow!("running the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(fail(
            1,
            anyhow::anyhow!("the editor {editor:?} exited with {status}; nothing changed"),
        ));
    }
    let edited = std::fs::read_to_string(&path).map_err(|e| fail(1, e.into()))?;
    if edited == text {
        return Ok(None);
    }
    let parsed: crate::cluster::DynamicConfig = toml::from_str(&edited).map_err(|e| {
        fail(
            2,
            anyhow::anyhow!(
                "the edited configuration is not valid: {}; nothing changed",
                e.message().trim()
            ),
        )
    })?;
    Ok(Some(parsed))
}

/// Removes a file when dropped (the edited copy of the configuration).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
