//! `pgquorum init` and `pgquorum node join`: prepare this node's state directory. Neither
//! starts the daemon; `pgquorum run` (what systemd starts) does, so both fit a unit file.

use std::time::Duration;

use anyhow::{anyhow, Context};

use super::output;
use crate::cluster::JoinToken;
use crate::config::NodeConfig;
use crate::daemon::{new_admin_token, pg_advertise};
use crate::identity::{random_token, BootstrapPlan, NodeRecord, Seed, StateDir};
use crate::identity::{REPLICATION_PASSWORD_FILE, REWIND_PASSWORD_FILE};
use crate::raft::proto::pb;
use crate::raft::service::now_unix;
use crate::secret::Secret;
use crate::tls::{self, ClusterCa, JoinTokenString, NodeIdentity, NodeKey};

/// Creates a new cluster with this node as its first member. Prints the join token.
pub fn init(config: &NodeConfig, token_uses: u32, token_ttl: Duration) -> anyhow::Result<()> {
    let state = StateDir::new(&config.state_dir);
    state.ensure_fresh()?;
    let cluster_id = random_token(16);
    let node_id = 1;
    let ca = ClusterCa::generate(&cluster_id)?.with_node_validity(config.node_cert_lifetime);
    let key = NodeKey::generate()?;
    let csr = key.csr_pem(&config.name)?;
    let cert = ca.issue_node(node_id, &cluster_id, &csr, &config.node_cert_sans())?;
    let token = JoinTokenString::generate(&ca.sha256_hex());

    state.create()?;
    NodeIdentity::new(ca.cert_pem().to_string(), cert, key.key_pem()).save(state.path())?;
    state.save_secret("ca.key", ca.key_pem().expose())?;
    state.save_secret("admin.token", new_admin_token().expose())?;
    state.save_secret(REPLICATION_PASSWORD_FILE, &random_token(32))?;
    state.save_secret(REWIND_PASSWORD_FILE, &random_token(32))?;
    state.save_record(&NodeRecord {
        cluster_id: cluster_id.clone(),
        node_id,
        name: config.name.clone(),
        seed: None,
        bootstrap: Some(BootstrapPlan {
            token: JoinToken {
                id: token.id().to_string(),
                secret_sha256: token.secret_sha256_hex(),
                uses_left: token_uses,
                expires_at_unix: now_unix() + token_ttl.as_secs(),
            },
        }),
    })?;
    handed_over(&state)?;
    output::line(&format!(
        "initialised cluster {cluster_id} with {} as node {node_id}",
        config.name
    ));
    output::line(&format!("state directory: {}", state.path().display()));
    output::line("");
    output::line(&format!(
        "start it:   pgquorum run --config {}",
        config.path.display()
    ));
    output::line(&format!(
        "join token (valid for {} joins, {}):",
        token_uses,
        humantime::format_duration(token_ttl)
    ));
    output::line(&format!("{token}"));
    output::line("");
    output::line(&format!(
        "on each other host: pgquorum node join {} --token <token>",
        config.peer_advertise
    ));
    Ok(())
}

/// Joins the cluster that `peer` belongs to, authenticated by `token` both ways: the token's
/// CA hash authenticates the peer, the token's secret authenticates us.
pub async fn join(config: &NodeConfig, peer: &str, token: &str) -> anyhow::Result<()> {
    let token: JoinTokenString = token.parse()?;
    let state = StateDir::new(&config.state_dir);
    state.ensure_fresh()?;
    let key = NodeKey::generate()?;
    let csr_pem = key.csr_pem(&config.name)?;

    let request = pb::JoinRequest {
        token_id: token.id().to_string(),
        token_secret: token.secret().expose().to_string(),
        name: config.name.clone(),
        peer_addr: config.peer_advertise.clone(),
        api_addr: config.api_advertise.clone(),
        pg_addr: pg_advertise(config),
        csr_pem,
        sans: config.node_cert_sans(),
    };
    let reply = crate::raft::join::request_join(peer, &token, request).await?;
    // The server proved it holds a certificate of the pinned CA; check that the CA it hands
    // us is that same one before trusting it for everything else.
    let ca_hash = tls::ca_sha256_hex(&reply.ca_pem)?;
    if ca_hash != token.ca_sha256() {
        return Err(anyhow!(
            "the CA sent by {peer} does not match the token's pin; not joining"
        ));
    }
    ClusterCa::from_pem(reply.ca_pem.clone(), Secret::new(reply.ca_key_pem.clone()))
        .context("the CA key sent by the peer is invalid")?;

    state.create()?;
    NodeIdentity::new(reply.ca_pem, reply.cert_pem, key.key_pem()).save(state.path())?;
    state.save_secret("ca.key", &reply.ca_key_pem)?;
    state.save_secret("admin.token", new_admin_token().expose())?;
    state.save_secret(REPLICATION_PASSWORD_FILE, &reply.replication_password)?;
    // None from a cluster made before the rewind role had a password of its own.
    if !reply.rewind_password.is_empty() {
        state.save_secret(REWIND_PASSWORD_FILE, &reply.rewind_password)?;
    }
    state.save_record(&NodeRecord {
        cluster_id: reply.cluster_id.clone(),
        node_id: reply.node_id,
        name: config.name.clone(),
        seed: Some(Seed {
            node_id: reply.server_node_id,
            peer_addr: peer.to_string(),
        }),
        bootstrap: None,
    })?;
    handed_over(&state)?;
    output::line(&format!(
        "joined cluster {} as node {} ({}); start it with: pgquorum run --config {}",
        reply.cluster_id,
        reply.node_id,
        config.name,
        config.path.display()
    ));
    output::line("it becomes a voter once it has caught up with the log");
    Ok(())
}

/// Hands the new state files to the state directory's owner when root set them up (see
/// [`StateDir::hand_to_owner`]) and says so.
fn handed_over(state: &StateDir) -> anyhow::Result<()> {
    if let Some(uid) = state.hand_to_owner()? {
        let who = user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
        output::line(&format!(
            "state files handed to {who}, the owner of {}: run the daemon as {who}",
            state.path().display()
        ));
    }
    Ok(())
}

/// The name of user `uid` from `/etc/passwd`, if it is there.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_string())
    })
}
