//! Who may join and talk to the peer port: only holders of a valid join token, and only
//! over TLS. Refusals leave no trace: no member, no state directory.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::node::test_name;
use common::peer::propose_as;
use common::ports::is_free;
use common::wait::scaled;
use common::{
    assert_error, assert_success, eventually, member_names, Node, OutputExt, TestCluster, ELECTION,
    FORMATION,
};

/// `token` with its secret (4th part) replaced by `secret`.
fn with_secret(token: &str, secret: &str) -> String {
    let (head, _) = token.rsplit_once('.').unwrap();
    format!("{head}.{secret}")
}

/// `token` with its CA hash (2nd part) replaced by `ca`.
fn with_ca(token: &str, ca: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{ca}.{}.{}", parts[0], parts[2], parts[3])
}

/// What a join with an unknown token id or a wrong secret is told.
const REFUSED: &str = "join token refused: this cluster has no token with that id and secret";

#[test]
fn joins_with_bad_tokens_are_refused_and_leave_membership_unchanged() {
    let cluster = TestCluster::start(3);
    let before = member_names(&cluster.node(1).list());
    let created = cluster.node(1).cli(&["token", "create"]);
    assert_success(&created, "token create");
    let good = created.stdout_text().trim().to_string();
    let secret = good.rsplit('.').next().unwrap();
    let last = secret.chars().last().unwrap();
    let wrong_last = if last == 'a' { 'b' } else { 'a' };
    let bad_secret = with_secret(
        &good,
        &format!("{}{wrong_last}", &secret[..secret.len() - 1]),
    );
    let unknown_id = {
        let parts: Vec<&str> = good.split('.').collect();
        format!("{}.{}.zzzzzz.{}", parts[0], parts[1], parts[3])
    };
    // A token of another cluster: its CA is not the one this cluster's peer port presents.
    let foreign = Node::new(&test_name(), "foreign1");
    let foreign_token = foreign.init(&[]);

    // Refused by the cluster or by the CA pin: the operation failed (exit 1). A token that
    // cannot even be parsed is a usage error (exit 2).
    let cases: [(&str, String, i32, &str); 6] = [
        ("wrong secret", bad_secret, 1, REFUSED),
        ("unknown token id", unknown_id, 1, REFUSED),
        (
            "another cluster's token",
            foreign_token,
            1,
            "does not match",
        ),
        (
            "zero CA hash",
            with_ca(&good, &"0".repeat(64)),
            1,
            "does not match",
        ),
        (
            "malformed token",
            "pgq1.not-a-token".to_string(),
            2,
            "malformed join token",
        ),
        (
            "wrong version",
            good.replacen("pgq1", "pgq9", 1),
            2,
            "unsupported join token version",
        ),
    ];
    let mut refusals = Vec::new();
    for (i, (case, token, code, needle)) in cases.iter().enumerate() {
        let joiner = cluster.new_node(&format!("joiner{i}"));
        let output = joiner.join(&cluster.node(1).peer_addr(), token);
        let line = assert_error(&output, *code, needle);
        if *needle == REFUSED {
            refusals.push(line.clone());
        }
        assert!(
            !line.contains(secret),
            "{case}: the error must not echo the secret: {line}"
        );
        assert!(
            !joiner.state_dir.exists(),
            "{case}: a refused join must not create {}",
            joiner.state_dir.display()
        );
        eprintln!("{case}: {line}");
    }

    assert!(
        refusals.len() == 2 && refusals[0] == refusals[1],
        "an unknown id and a wrong secret get the same answer, so ids cannot be probed: \
         {refusals:?}"
    );

    let after = cluster.wait_converged(ELECTION, "the three members still agree");
    assert_eq!(member_names(&after), before, "membership is unchanged");
    for i in 1..=3 {
        assert_eq!(
            member_names(&cluster.node(i).list()),
            before,
            "as seen by n{i}"
        );
    }
    // The refusals did not use up the good token.
    let mut fourth = cluster.new_node("n4");
    assert_success(
        &fourth.join(&cluster.node(1).peer_addr(), &good),
        "join with the good token",
    );
    fourth.start();
    eventually(ELECTION, "n4 is a voter", || {
        let view = cluster.node(1).cluster_view()?;
        let n4 = view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == "n4"));
        match n4 {
            Some(m) if m["raft_role"] == "voter" => Ok(()),
            _ => Err(view.to_string()),
        }
    });
}

/// `csr` with one base64 character changed inside its signature's last integer: it still
/// parses, its signature no longer verifies.
fn broken_signature(csr: &str) -> String {
    let end = csr.find("-----END").unwrap();
    let pos = csr[..end].trim_end().trim_end_matches('=').len() - 10;
    let mut bytes = csr.as_bytes().to_vec();
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_join_with_a_bad_certificate_request_spends_no_token_use_and_adds_no_member() {
    use pgquorum::raft::proto::pb;
    let cluster = TestCluster::start(3);
    let before = member_names(&cluster.node(1).list());
    let created = cluster.node(1).cli(&["token", "create", "--uses", "1"]);
    assert_success(&created, "token create --uses 1");
    let token_text = created.stdout_text().trim().to_string();
    let token: pgquorum::tls::JoinTokenString = token_text.parse().expect("a token");
    // The join service reads tokens from n1's applied state, which may lag the commit.
    eventually(ELECTION, "n1 has applied the new token", || {
        let listed = cluster
            .node(1)
            .cli(&["token", "list", "--json"])
            .stdout_text();
        listed.contains(token.id()).then_some(()).ok_or(listed)
    });
    let good_csr = pgquorum::tls::NodeKey::generate()
        .unwrap()
        .csr_pem("intruder")
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cases = [
        ("garbage CSR", "garbage".to_string(), vec![]),
        (
            "CSR whose self-signature does not verify",
            broken_signature(&good_csr),
            vec![],
        ),
        (
            "extra name that is neither an address nor a DNS name",
            good_csr.clone(),
            vec!["not a name!".to_string()],
        ),
    ];
    for (case, csr_pem, sans) in cases {
        let request = pb::JoinRequest {
            token_id: token.id().to_string(),
            token_secret: token.secret().expose().to_string(),
            name: "intruder".into(),
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            pg_addr: String::new(),
            csr_pem,
            sans,
        };
        let refused = runtime
            .block_on(pgquorum::raft::join::request_join(
                &cluster.node(1).peer_addr(),
                &token,
                request,
            ))
            .expect_err(case);
        let message = format!("{refused:#}");
        assert!(
            message.contains("certificate signing request"),
            "{case}: refused for its CSR: {message}"
        );
        eprintln!("{case}: {message}");
    }
    let after = cluster.wait_converged(ELECTION, "the three members still agree");
    assert_eq!(
        member_names(&after),
        before,
        "no member was registered for a request that could not be signed"
    );
    // The one use is still there.
    let mut fourth = cluster.new_node("n4");
    assert_success(
        &fourth.join(&cluster.node(1).peer_addr(), &token_text),
        "join with the single-use token after the refusals",
    );
    fourth.start();
    eventually(ELECTION, "n4 is a member", || {
        let names = member_names(&cluster.node(1).list());
        names
            .iter()
            .any(|(_, n)| n == "n4")
            .then_some(())
            .ok_or(names)
    });
}

#[test]
fn a_removed_member_and_a_certificate_minted_for_a_member_are_refused_on_the_peer_port() {
    use pgquorum::tls::{ClusterCa, NodeIdentity, NodeKey};
    let mut cluster = TestCluster::start(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids: Vec<(u64, String)> = member_names(&cluster.node(1).list());
    let id_of = |name: &str| ids.iter().find(|(_, n)| n == name).unwrap().0;
    let (n1, n2, n3) = (id_of("n1"), id_of("n2"), id_of("n3"));
    let record = pgquorum::identity::StateDir::new(&cluster.node(1).state_dir)
        .load_record()
        .unwrap();
    let cluster_id = record.cluster_id;
    let addr = cluster.node(1).peer_addr();
    let dirs: Vec<_> = (1..=3).map(|i| cluster.node(i).state_dir.clone()).collect();
    let genuine = |i: usize| NodeIdentity::load(&dirs[i - 1]).unwrap();

    // n2 as itself: authorized (the malformed command is what fails).
    let answer = propose_as(&runtime, &genuine(2), &cluster_id, n1, &addr);
    assert!(
        answer.is_ok(),
        "n2's own certificate is accepted: {answer:?}"
    );

    // A certificate for n2's id signed with the cluster CA (every member holds its key), for
    // another key: refused.
    let ca_key = std::fs::read_to_string(cluster.node(3).state_dir.join("ca.key")).unwrap();
    let ca = ClusterCa::from_pem(
        genuine(3).ca_pem().to_string(),
        pgquorum::secret::Secret::new(ca_key),
    )
    .unwrap();
    let key = NodeKey::generate().unwrap();
    let minted_cert = ca
        .issue_node(n2, &cluster_id, &key.csr_pem("n2").unwrap(), &[])
        .unwrap();
    let minted = NodeIdentity::new(genuine(2).ca_pem().to_string(), minted_cert, key.key_pem());
    let refused = propose_as(&runtime, &minted, &cluster_id, n1, &addr)
        .expect_err("a certificate minted for n2's id is refused");
    assert!(
        refused.contains(&format!("presented for node {n2} is not for the key")),
        "refused for its key: {refused}"
    );

    // n3 removed: its own, genuine certificate is refused from then on.
    let n3_identity = genuine(3);
    let answer = propose_as(&runtime, &n3_identity, &cluster_id, n1, &addr);
    assert!(answer.is_ok(), "n3 is accepted while a member: {answer:?}");
    cluster.node_mut(3).kill();
    assert_success(
        &cluster.node(1).cli(&["node", "remove", "n3"]),
        "node remove n3",
    );
    eventually(
        ELECTION,
        "n3 refused after its removal",
        || match propose_as(&runtime, &n3_identity, &cluster_id, n1, &addr) {
            Err(message) if message.contains(&format!("node {n3} is not a member")) => Ok(()),
            other => Err(other),
        },
    );
    // The others are unaffected.
    let answer = propose_as(&runtime, &genuine(2), &cluster_id, n1, &addr);
    assert!(answer.is_ok(), "n2 still accepted: {answer:?}");
}

/// Everything a plain-text client gets back from `addr` after sending `request`, until the
/// server closes the connection.
fn plain_text_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connecting to the peer port");
    // The server gives a handshake 5 s; waiting longer than that means it kept us.
    stream
        .set_read_timeout(Some(scaled(Duration::from_secs(8))))
        .unwrap();
    stream.write_all(request).expect("writing the request");
    let started = Instant::now();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection stayed open for {:?} ({e}) after {:?}",
                started.elapsed(),
                String::from_utf8_lossy(request)
            ),
        }
    }
    reply
}

/// Whether `bytes` is nothing but TLS alert records (content type 21).
fn only_tls_alerts(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if bytes.len() < 5 || bytes[0] != 21 || bytes[1] != 3 {
            return false;
        }
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        if bytes.len() < 5 + len {
            return false;
        }
        bytes = &bytes[5 + len..];
    }
    true
}

#[test]
fn plain_text_connections_to_the_peer_port_get_no_answer() {
    let cluster = TestCluster::start(1);
    let addr = cluster.node(1).peer_addr();
    let http2_preface: &[u8] =
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let requests: [(&str, &[u8]); 2] = [
        ("HTTP/1.1 GET", b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n"),
        ("HTTP/2 preface", http2_preface),
    ];
    for (case, request) in requests {
        let reply = plain_text_exchange(&addr, request);
        assert!(
            only_tls_alerts(&reply),
            "{case}: the peer port answered plain text with more than a TLS alert: {:?}",
            String::from_utf8_lossy(&reply)
        );
        eprintln!("{case}: {} byte(s) back: {reply:?}", reply.len());
    }
    // The daemon shrugged it off.
    assert_eq!(cluster.node(1).get("/liveness").unwrap().0, 200);
    assert_success(&cluster.node(1).cli(&["token", "create"]), "token create");
}

#[test]
fn an_unknown_config_key_stops_run_with_exit_2_before_binding() {
    let node = Node::new(&test_name(), "n1");
    node.init(&[]);
    let config = node
        .default_config()
        .replace("[raft]\n", "[raft]\nelection_timout = \"1s\"\n");
    node.write_config(&config);

    let output = node.cli(&["run"]);
    let line = assert_error(&output, 2, "election_timout");
    assert!(
        line.contains(&node.config_path.display().to_string()),
        "names the file: {line}"
    );
    assert!(!output.stderr_text().contains("pgquorum started"));
    assert!(is_free(node.peer_port), "the peer port must not be bound");
    assert!(is_free(node.api_port), "the API port must not be bound");
}

/// The lease as `node`'s view has it: (holder id, epoch, renewal seq).
fn lease_of(node: &Node) -> Result<(u64, u64, u64), String> {
    let view = node.cluster_view()?;
    let lease = &view["lease"];
    match (
        lease["holder"].as_u64(),
        lease["epoch"].as_u64(),
        lease["seq"].as_u64(),
    ) {
        (Some(holder), Some(epoch), Some(seq)) => Ok((holder, epoch, seq)),
        _ => Err(format!("no lease in {view}")),
    }
}

#[test]
fn floods_of_idle_connections_on_the_peer_rest_and_proxy_ports_cost_no_lease() {
    use std::net::SocketAddr;
    if !common::require_postgres() {
        return;
    }
    /// Idle connections opened to each port: more than the peer (512), REST (256) and
    /// proxy (1000) caps.
    const FLOOD: usize = 1500;
    let cluster = TestCluster::start_with_postgres(3);
    let (holder, epoch, _) = eventually(FORMATION, "a lease holder", || lease_of(cluster.node(1)));
    let view = cluster.node(1).list();
    let primary = cluster.index_of_id(&view, holder);
    let observer = cluster.node(if primary == 1 { 2 } else { 1 });
    let target = cluster.node(primary);
    eventually(FORMATION, "a writable primary", || {
        match target.sql("select pg_is_in_recovery()") {
            Ok(answer) if answer == "f" => Ok(()),
            other => Err(other),
        }
    });
    let ports: [(&str, SocketAddr); 3] = [
        ("peer", target.peer_addr().parse().unwrap()),
        ("REST", target.api_addr().parse().unwrap()),
        (
            "writer proxy",
            format!("127.0.0.1:{}", target.writer_port).parse().unwrap(),
        ),
    ];
    // Connections that say nothing, held open from here to the end of the check. The
    // kernel completes each TCP handshake before the daemon accepts or closes it.
    let mut flood = Vec::new();
    for (port, addr) in ports {
        for _ in 0..FLOOD {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(stream) => flood.push(stream),
                Err(e) => panic!("connecting to the {port} port: {e}"),
            }
        }
    }
    let (_, _, at_flood) = lease_of(observer).unwrap();
    // Ten renewals (5 s at the harness's loop_wait) with the flood held, all by the same
    // holder in the same epoch.
    let renewed = eventually(
        Duration::from_secs(30),
        "ten lease renewals under the flood",
        || {
            let (now_holder, now_epoch, seq) = lease_of(observer)?;
            assert_eq!(
                (now_holder, now_epoch),
                (holder, epoch),
                "the lease moved during the flood"
            );
            (seq >= at_flood + 10)
                .then_some(seq)
                .ok_or(format!("seq {seq}"))
        },
    );
    assert!(
        target.sql("select 1").is_ok(),
        "the primary still answers on its socket"
    );
    drop(flood);
    // The ports serve again once the flood is gone.
    eventually(
        Duration::from_secs(30),
        "the flooded REST port answers",
        || target.get("/liveness").map_err(|e| e.to_string()),
    );
    let (after_holder, after_epoch, _) = lease_of(observer).unwrap();
    assert_eq!((after_holder, after_epoch), (holder, epoch), "no failover");
    let log = target.log();
    assert!(
        log.contains("connection limit reached"),
        "the caps were reached and logged: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    eprintln!("lease renewed to seq {renewed} under {FLOOD} idle connections per port");
}

#[test]
fn a_revoked_join_token_is_listed_no_more_and_admits_no_one() {
    let cluster = TestCluster::start(3);
    let created = cluster.node(1).cli(&["token", "create", "--uses", "2"]);
    assert_success(&created, "token create");
    let token = created.stdout_text().trim().to_string();
    let (id, secret) = {
        let parts: Vec<&str> = token.split('.').collect();
        (parts[2].to_string(), parts[3].to_string())
    };
    // Another member lists it once it has applied the token.
    let listed = eventually(ELECTION, "n2 lists the new token", || {
        let listed = cluster.node(2).cli(&["token", "list", "--json"]);
        listed
            .stdout_text()
            .contains(&id)
            .then_some(listed)
            .ok_or(())
    });
    assert_success(&listed, "token list --json");
    let json: serde_json::Value = serde_json::from_str(listed.stdout_text().trim()).unwrap();
    let entry = json["tokens"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("token {id} listed: {json}"));
    assert_eq!(entry["uses_left"], 2);
    assert_eq!(entry["usable"], true);
    let table = cluster.node(2).cli(&["token", "list"]);
    assert!(table.stdout_text().contains(&id), "{}", table.stdout_text());
    for output in [&listed, &table] {
        assert!(
            !output.stdout_text().contains(&secret) && !output.stdout_text().contains("sha256"),
            "no secret, nor its hash, is listed"
        );
    }

    // Refused until every member's binary is known to apply the revocation; then revoked.
    eventually(ELECTION, "token revoke", || {
        let output = cluster.node(1).cli(&["token", "revoke", &id]);
        output
            .status
            .success()
            .then_some(())
            .ok_or(output.stderr_text())
    });
    // Listed by another member once it has applied the revocation.
    eventually(ELECTION, "the revoked token no longer listed by n3", || {
        let listed = cluster
            .node(3)
            .cli(&["token", "list", "--json"])
            .stdout_text();
        (!listed.contains(&id)).then_some(()).ok_or(listed)
    });
    let joiner = cluster.new_node("late");
    assert_error(
        &joiner.join(&cluster.node(1).peer_addr(), &token),
        1,
        REFUSED,
    );
    assert!(
        !joiner.state_dir.exists(),
        "a refused join creates no state"
    );
    assert_error(
        &cluster.node(1).cli(&["token", "revoke", &id]),
        1,
        &format!("there is no join token {id}"),
    );
}

#[test]
fn unsafe_rest_calls_are_taken_only_from_the_allowlist() {
    let mut node = Node::new(&test_name(), "n1");
    let config = std::fs::read_to_string(&node.config_path).unwrap();
    let with_allowlist =
        |list: &str| config.replacen("[api]\n", &format!("[api]\nallowlist = {list}\n"), 1);
    node.write_config(&with_allowlist(r#"["10.255.255.1", "fd00::/8"]"#));
    node.init(&[]);
    node.start();
    eventually(ELECTION, "the REST API answers", || {
        node.get("/cluster").map_err(|e| e.to_string())
    });
    // From 127.0.0.1, outside the list: refused, before the token is even looked at.
    let refused = node.cli(&["token", "create"]);
    assert_error(&refused, 1, "is not in this member's [api] allowlist");
    let (status, _) = node.request("POST", "/admin/pause").unwrap();
    assert_eq!(status, 403, "an unsafe call from outside the allowlist");
    let (status, _) = node.get("/liveness").unwrap();
    assert_eq!(status, 200, "read-only endpoints stay open");
    assert!(node.terminate().success());

    node.write_config(&with_allowlist(r#"["127.0.0.0/8"]"#));
    node.start();
    eventually(ELECTION, "token create from an allowed address", || {
        let output = node.cli(&["token", "create"]);
        output
            .status
            .success()
            .then_some(())
            .ok_or(output.stderr_text())
    });
    assert!(node.terminate().success());

    node.write_config(&with_allowlist(r#"["10.0.0.0/33"]"#));
    assert_error(
        &node.cli(&["config", "check"]),
        2,
        "[api] allowlist: \"10.0.0.0/33\" is not an address or a network",
    );
}

/// The status code at the start of an HTTP response (`HTTP/1.1 400 ...`), if any.
fn http_status(reply: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(reply);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn malformed_and_oversized_http_is_refused_and_the_api_keeps_serving() {
    let mut node = Node::new(&test_name(), "n1");
    node.init(&[]);
    node.start();
    eventually(ELECTION, "the REST API answers", || {
        node.get("/liveness").map_err(|e| e.to_string())
    });
    let huge_header = format!(
        "GET /liveness HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let cases: [(&str, Vec<u8>, &[u16]); 4] = [
        (
            "garbage",
            b"\x16\x03\x01\x00\xff not http at all\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "a request line without a version",
            b"GET /\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "a bad header line",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
            &[400],
        ),
        ("a 512 KiB header", huge_header.into_bytes(), &[400, 431]),
    ];
    for (case, request, expected) in cases {
        let reply = node
            .api_exchange(&request, scaled(Duration::from_secs(8)))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let status = http_status(&reply);
        assert!(
            status.is_some_and(|s| expected.contains(&s)),
            "{case}: wanted one of {expected:?}, got {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(200)])
        );
        let (ok, _) = node.get("/liveness").expect("the API still answers");
        assert_eq!(ok, 200, "after {case}");
    }
    assert!(node.terminate().success());
}

/// What a refused input must not have changed: the members, the join tokens (ids and uses)
/// and the dynamic configuration, as member 1 reports them.
fn observable_state(cluster: &TestCluster) -> String {
    let node = cluster.node(1);
    let members = member_names(&node.list());
    let listed: serde_json::Value =
        serde_json::from_str(node.cli(&["token", "list", "--json"]).stdout_text().trim())
            .unwrap_or_default();
    // Ids and uses left: `usable` turns false by itself as a token expires.
    let tokens: Vec<String> = (listed["tokens"].as_array().into_iter().flatten())
        .map(|t| format!("{} {}", t["id"], t["uses_left"]))
        .collect();
    let config = node.cli(&["config", "show"]).stdout_text();
    format!("{members:?}\n{tokens:?}\n{config}")
}

/// One bad input: what it is, how to send it (the refusal it got, or `Err` with what came
/// back if it was not refused), and a needle the refusal must contain.
type BadInput<'a> = (
    &'a str,
    Box<dyn Fn() -> Result<String, String> + 'a>,
    &'a str,
);

#[test]
fn every_bad_input_is_refused_with_its_reason_and_changes_nothing() {
    use pgquorum::raft::proto::pb;
    let cluster = TestCluster::start(3);
    let n1 = cluster.node(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let created = n1.cli(&["token", "create", "--uses", "5"]);
    assert_success(&created, "token create");
    let good = created.stdout_text().trim().to_string();
    let token: pgquorum::tls::JoinTokenString = good.parse().unwrap();
    let short = n1.cli(&["token", "create", "--ttl", "1s"]);
    assert_success(&short, "token create --ttl 1s");
    let expiring = short.stdout_text().trim().to_string();
    let secret = good.rsplit('.').next().unwrap().to_string();
    let wrong_secret = with_secret(&good, &"x".repeat(secret.len()));
    let unknown_id = {
        let parts: Vec<&str> = good.split('.').collect();
        format!("{}.{}.zzzzzz.{}", parts[0], parts[1], parts[3])
    };
    let peer = n1.peer_addr();
    let api = n1.api_addr();
    let refused_cli = |output: std::process::Output| {
        if output.status.success() {
            Err(format!("accepted: {}", output.stdout_text()))
        } else {
            Ok(output.stderr_text())
        }
    };
    let join_with = |token: String| {
        let joiner = cluster.new_node("intruder");
        let output = joiner.join(&peer, &token);
        if joiner.state_dir.exists() {
            return Err(format!("{} was created", joiner.state_dir.display()));
        }
        refused_cli(output)
    };
    let http = |request: Vec<u8>| {
        let reply = n1
            .api_exchange(&request, scaled(Duration::from_secs(8)))
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&reply[..reply.len().min(60)]).into_owned())
    };
    let join_request = |csr_pem: String, sans: Vec<String>| {
        let request = pb::JoinRequest {
            token_id: token.id().to_string(),
            token_secret: token.secret().expose().to_string(),
            name: "intruder".into(),
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            pg_addr: String::new(),
            csr_pem,
            sans,
        };
        match runtime.block_on(pgquorum::raft::join::request_join(&peer, &token, request)) {
            Ok(reply) => Err(format!("joined as node {}", reply.node_id)),
            Err(e) => Ok(format!("{e:#}")),
        }
    };
    let csr = pgquorum::tls::NodeKey::generate()
        .unwrap()
        .csr_pem("intruder")
        .unwrap();
    let cases: Vec<BadInput> = vec![
        (
            "plain text on the peer port",
            Box::new(|| {
                let reply = plain_text_exchange(&peer, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                if only_tls_alerts(&reply) {
                    Ok("nothing but TLS alerts".into())
                } else {
                    Err(String::from_utf8_lossy(&reply).into_owned())
                }
            }),
            "TLS alerts",
        ),
        (
            "TLS without a client certificate, calling a member RPC",
            Box::new(|| {
                let tls = pgquorum::tls::pinned_client_config(token.ca_sha256()).unwrap();
                let peers = pgquorum::raft::Peers::new("any".into(), tls);
                let request = pb::ProposeRequest {
                    command: b"{}".to_vec(),
                };
                match runtime.block_on(async { peers.peer_client(1, &peer).propose(request).await })
                {
                    Ok(_) => Err("accepted".into()),
                    Err(status) => Ok(status.message().to_string()),
                }
            }),
            "a client certificate of this cluster is required",
        ),
        (
            "a wrong token secret",
            Box::new(|| join_with(wrong_secret.clone())),
            REFUSED,
        ),
        (
            "an unknown token id",
            Box::new(|| join_with(unknown_id.clone())),
            REFUSED,
        ),
        (
            "an expired token",
            Box::new(|| {
                // Its one second has usually passed while the cases before ran; if not, wait
                // for the clock (not for a join: one in time would be admitted).
                let expiring_id = expiring.split('.').nth(2).unwrap().to_string();
                let listed = n1.cli(&["token", "list", "--json"]).stdout_text();
                let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
                let expires_at = (listed["tokens"].as_array().into_iter().flatten())
                    .find(|t| t["id"] == expiring_id.as_str())
                    .and_then(|t| t["expires_at_unix"].as_u64())
                    .expect("the short token is listed");
                eventually(Duration::from_secs(5), "the short token's expiry", || {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    (now > expires_at).then_some(()).ok_or(now)
                });
                join_with(expiring.clone())
            }),
            "expired at unix time",
        ),
        (
            "a garbage CSR",
            Box::new(|| join_request("garbage".into(), vec![])),
            "certificate signing request",
        ),
        (
            "a CSR with a broken signature",
            Box::new(|| join_request(broken_signature(&csr), vec![])),
            "certificate signing request",
        ),
        (
            "a CSR with a bad extra name",
            Box::new(|| join_request(csr.clone(), vec!["not a name!".into()])),
            "neither an IP address nor a DNS name",
        ),
        (
            "plain HTTP on the HTTPS REST port",
            Box::new(|| {
                let reply = plain_text_exchange(&api, b"GET /cluster HTTP/1.1\r\nHost: x\r\n\r\n");
                Ok(String::from_utf8_lossy(&reply).into_owned())
            }),
            "this port serves HTTPS",
        ),
        (
            "garbage on the REST port",
            Box::new(|| http(b"\x16\x03\x01 garbage\r\n\r\n".to_vec())),
            "HTTP/1.1 400",
        ),
        (
            "a 512 KiB header on the REST port",
            Box::new(|| {
                http(
                    format!(
                        "GET /liveness HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
                        "a".repeat(512 * 1024)
                    )
                    .into_bytes(),
                )
            }),
            "HTTP/1.1 431",
        ),
        (
            "an admin call without the bearer token",
            Box::new(|| {
                let (status, body) = n1
                    .request("POST", "/admin/pause")
                    .map_err(|e| e.to_string())?;
                Ok(format!("{status} {body}"))
            }),
            "401",
        ),
        (
            "an include directive as a parameter",
            Box::new(|| {
                refused_cli(n1.cli(&["config", "set", "postgresql_parameters.include=/etc/passwd"]))
            }),
            "is not a parameter but a directive",
        ),
        (
            "a parameter value with a newline",
            Box::new(|| {
                refused_cli(n1.cli(&[
                    "config",
                    "set",
                    "postgresql_parameters.work_mem=64MB\nfsync=off",
                ]))
            }),
            "holds a newline",
        ),
        (
            "a parameter pgquorum manages",
            Box::new(|| {
                refused_cli(n1.cli(&[
                    "config",
                    "set",
                    "postgresql_parameters.primary_conninfo=host=evil",
                ]))
            }),
            "is managed by pgquorum itself",
        ),
        (
            "a pg_hba rule that is not one",
            Box::new(|| refused_cli(n1.cli(&["config", "set", r#"pg_hba=["trust everyone"]"#]))),
            "does not start with a connection type",
        ),
        (
            "an unknown dynamic config key",
            Box::new(|| refused_cli(n1.cli(&["config", "set", "tll=3s"]))),
            "unknown field",
        ),
        (
            "revoking a token that does not exist",
            Box::new(|| refused_cli(n1.cli(&["token", "revoke", "nope00"]))),
            "there is no join token nope00",
        ),
        (
            "finishing a CA rotation that was never started",
            Box::new(|| refused_cli(n1.cli(&["ca", "rotate", "--finish"]))),
            "no CA rotation is under way",
        ),
    ];
    // n1 may be a follower that has not applied the two new tokens yet.
    let ids = [
        token.id().to_string(),
        expiring.split('.').nth(2).unwrap().to_string(),
    ];
    let before = eventually(ELECTION, "n1 lists both new tokens", || {
        let state = observable_state(&cluster);
        ids.iter()
            .all(|id| state.contains(id.as_str()))
            .then_some(state.clone())
            .ok_or(state)
    });
    let mut report = Vec::new();
    for (case, send, needle) in &cases {
        let refusal = send().unwrap_or_else(|accepted| panic!("{case}: not refused: {accepted}"));
        assert!(
            refusal.contains(needle),
            "{case}: refused, but not for {needle:?}: {refusal}"
        );
        let after = observable_state(&cluster);
        assert_eq!(
            after, before,
            "{case}: the refusal changed the cluster's state"
        );
        report.push(format!(
            "{case}: {}",
            refusal.lines().next().unwrap_or_default()
        ));
    }
    eprintln!(
        "{} bad inputs, each refused, state unchanged:\n  {}",
        cases.len(),
        report.join("\n  ")
    );
    assert_eq!(
        cases.len(),
        19,
        "the README's security section counts these"
    );
}
