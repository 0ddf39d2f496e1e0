//! PostgreSQL's own traffic over TLS from the cluster CA: every walsender on the primary
//! serves an encrypted connection, replicas verify the primary (`sslmode=verify-full`), and
//! a client with the CA from `pgquorum ca export` can verify the server too, while one with
//! another CA is refused.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::node::psql;
use common::pg::verified_query;
use common::{eventually, require_postgres, OutputExt, TestCluster, FORMATION};

/// The index of the member holding the lease, once one does.
fn lease_holder(cluster: &TestCluster) -> usize {
    let view = eventually(FORMATION, "a lease holder", || {
        let view = cluster.node(1).list();
        view["lease"]["holder"]
            .as_u64()
            .map(|_| view.clone())
            .ok_or(view.to_string())
    });
    cluster.index_of_id(&view, view["lease"]["holder"].as_u64().unwrap())
}

#[test]
fn replication_is_encrypted_and_every_member_verifies_the_server() {
    if !require_postgres() {
        return;
    }
    let cluster = TestCluster::start_with_postgres(3);
    let primary = lease_holder(&cluster);
    let p = cluster.node(primary);
    // Both replicas stream, each over TLS.
    let answer = eventually(FORMATION, "two walsenders, both over TLS", || {
        let answer = p.sql(
            "select count(*) filter (where s.ssl) || '/' || count(*) \
             from pg_stat_replication r join pg_stat_ssl s using (pid) \
             where r.state = 'streaming' and r.application_name like 'pgquorum\\_%'",
        )?;
        (answer == "2/2").then_some(answer.clone()).ok_or(answer)
    });
    eprintln!("walsenders over TLS / streaming: {answer}");
    for i in cluster.running().into_iter().filter(|&i| i != primary) {
        eventually(
            Duration::from_secs(10),
            &format!("n{i} streams with verify-full against the CA"),
            || {
                let conninfo = cluster
                    .node(i)
                    .sql("select conninfo from pg_stat_wal_receiver")?;
                (conninfo.contains("sslmode=verify-full") && conninfo.contains("sslrootcert="))
                    .then_some(())
                    .ok_or(conninfo)
            },
        );
    }
    // pg_hba: the replication role over plain TCP is refused.
    let plain = Command::new(psql())
        .args([
            "-X",
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=pgquorum_replicator dbname=replication \
                 replication=true sslmode=disable",
                p.pg_port
            ),
            "-c",
            "IDENTIFY_SYSTEM",
        ])
        .env("PGPASSWORD", "wrong-anyway")
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let refusal = plain.stderr_text();
    assert!(
        !plain.status.success() && refusal.contains("no encryption"),
        "a replication connection without TLS matches no pg_hba line: {refusal}"
    );

    // A client verifies the server with the exported CA; another CA is refused.
    p.sql("create role probe login password 'probe'").unwrap();
    let exported = cluster.node(primary).cli(&["ca", "export"]);
    common::assert_success(&exported, "ca export");
    let pem = exported.stdout_text();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    eventually(
        Duration::from_secs(10),
        "a verified TLS session",
        || match verified_query(
            p.pg_port,
            &ca,
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ) {
            Ok(answer) if answer == "t" => Ok(()),
            other => Err(other),
        },
    );
    let foreign = pgquorum::tls::ClusterCa::generate("elsewhere").unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, foreign.cert_pem()).unwrap();
    let refused = verified_query(p.pg_port, &other_ca, "select 1").unwrap_err();
    assert!(
        refused.contains("certificate verify failed"),
        "a server certificate from another CA fails verification: {refused}"
    );
}

#[test]
fn the_operators_pg_hba_rules_restrict_clients_and_leave_the_members_alone() {
    if !require_postgres() {
        return;
    }
    let cluster = TestCluster::start_with_postgres(3);
    let primary = lease_holder(&cluster);
    let p = cluster.node(primary);
    let streaming = "select count(*) from pg_stat_replication \
                     where state = 'streaming' and application_name like 'pgquorum\\_%'";
    eventually(FORMATION, "two replicas streaming", || {
        let n = p.sql(streaming)?;
        (n == "2").then_some(()).ok_or(n)
    });
    p.sql("create role probe login password 'probe'").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        cluster.node(primary).cli(&["ca", "export"]).stdout_text(),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "probe connects", || {
        verified_query(p.pg_port, &ca, "select 1")
    });

    let rules =
        r#"pg_hba=["host all probe 0.0.0.0/0 reject", "hostssl all all 0.0.0.0/0 scram-sha-256"]"#;
    common::assert_success(&p.cli(&["config", "set", rules]), "config set pg_hba");
    let refused = eventually(
        Duration::from_secs(20),
        "probe refused by the rules",
        || match verified_query(p.pg_port, &ca, "select 1") {
            Err(e) if e.contains("pg_hba.conf rejects connection") => Ok(e),
            other => Err(other),
        },
    );
    eprintln!("refused: {refused}");
    // The members' own rules come first: replication goes on, and a new row reaches a
    // replica.
    p.sql("create table after_rules (v int); insert into after_rules values (7)")
        .unwrap();
    for i in cluster.running().into_iter().filter(|&i| i != primary) {
        eventually(
            Duration::from_secs(20),
            &format!("n{i} has the row"),
            || match cluster.node(i).sql("select v from after_rules").as_deref() {
                Ok("7") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    assert_eq!(p.sql(streaming).as_deref(), Ok("2"), "both still streaming");

    // A bad rule is refused with the fix, and changes nothing.
    let bad = p.cli(&["config", "set", r#"pg_hba=["all all 0.0.0.0/0 trust"]"#]);
    common::assert_error(&bad, 1, "does not start with a connection type");
    assert!(
        verified_query(p.pg_port, &ca, "select 1").is_err(),
        "the rules stand"
    );

    common::assert_success(
        &p.cli(&["config", "set", "pg_hba=[]"]),
        "config set pg_hba=[]",
    );
    eventually(Duration::from_secs(20), "probe connects again", || {
        verified_query(p.pg_port, &ca, "select 1")
    });
}
