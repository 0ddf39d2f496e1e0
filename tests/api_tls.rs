//! The REST API over HTTPS with the cluster CA, on by default: the CLI verifies it, curl
//! and HAProxy's `check-ssl verify required ca-file` checks use it as they use Patroni's,
//! client certificates follow `[api] verify_client`, and the API's and PostgreSQL's
//! certificates are renewed while clients keep connecting, with no failover.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::haproxy::{servers, Haproxy};
use common::node::{psql, require_tool};
use common::{
    assert_success, eventually, require_postgres, Node, OutputExt, TestCluster, ELECTION, FORMATION,
};

/// The cluster CA of `node`, as a file in `dir`.
fn export_ca(node: &Node, dir: &Path) -> std::path::PathBuf {
    let exported = node.cli(&["ca", "export"]);
    assert_success(&exported, "ca export");
    let path = dir.join("ca.pem");
    std::fs::write(&path, exported.stdout_text()).unwrap();
    path
}

/// `curl` against this node's API: its exit status and output.
fn curl(node: &Node, path: &str, args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .arg(format!("https://{}{path}", node.api_addr()))
        .stdin(Stdio::null())
        .output()
        .expect("running curl")
}

#[test]
fn the_cli_curl_and_haproxys_ssl_check_use_the_api_over_https() {
    if !require_postgres() || !require_tool("haproxy", "haproxy") || !require_tool("curl", "curl") {
        return;
    }
    let cluster = TestCluster::start_with_postgres(3);
    let dir = tempfile::tempdir().unwrap();
    let ca = export_ca(cluster.node(1), dir.path());
    let holder = eventually(FORMATION, "a lease holder", || {
        let view = cluster.node(1).cluster_view()?;
        view["lease"]["holder"].as_u64().ok_or(view.to_string())
    });
    let view = cluster.node(1).list();
    let primary = cluster.index_of_id(&view, holder);
    let p = cluster.node(primary);

    // The CLI (`list` above) verified the API against the CA; curl does as the seeds do.
    let metrics = curl(p, "/metrics", &["--cacert", ca.to_str().unwrap()]);
    assert!(
        metrics.status.success() && metrics.stdout_text().contains("pgquorum_"),
        "curl --cacert https://.../metrics: {} {}",
        metrics.stdout_text(),
        metrics.stderr_text()
    );
    for certificate in ["api", "node", "postgresql"] {
        let sample = format!("certificate=\"{certificate}\"}} ");
        assert!(
            metrics.stdout_text().lines().any(|l| l
                .starts_with("pgquorum_certificate_expiry_timestamp_seconds")
                && l.contains(&sample)),
            "/metrics gives the {certificate} certificate's expiry"
        );
    }
    let foreign = pgquorum::tls::ClusterCa::generate("elsewhere").unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, foreign.cert_pem()).unwrap();
    let refused = curl(p, "/metrics", &["--cacert", other_ca.to_str().unwrap()]);
    assert!(
        !refused.status.success(),
        "curl with another CA must fail: {}",
        refused.stdout_text()
    );

    // HAProxy routes to whichever member answers 200 on /primary over verified TLS; the
    // `foreign` backend checks the same servers against another CA and must never pass.
    let (haproxy, ports) = Haproxy::start(
        dir.path(),
        &[
            ("primary", servers(&cluster, &ca)),
            ("foreign", servers(&cluster, &other_ca)),
        ],
    );
    let port = ports[0];
    eventually(FORMATION, "HAProxy: the primary alone is UP", || {
        haproxy.only_up("primary", &format!("n{primary}"))
    });
    let up = haproxy.status("primary").unwrap();
    eprintln!("haproxy, primary backend: {up:?}");
    // Through HAProxy, TLS to PostgreSQL verified with the same CA, on the writable member.
    p.sql("create role probe login password 'probe'").unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=probe dbname=postgres sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    let answer = eventually(Duration::from_secs(10), "a query through HAProxy", || {
        let output = Command::new(psql())
            .args([
                "-X",
                "-A",
                "-t",
                "-d",
                &conninfo,
                "-c",
                "select pg_is_in_recovery()",
            ])
            .env("PGPASSWORD", "probe")
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        output
            .status
            .success()
            .then(|| output.stdout_text().trim().to_string())
            .ok_or(output.stderr_text())
    });
    assert_eq!(answer, "f", "HAProxy sent the client to the primary");
    let foreign = haproxy.status("foreign").unwrap();
    assert!(
        foreign.iter().all(|(_, status)| !status.starts_with("UP")),
        "checks against another CA never pass: {foreign:?}"
    );
    assert!(
        foreign.iter().all(|(_, status)| status.contains("Layer6")),
        "and they fail in the TLS handshake (layer 6): {foreign:?}"
    );
}

/// One member whose `[api]` table also holds `line`, initialised and started.
fn single_member_with_api(line: &str) -> Node {
    let mut node = Node::new(&common::node::test_name(), "n1");
    let config = std::fs::read_to_string(&node.config_path).unwrap();
    node.write_config(&config.replacen("[api]\n", &format!("[api]\n{line}\n"), 1));
    node.init(&[]);
    node.start();
    eventually(ELECTION, "the API answers", || {
        node.get("/liveness").map_err(|e| e.to_string())
    });
    node
}

#[test]
fn verify_client_required_refuses_every_call_without_a_cluster_certificate() {
    if !require_tool("curl", "curl") {
        return;
    }
    let mut node = single_member_with_api("verify_client = \"required\"");
    let dir = tempfile::tempdir().unwrap();
    let ca = export_ca(&node, dir.path());
    let ca_arg = ca.to_str().unwrap();
    // The CLI presents the member's own certificate (the harness's get above did too).
    let list = node.cli(&["list", "--json"]);
    assert_success(&list, "list with verify_client = required");
    let bare = curl(&node, "/liveness", &["--cacert", ca_arg]);
    assert!(
        !bare.status.success(),
        "a client without a certificate is refused even for /liveness: {}",
        bare.stdout_text()
    );
    let state = node.state_dir.display();
    let cert = format!("{state}/node.pem");
    let key = format!("{state}/node.key");
    let with_cert = curl(
        &node,
        "/liveness",
        &["--cacert", ca_arg, "--cert", &cert, "--key", &key],
    );
    assert!(
        with_cert.status.success(),
        "a member's certificate is accepted: {}",
        with_cert.stderr_text()
    );
    // A certificate of another CA is refused.
    let foreign = pgquorum::tls::ClusterCa::generate("elsewhere").unwrap();
    let stranger = pgquorum::tls::NodeKey::generate().unwrap();
    let stranger_cert = foreign
        .issue_node(1, "elsewhere", &stranger.csr_pem("elsewhere").unwrap(), &[])
        .unwrap();
    std::fs::write(dir.path().join("s.pem"), stranger_cert).unwrap();
    std::fs::write(dir.path().join("s.key"), stranger.key_pem().expose()).unwrap();
    let stranger_call = curl(
        &node,
        "/liveness",
        &[
            "--cacert",
            ca_arg,
            "--cert",
            dir.path().join("s.pem").to_str().unwrap(),
            "--key",
            dir.path().join("s.key").to_str().unwrap(),
        ],
    );
    assert!(
        !stranger_call.status.success(),
        "a certificate of another CA is refused"
    );
    assert!(node.terminate().success());
}

#[test]
fn verify_client_optional_asks_a_certificate_for_unsafe_calls_only() {
    if !require_tool("curl", "curl") {
        return;
    }
    let mut node = single_member_with_api("verify_client = \"optional\"");
    let dir = tempfile::tempdir().unwrap();
    let ca = export_ca(&node, dir.path());
    let ca_arg = ca.to_str().unwrap();
    let health = curl(&node, "/liveness", &["--cacert", ca_arg]);
    assert!(
        health.status.success(),
        "health checks need no certificate: {}",
        health.stderr_text()
    );
    let token = std::fs::read_to_string(node.state_dir.join("admin.token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let pause = curl(
        &node,
        "/admin/pause",
        &["--cacert", ca_arg, "-X", "POST", "-H", &bearer],
    );
    assert!(
        pause.stdout_text().contains("verify_client"),
        "an admin call without a certificate is refused, the token notwithstanding: {}",
        pause.stdout_text()
    );
    assert_eq!(
        node.cluster_view().unwrap()["paused"].as_bool(),
        Some(false),
        "and changed nothing"
    );
    // The CLI presents the member's certificate and the token.
    assert_success(&node.cli(&["pause"]), "pause from the CLI");
    eventually(ELECTION, "the cluster is paused", || {
        let view = node.cluster_view()?;
        (view["paused"].as_bool() == Some(true))
            .then_some(())
            .ok_or(view.to_string())
    });
    assert!(node.terminate().success());
}

#[test]
fn service_certificates_renew_while_clients_connect_with_no_failover() {
    if !require_postgres() {
        return;
    }
    /// Short enough to renew several times during the test; renewed at 10 s.
    const LIFETIME: &str = "15s";
    let extra = format!("[tls]\nserver_certificate_lifetime = \"{LIFETIME}\"\n");
    let cluster = TestCluster::start_with_postgres_tagged(3, &[1, 2, 3], &extra);
    let lease = |node: &Node| {
        let view = node.cluster_view()?;
        match (
            view["lease"]["holder"].as_u64(),
            view["lease"]["epoch"].as_u64(),
        ) {
            (Some(holder), Some(epoch)) => Ok((holder, epoch)),
            _ => Err(view.to_string()),
        }
    };
    let (holder, epoch) = eventually(FORMATION, "a lease holder", || lease(cluster.node(1)));
    let view = cluster.node(1).list();
    let p = cluster.node(cluster.index_of_id(&view, holder));
    eventually(FORMATION, "a writable primary", || {
        match p.sql("select pg_is_in_recovery()") {
            Ok(answer) if answer == "f" => Ok(()),
            other => Err(other),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = export_ca(p, dir.path());
    p.sql("create role probe login password 'probe'; create table renewed (v int); grant insert on renewed to probe")
        .unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=probe dbname=postgres sslmode=verify-full sslrootcert={}",
        p.pg_port,
        ca.display()
    );
    // Each commit a new verified TLS session, so each one sees the certificate of the
    // moment; and each API call a new HTTPS session.
    let renewals = |node: &Node, service: &str| {
        node.log()
            .lines()
            .filter(|l| {
                l.contains("renewed the service certificate")
                    && l.contains(&format!("service=\"{service}\""))
            })
            .count()
    };
    let mut committed = 0;
    let mut failures = Vec::new();
    eventually(
        Duration::from_secs(90),
        "every member renews both certificates three times",
        || {
            committed += 1;
            let output = Command::new(psql())
                .args(["-X", "-d", &conninfo, "-c"])
                .arg(format!("insert into renewed values ({committed})"))
                .env("PGPASSWORD", "probe")
                .env("PGCONNECT_TIMEOUT", "5")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if !output.status.success() {
                failures.push(output.stderr_text());
            }
            for i in 1..=3 {
                cluster.node(i).cluster_view()?;
            }
            let counts: Vec<(usize, usize)> = (1..=3)
                .map(|i| {
                    let n = cluster.node(i);
                    (renewals(n, "api"), renewals(n, "postgresql"))
                })
                .collect();
            counts
                .iter()
                .all(|&(api, pg)| api >= 3 && pg >= 3)
                .then_some(())
                .ok_or(format!("renewals (api, postgresql) per member: {counts:?}"))
        },
    );
    assert!(
        failures.is_empty(),
        "every verified connection succeeded through the renewals: {failures:?}"
    );
    assert_eq!(
        p.sql("select count(*) from renewed").unwrap(),
        committed.to_string(),
        "every commit is there"
    );
    // Well past the first certificates' expiry: what the members serve now is renewed.
    assert_success(
        &cluster.node(2).cli(&["list"]),
        "the CLI after the renewals",
    );
    for i in 1..=3 {
        assert_eq!(
            lease(cluster.node(i)),
            Ok((holder, epoch)),
            "no failover on n{i}"
        );
    }
    eprintln!("{committed} commits over verified TLS while the certificates renewed");
}
