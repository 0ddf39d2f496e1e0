//! `pgquorum ca rotate`: the cluster moves to a new CA while a client writes, with no
//! failover and no lost commit. During the rotation both CAs are trusted; after it, a
//! certificate of the old CA is refused on the peer port even for a member's own id and
//! key, the API and PostgreSQL present certificates of the new CA, and a member joins with
//! a token that pins the new CA.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::haproxy::{servers, Haproxy};
use common::node::require_tool;
use common::peer::propose_as;
use common::pg::{lease, no_commit_lost_and_no_failover, verified_query, writable};
use common::writer::Writer;
use common::{
    assert_success, eventually, require_postgres, Node, OutputExt, TestCluster, FORMATION,
};
use pgquorum::tls::{ClusterCa, NodeIdentity, NodeKey};

/// A certificate for member `id`'s current key and names, signed with `ca` (a CA key the
/// cluster used to trust): what someone holding an old `ca.key` could make.
fn minted(node: &Node, ca: &ClusterCa, id: u64, cluster_id: &str, trust_pem: &str) -> NodeIdentity {
    let current = NodeIdentity::load(&node.state_dir).unwrap();
    let key = NodeKey::from_pem(current.key_pem()).unwrap();
    let csr = key.csr_pem(&node.name).unwrap();
    let cert = ca.issue_node(id, cluster_id, &csr, &[]).unwrap();
    NodeIdentity::new(trust_pem.to_string(), cert, key.key_pem())
}

/// True if member `target` let `identity` past the TLS handshake and authorization (the
/// malformed command is then refused as such, or redirected to the leader).
fn accepted(answer: &Result<String, String>) -> bool {
    matches!(answer, Ok(status) if status.starts_with("InvalidArgument") || status.starts_with("FailedPrecondition"))
}

/// `curl` of `/liveness` on `node`'s API, trusting only `ca`.
fn curl_ok(node: &Node, ca: &Path) -> Result<(), String> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg(format!("https://{}/liveness", node.api_addr()))
        .stdin(Stdio::null())
        .output()
        .expect("running curl");
    match output.status.success() {
        true => Ok(()),
        false => Err(output.stderr_text()),
    }
}

/// A `verify-full` query to `node`'s PostgreSQL, trusting only `ca`.
fn verified_pg(node: &Node, ca: &Path) -> Result<String, String> {
    verified_query(node.pg_port, ca, "select 1")
}

#[test]
fn ca_rotate_moves_the_cluster_to_a_new_ca_while_a_client_writes_with_no_failover() {
    if !require_postgres() || !require_tool("curl", "curl") || !require_tool("haproxy", "haproxy") {
        return;
    }
    let mut cluster = TestCluster::start_with_postgres(3);
    let primary = eventually(FORMATION, "a writable primary", || writable(&cluster));
    eventually(FORMATION, "both replicas streaming", || {
        common::pg::replicas_streaming(&cluster, primary)
    });
    let before = lease(&cluster, primary).unwrap();
    let p = cluster.node(primary);
    p.sql("create table t (v bigint primary key)").unwrap();
    p.sql("create role probe login password 'probe'").unwrap();
    let writer = Writer::start(
        "t",
        (1..=3).map(|i| cluster.node(i).pg_target()).collect(),
        Duration::from_millis(10),
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster_id = (pgquorum::identity::StateDir::new(&cluster.node(1).state_dir))
        .load_record()
        .unwrap()
        .cluster_id;
    let view = cluster.node(1).list();
    let dirs: Vec<_> = (1..=3).map(|i| cluster.node(i).state_dir.clone()).collect();
    let state_of = |i: usize| dirs[i - 1].clone();
    let old_pem = std::fs::read_to_string(state_of(1).join("ca.pem")).unwrap();
    let old_key = pgquorum::identity::StateDir::new(state_of(1))
        .load_secret("ca.key")
        .unwrap();
    let old_ca = ClusterCa::from_pem(old_pem.clone(), old_key).unwrap();
    let old_file = dir.path().join("old.pem");
    std::fs::write(&old_file, &old_pem).unwrap();

    // Phase 1: every member trusts both CAs and moves its node certificate to the new one.
    let started = cluster.node(2).cli(&["ca", "rotate"]);
    assert_success(&started, "ca rotate");
    assert!(
        started
            .stdout_text()
            .contains("every member trusts the old and the new CA"),
        "{}",
        started.stdout_text()
    );
    let new_pem = std::fs::read_to_string(state_of(2).join("ca.next.pem")).unwrap();
    let new_file = dir.path().join("new.pem");
    std::fs::write(&new_file, &new_pem).unwrap();
    let exported = cluster.node(1).cli(&["ca", "export"]);
    assert_success(&exported, "ca export during the rotation");
    let bundle = exported.stdout_text();
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "both CAs: {bundle}"
    );
    let bundle_file = dir.path().join("bundle.pem");
    std::fs::write(&bundle_file, &bundle).unwrap();
    let listed = cluster.node(1).cli(&["list"]);
    assert!(
        listed
            .stdout_text()
            .contains("CA rotation under way: every member has moved"),
        "`list` shows the rotation: {}",
        listed.stdout_text()
    );
    let refused = cluster.node(1).cli(&["token", "create"]);
    assert!(
        !refused.status.success() && refused.stderr_text().contains("CA rotation"),
        "no join token during a CA rotation: {}",
        refused.stderr_text()
    );
    // A certificate of the old CA for member 1's id and key still passes: the old CA is
    // still trusted (this is what the end of the rotation takes away).
    let ids: Vec<u64> = (1..=3).map(|i| cluster.id_of(&view, i)).collect();
    let id = |i: usize| ids[i - 1];
    let forged = minted(cluster.node(1), &old_ca, id(1), &cluster_id, &bundle);
    let answer = propose_as(
        &tokio_runtime(),
        &forged,
        &cluster_id,
        id(2),
        &cluster.node(2).peer_addr(),
    );
    assert!(
        accepted(&answer),
        "old CA still trusted in phase 1: {answer:?}"
    );
    for i in 1..=3 {
        let node_pem = std::fs::read_to_string(state_of(i).join("node.pem")).unwrap();
        assert_eq!(
            name_of(&node_pem, Name::Issuer),
            name_of(&new_pem, Name::Subject),
            "n{i}'s node certificate is from the new CA"
        );
        // Clients that have only the old CA see no change until the rotation finishes.
        curl_ok(cluster.node(i), &old_file).expect("the API with the old CA in phase 1");
        verified_pg(cluster.node(i), &old_file).expect("PostgreSQL with the old CA in phase 1");
        curl_ok(cluster.node(i), &bundle_file).expect("the API with the bundle in phase 1");
    }
    assert_ne!(
        name_of(&old_pem, Name::Subject),
        name_of(&new_pem, Name::Subject)
    );

    let in_progress = |node: &Node| {
        let (_, metrics) = node.get("/metrics").map_err(|e| e.to_string())?;
        (metrics.lines())
            .find(|l| l.starts_with("pgquorum_ca_rotation_in_progress{"))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
            .ok_or(metrics)
    };
    assert_eq!(
        in_progress(cluster.node(1)).as_deref(),
        Ok("1"),
        "/metrics shows the rotation"
    );

    // HAProxy checks as the seeds do: with the bundle (stays UP throughout) and with the
    // old CA alone (UP until the rotation finishes).
    let (haproxy, _) = Haproxy::start(
        dir.path(),
        &[
            ("bundle", servers(&cluster, &bundle_file)),
            ("old", servers(&cluster, &old_file)),
        ],
    );
    let primary_name = format!("n{primary}");
    for backend in ["bundle", "old"] {
        eventually(
            FORMATION,
            &format!("HAProxy {backend}: the primary alone is UP"),
            || haproxy.only_up(backend, &primary_name),
        );
    }

    // A member restarted in the middle of the rotation comes back trusting both CAs.
    let restarted = (1..=3).find(|&i| i != primary).unwrap();
    cluster.node_mut(restarted).terminate();
    cluster.node_mut(restarted).start();
    cluster.wait_converged(FORMATION, "a member restarted during the rotation is back");

    // Phase 2: the new CA alone.
    let finished = cluster.node(3).cli(&["ca", "rotate", "--finish"]);
    assert_success(&finished, "ca rotate --finish");
    for i in 1..=3 {
        eventually(
            Duration::from_secs(20),
            &format!("n{i} uses the new CA alone"),
            || {
                let ca = std::fs::read_to_string(state_of(i).join("ca.pem"))
                    .map_err(|e| e.to_string())?;
                let next = state_of(i).join("ca.next.pem").exists();
                (ca == new_pem && !next)
                    .then_some(())
                    .ok_or(format!("ca.next.pem left: {next}"))
            },
        );
        eventually(
            Duration::from_secs(20),
            &format!("n{i}'s API presents a certificate of the new CA"),
            || curl_ok(cluster.node(i), &new_file),
        );
        curl_ok(cluster.node(i), &bundle_file).expect("the bundle still verifies it");
        let refused = curl_ok(cluster.node(i), &old_file);
        assert!(
            refused.is_err(),
            "n{i}'s API no longer verifies with the old CA"
        );
        eventually(
            Duration::from_secs(20),
            &format!("n{i}'s PostgreSQL presents a certificate of the new CA"),
            || verified_pg(cluster.node(i), &new_file),
        );
    }
    for (holder, other) in [(1, 2), (2, 3), (3, 1)] {
        let node = cluster.node(holder);
        let forged = minted(node, &old_ca, id(holder), &cluster_id, &new_pem);
        let (target, addr) = (id(other), cluster.node(other).peer_addr());
        eventually(
            Duration::from_secs(10),
            &format!("n{other} refuses an old-CA certificate for n{holder}'s own key"),
            || {
                let answer = propose_as(&tokio_runtime(), &forged, &cluster_id, target, &addr);
                (!accepted(&answer))
                    .then_some(())
                    .ok_or(format!("{answer:?}"))
            },
        );
    }

    eventually(
        Duration::from_secs(10),
        "HAProxy with the old CA alone: every check fails in TLS",
        || {
            let servers = haproxy.status("old")?;
            (servers.iter())
                .all(|(_, status)| status.starts_with("DOWN") && status.contains("Layer6"))
                .then_some(())
                .ok_or(format!("{servers:?}"))
        },
    );
    haproxy
        .only_up("bundle", &primary_name)
        .expect("HAProxy with the bundle: the primary stayed UP");

    for i in 1..=3 {
        eventually(
            Duration::from_secs(10),
            "/metrics: no rotation under way",
            || {
                (in_progress(cluster.node(i))? == "0")
                    .then_some(())
                    .ok_or("still 1".to_string())
            },
        );
    }

    // A replica restarted now verifies the primary with the new CA alone.
    let replica = (1..=3).find(|&i| i != primary).unwrap();
    cluster.node_mut(replica).terminate();
    cluster.node_mut(replica).start();
    cluster.wait_converged(FORMATION, "the restarted replica is back");
    let p = cluster.node(primary);
    eventually(FORMATION, "both replicas stream over TLS again", || {
        let answer = p.sql(
            "select count(*) filter (where s.ssl) || '/' || count(*) \
             from pg_stat_replication r join pg_stat_ssl s using (pid) \
             where r.state = 'streaming'",
        )?;
        (answer == "2/2").then_some(()).ok_or(answer)
    });

    // Joining works again, with a token that pins the new CA.
    let token = cluster.node(1).cli(&["token", "create"]);
    assert_success(&token, "token create after the rotation");
    let mut fourth = cluster.new_node("n4");
    assert_success(
        &fourth.join(&cluster.node(1).peer_addr(), token.stdout_text().trim()),
        "join with a token of the new CA",
    );
    fourth.start();
    cluster.add(fourth);
    cluster.wait_converged(FORMATION, "n4 is a member");

    let bundle_status = haproxy.status("bundle").unwrap();
    assert!(
        bundle_status
            .iter()
            .all(|(name, status)| (name == &primary_name) == status.starts_with("UP")),
        "HAProxy with the bundle: still the primary alone UP at the end: {bundle_status:?}"
    );
    let commits = no_commit_lost_and_no_failover(&cluster, primary, writer, before);
    eprintln!("CA rotated: {commits} commits, none lost, lease {before:?} throughout");
}

enum Name {
    Issuer,
    Subject,
}

/// The issuer or subject of the first certificate in `pem`.
fn name_of(pem: &str, which: Name) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    match which {
        Name::Issuer => cert.issuer().to_string(),
        Name::Subject => cert.subject().to_string(),
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}
