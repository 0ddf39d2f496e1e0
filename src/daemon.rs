//! `pgquorum run`: builds the parts, spawns their tasks, and shuts them down in order.
//!
//! ```text
//!   identity (state dir) ─► raft store + state machine ─► openraft core
//!   peer gRPC server (mTLS) ─┘        │ watch<ClusterView>
//!                                      ├─► lease clock
//!                                      └─► REST API
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod certs;
mod member;
mod pg;

use crate::api;
use crate::cluster::{Command, CommandResult, Member};
use crate::config::NodeConfig;
use crate::ha;
use crate::identity::{NodeRecord, StateDir, REPLICATION_PASSWORD_FILE, REWIND_PASSWORD_FILE};
use crate::lease::LeaseClock;
use crate::peers::{self, StatusService};
use crate::raft::service::ClusterSecrets;
use crate::raft::{
    self, LogStore, MembershipRole, NetworkFactory, Peers, RaftHandle, RaftNode, StateMachine,
};
use crate::secret::Secret;
use crate::tls;

/// How long tasks get to finish after shutdown is requested before they are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the daemon until `shutdown` is cancelled. Fails before binding anything if the node
/// is not set up, and names the port if binding fails.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    match crate::postgres::process::raise_open_files_limit() {
        Ok((before, after)) if after > before => {
            tracing::debug!(before, after, "raised the open files limit");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "raising the open files limit"),
    }
    let state = StateDir::new(&config.state_dir);
    if crate::postgres::process::privilege() == crate::postgres::process::Privilege::Capabilities {
        let (uid, gid) = crate::postgres::process::effective_ids();
        let taken = state.claim(uid, gid)?;
        if !taken.is_empty() {
            tracing::info!(
                files = taken.len(),
                uid,
                state_dir = %state.path().display(),
                "took over the daemon's files from another owner: now its user's, secrets \
                 0600 (PostgreSQL's files left alone)"
            );
        }
    }
    let record = state.load_record()?;
    tls::NodeIdentity::recover_rotation(state.path())
        .context("recovering an interrupted certificate rotation")?;
    let identity = tls::NodeIdentity::load(state.path())
        .with_context(|| format!("loading certificates from {}", state.path().display()))?;
    // The stored cluster state says which CAs are in use (after a CA rotation, not the
    // files', which are only read when the state names none), so it is read before any
    // certificate is issued.
    let db = raft::store::open_db(&state.raft_dir())?;
    let log_store = LogStore::open(&db)?.with_failpoints(crate::failpoint::dir(&config.state_dir));
    let (state_machine, view) = StateMachine::open(&db)?;
    let initial_ca = || {
        tls::ClusterCa::from_pem(identity.ca_pem().to_string(), state.load_secret("ca.key")?)
            .context("loading the cluster CA")
    };
    let authority = crate::ca_rotation::open(
        state.path(),
        &view.borrow().state,
        initial_ca,
        config.node_cert_lifetime,
    )?;
    let admin_token = state.admin_token()?;
    let replication_password = state.load_secret(REPLICATION_PASSWORD_FILE)?;
    // A cluster made before the rewind role had a password of its own: replication's.
    let rewind_password = match state.path().join(REWIND_PASSWORD_FILE).exists() {
        true => state.load_secret(REWIND_PASSWORD_FILE)?,
        false => replication_password.clone(),
    };
    // Checked before any port is bound: a missing PostgreSQL is a config problem.
    let postgres = match &config.postgresql {
        Some(pg) => Some(Arc::new(pg::postgres_for(
            &config,
            pg,
            &state,
            &replication_password,
            &rewind_password,
        )?)),
        None => None,
    };
    if let Some(pg) = &postgres {
        pg::warn_of_exposed_secrets(pg, &state);
    }
    // The service certificates, fresh at every start (their names follow the config) and
    // renewed while this process runs (`certs::renew`).
    let issuer = certs::Issuer {
        authority: authority.clone(),
        node_id: record.node_id,
        cluster_id: record.cluster_id.clone(),
        lifetime: config.server_cert_lifetime,
    };
    let mut renewals = Vec::new();
    if let (Some(pg), Some(pg_config)) = (&postgres, config.postgresql.as_ref().filter(|c| c.tls)) {
        let hosts = certs::postgres_hosts(pg_config);
        let cert = issuer.issue(certs::POSTGRESQL, &hosts)?;
        pg.install_tls(&cert.cert_pem, cert.key_pem.expose(), &authority.bundle())
            .context("writing PostgreSQL's TLS files")?;
        let holder = certs::Holder::Postgres {
            pg: pg.clone(),
            authority: authority.clone(),
        };
        renewals.push(certs::Renewal::new(hosts.clone(), holder, &cert));
        let cert = issuer.issue(tls::BACKREST_SERVICE, &hosts)?;
        pg.install_backrest_tls(&cert.cert_pem, cert.key_pem.expose(), &authority.bundle())
            .context("writing pgBackRest's TLS files")?;
        let holder = certs::Holder::Backrest {
            pg: pg.clone(),
            authority: authority.clone(),
        };
        renewals.push(certs::Renewal::new(hosts, holder, &cert));
    }
    let api_transport = if config.api_tls {
        let hosts = certs::api_hosts(&config);
        let cert = issuer.issue(certs::API, &hosts)?;
        let slot = tls::CertSlot::of_service(&cert).context("loading the API certificate")?;
        let server =
            tls::api_server_config(slot.clone(), authority.trust(), config.api_verify_client)
                .context("building the API's TLS configuration")?;
        renewals.push(certs::Renewal::new(hosts, certs::Holder::Api(slot), &cert));
        api::Transport::Https {
            config: server,
            verify: config.api_verify_client,
        }
    } else {
        api::Transport::Http
    };
    let pooler_tls = certs::pooler_tls(&config, &issuer, &mut renewals)?;
    // Also before any port: a VIP this process cannot move (a missing capability, no such
    // interface) is a config problem, better found now than at the first failover.
    let vip = match &config.vip {
        Some(vip) if vip.mode == crate::vip::Mode::Netlink && postgres.is_some() => Some(
            crate::vip::Opened::open(vip)
                .await
                .with_context(|| config.path.display().to_string())?,
        ),
        _ => None,
    };
    // The watchdog that kills our primary if this process stops renewing its lease
    // (`fence`): started before PostgreSQL can be, so no primary ever runs without it.
    let fence = match &postgres {
        Some(_) => Some(Arc::new(crate::fence::Fence::spawn()?)),
        None => None,
    };
    if record.name != config.name {
        bail!(
            "[node] name = {:?} in {} but this state directory belongs to member {:?}; \
             a member's name cannot change",
            config.name,
            config.path.display(),
            record.name
        );
    }

    let peer_listener = TcpListener::bind(config.peer_listen)
        .await
        .with_context(|| {
            format!(
                "binding the peer port {} ([peer] listen)",
                config.peer_listen
            )
        })?;
    let api_listener = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the API port {} ([api] listen)", config.api_listen))?;
    let proxy_listeners = match &config.proxy {
        Some(proxy) => Some(crate::proxy::server::bind(proxy).await?),
        None => None,
    };
    let pooler_listener = match &config.pooler {
        Some(pooler) => Some(crate::pooler::bind(pooler).await?),
        None => None,
    };
    let proxy_stats = proxy_listeners
        .as_ref()
        .map(|_| Arc::new(crate::proxy::stats::Stats::default()));

    // The members' key pins for the server certificates we verify, from the stored state
    // now and kept current below.
    let key_pins = tls::KeyPins::default();
    key_pins.replace(member::pins_of(&view.borrow()));
    // What this member presents on the peer port, as server and as client; a certificate
    // rotation replaces it in place (`crate::rotate`).
    let identity = tls::NodeIdentity::new(
        authority.bundle(),
        identity.cert_pem().to_string(),
        identity.key_pem().clone(),
    );
    let node_slot = tls::node_chain_slot(&identity)?;
    let peers = Peers::new(
        record.cluster_id.clone(),
        tls::member_client_config(
            authority.trust().clone(),
            node_slot.clone(),
            &record.cluster_id,
            key_pins.clone(),
        )?,
    );
    let openraft_config = Arc::new(config.timings.openraft_config(&record.cluster_id)?);
    let raft = raft::Raft::new(
        record.node_id,
        openraft_config,
        NetworkFactory {
            peers: peers.clone(),
        },
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;
    let handle = RaftHandle::new(
        record.node_id,
        raft,
        peers,
        view.clone(),
        config.timings.clone(),
    );

    let tasks = TaskTracker::new();
    let serve_shutdown = shutdown.child_token();
    tasks.spawn(member::keep_pins_current(
        view.clone(),
        key_pins.clone(),
        serve_shutdown.clone(),
    ));
    let (local_status, local_status_rx) = watch::channel(None);
    {
        let tls_config = tls::server_config(authority.trust(), node_slot.clone())?;
        let (handle, ca, token) = (handle.clone(), authority.clone(), serve_shutdown.clone());
        let secrets = ClusterSecrets {
            replication_password: replication_password.clone(),
            rewind_password: rewind_password.clone(),
        };
        let status_routes = StatusService::routes(handle.clone(), local_status_rx);
        tasks.spawn(async move {
            let served = raft::service::serve(
                peer_listener,
                tls_config,
                handle,
                ca,
                secrets,
                status_routes,
                token,
            );
            if let Err(e) = served.await {
                tracing::error!(error = %e, "peer server stopped");
            }
        });
    }
    let lease_clock = LeaseClock::spawn(view, serve_shutdown.clone());
    // The HA loop stops on its own token so that the daemon can wait for it (it stops
    // PostgreSQL and releases the lease) before the servers go away.
    let ha_shutdown = CancellationToken::new();
    let peer_statuses = peers::spawn_poller(handle.clone(), serve_shutdown.clone());
    let local_status_for_api = local_status.subscribe();
    let vip = vip.map(|opened| opened.spawn(serve_shutdown.clone(), &tasks));
    let vip_text = config
        .vip
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let vip_for_api = vip.clone();
    let postgres_for_api = postgres.clone();
    let pooler_postgres = postgres.clone();
    let ha_task = postgres.map(|postgres| {
        let agent = crate::backup::Agent {
            me: crate::cluster::NodeId(handle.id()),
            handle: handle.clone(),
            postgres: postgres.clone(),
            local: local_status.subscribe(),
            peers: peer_statuses.clone(),
        };
        tasks.spawn(agent.run(serve_shutdown.clone()));
        let deps = ha::Deps {
            handle: handle.clone(),
            postgres,
            lease_clock: lease_clock.clone(),
            peers: peer_statuses.clone(),
            local_status,
            hooks: config.hooks.clone(),
            name: config.name.clone(),
            vip: vip.clone(),
            vip_text: vip_text.clone(),
            fence: fence.clone(),
        };
        tokio::spawn(ha::run(deps, ha_shutdown.clone()))
    });
    let mut pools = None;
    if let (Some(proxy), Some(listeners)) = (config.proxy.clone(), proxy_listeners) {
        let deps = crate::proxy::server::Deps {
            handle: handle.clone(),
            lease_clock: lease_clock.clone(),
            peers: peer_statuses.clone(),
            local: local_status_for_api.clone(),
        };
        let stats = proxy_stats.clone().unwrap_or_default();
        let routes = crate::proxy::server::spawn(
            proxy,
            listeners,
            deps,
            stats,
            serve_shutdown.clone(),
            &tasks,
        )?;
        if let (Some(pooler), Some(listener), Some(postgres)) =
            (&config.pooler, pooler_listener, pooler_postgres)
        {
            let inputs = crate::pooler::Inputs {
                listeners: listener,
                postgres,
                routes,
                view: handle.view(),
                tls: pooler_tls,
            };
            let started = crate::pooler::start(pooler, inputs, serve_shutdown.clone(), &tasks)?;
            pools = Some(started);
        }
    }
    let key_pin = tls::key_sha256_of_cert_pem(identity.cert_pem())
        .context("reading this node's certificate")?;
    tasks.spawn(member::update_member_record(
        handle.clone(),
        config.clone(),
        key_pin.clone(),
        peer_statuses.clone(),
        serve_shutdown.clone(),
    ));
    let expiries = Arc::new(tls::Expiries::default());
    let rotator = Arc::new(crate::rotate::Rotator {
        handle: handle.clone(),
        authority: authority.clone(),
        slot: node_slot,
        pins: key_pins,
        peer_statuses: peer_statuses.clone(),
        state_dir: state.path().to_path_buf(),
        name: config.name.clone(),
        sans: config.node_cert_sans(),
        presented: std::sync::Mutex::new(key_pin.clone()),
        expiries: expiries.clone(),
        lock: tokio::sync::Mutex::new(()),
    });
    tasks.spawn(rotator.clone().finish_interrupted(serve_shutdown.clone()));
    renewals.push(certs::Renewal::node(rotator.clone(), identity.cert_pem())?);
    let renew_now = Arc::new(tokio::sync::Notify::new());
    tasks.spawn(
        crate::ca_rotation::Follower {
            authority: authority.clone(),
            handle: handle.clone(),
            rotator: rotator.clone(),
            renew_now: renew_now.clone(),
            state_dir: state.path().to_path_buf(),
            node_validity: config.node_cert_lifetime,
        }
        .run(serve_shutdown.clone()),
    );
    {
        let app = api::AppState {
            handle: handle.clone(),
            lease_clock,
            admin_token,
            authority,
            name: config.name.clone(),
            local_status: local_status_for_api,
            peer_statuses,
            proxy_stats,
            pools,
            vip: config.vip.as_ref().map(ToString::to_string),
            vip_handle: vip_for_api,
            allowlist: Arc::new(config.api_allowlist.clone()),
            rotator,
            expiries: expiries.clone(),
            postgres: postgres_for_api,
        };
        let token = serve_shutdown.clone();
        tasks.spawn(async move {
            api::serve(api_listener, app, api_transport, token).await;
        });
        tasks.spawn(certs::renew(
            issuer,
            renewals,
            expiries,
            renew_now,
            serve_shutdown.clone(),
        ));
    }
    tracing::info!(
        node = record.node_id,
        name = %record.name,
        cluster = %record.cluster_id,
        peer = %config.peer_listen,
        api = %config.api_listen,
        "pgquorum started"
    );
    tasks.spawn(crate::systemd::watchdog(serve_shutdown.clone()));
    tasks.spawn(raft::finish_joint_configurations(
        handle.clone(),
        serve_shutdown.clone(),
    ));
    crate::systemd::ready(&format!(
        "member {} of cluster {}: serving",
        record.name, record.cluster_id
    ));

    if record.bootstrap.is_some() {
        tasks.spawn(bootstrap(
            handle.clone(),
            state.clone(),
            record.clone(),
            config.clone(),
            key_pin,
            serve_shutdown.clone(),
        ));
    } else if let Some(seed) = record.seed.clone() {
        let handle = handle.clone();
        let token = serve_shutdown.clone();
        tasks.spawn(async move {
            let is_voter = |h: &RaftHandle| {
                MembershipRole::of(h.metrics().membership_config.membership(), h.id())
                    == MembershipRole::Voter
            };
            while !is_voter(&handle) && !token.is_cancelled() {
                let deadline = Instant::now() + Duration::from_secs(30);
                let seed = (seed.node_id, seed.peer_addr.clone());
                tokio::select! {
                    _ = token.cancelled() => return,
                    result = handle.request_voter(seed, deadline) => match result {
                        // The leader answers only once we are a voter; our own metrics may
                        // lag behind, so stop here rather than ask again.
                        Ok(()) => {
                            tracing::info!("this member is now a voter");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "not yet a voter; retrying"),
                    }
                }
            }
        });
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    // Once its peer server stops below, this member no longer hears the leader: it must not
    // campaign then, or the term it raised, persisted, makes the leader step down when it
    // comes back (a missed renewal, and the primary fenced, in CI's cert_rotation test).
    handle.raft().runtime_config().elect(false);
    crate::systemd::stopping();
    ha_shutdown.cancel();
    if let Some(task) = ha_task {
        if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
            tracing::warn!("the HA loop did not stop within the grace period");
        }
    }
    serve_shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tasks.len(),
            "tasks still running after the grace period"
        );
    }
    if let Err(e) = handle.raft().shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    db.flush_async().await.context("flushing the raft store")?;
    tracing::info!("stopped");
    Ok(())
}

/// The first run of the initial member: initialise a one-member Raft and record the cluster,
/// this member and the first join token in it. Idempotent across restarts: once the
/// cluster is recorded, the plan is removed from `node.json`.
async fn bootstrap(
    handle: RaftHandle,
    state: StateDir,
    mut record: NodeRecord,
    config: NodeConfig,
    key_pin: String,
    shutdown: CancellationToken,
) {
    let Some(plan) = record.bootstrap.clone() else {
        return;
    };
    let node = RaftNode {
        name: record.name.clone(),
        peer_addr: config.peer_advertise.clone(),
    };
    match handle.raft().is_initialized().await {
        Ok(false) => {
            if let Err(e) = handle
                .raft()
                .initialize(BTreeMap::from([(record.node_id, node)]))
                .await
            {
                tracing::error!(error = %e, "initialising raft");
                return;
            }
            tracing::info!("initialised a one-member raft cluster");
        }
        Ok(true) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading raft state");
            return;
        }
    }
    let command = Command::Bootstrap {
        cluster_id: record.cluster_id.clone(),
        member: Member {
            id: record.node_id.into(),
            name: record.name.clone(),
            peer_addr: config.peer_advertise.clone(),
            api_addr: config.api_advertise.clone(),
            pg_addr: pg_advertise(&config),
            tags: config.tags.clone(),
        },
        token: plan.token,
        key_sha256: Some(key_pin),
    };
    loop {
        if handle.view().borrow().state.is_bootstrapped() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = handle.propose(command.clone()) => match result {
                Ok(CommandResult::Rejected { rejection }) => {
                    tracing::warn!(%rejection, "bootstrap");
                    break;
                }
                Ok(_) => {
                    tracing::info!(cluster = %record.cluster_id, "cluster recorded in raft");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "recording the cluster; retrying"),
            }
        }
    }
    record.bootstrap = None;
    if let Err(e) = state.save_record(&record) {
        tracing::error!(error = %format!("{e:#}"), "updating node record");
    }
}

/// `host:port` of this member's PostgreSQL for the others, or empty for a witness.
pub fn pg_advertise(config: &NodeConfig) -> String {
    config
        .postgresql
        .as_ref()
        .map(|pg| pg.advertise.clone())
        .unwrap_or_default()
}

/// A fresh admin token for this node's REST API.
pub fn new_admin_token() -> Secret<String> {
    Secret::new(crate::identity::random_token(32))
}
