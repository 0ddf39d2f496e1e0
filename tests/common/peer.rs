//! The harness as a member on the peer port: calls made with a given node identity, to see
//! whether a member accepts it.

/// What `identity` gets from member `target` (at `addr`) for a Propose call whose command is
/// not JSON: `Ok(status)` for a caller that got past authorization (the command is refused
/// as malformed, or this member is not the leader), the refusal's message otherwise.
pub fn propose_as(
    runtime: &tokio::runtime::Runtime,
    identity: &pgquorum::tls::NodeIdentity,
    cluster_id: &str,
    target: u64,
    addr: &str,
) -> Result<String, String> {
    let pins = pgquorum::tls::KeyPins::default();
    let slot = pgquorum::tls::node_chain_slot(identity).expect("a certificate slot");
    let trust = pgquorum::tls::Trust::new(identity.ca_pem()).expect("the CA parses");
    let tls = pgquorum::tls::member_client_config(trust, slot, cluster_id, pins)
        .expect("a client config");
    let peers = pgquorum::raft::Peers::new(cluster_id.to_string(), tls);
    let request = pgquorum::raft::proto::pb::ProposeRequest {
        command: b"not a command".to_vec(),
    };
    let answer = runtime.block_on(async { peers.peer_client(target, addr).propose(request).await });
    match answer {
        Ok(reply) => panic!("a malformed command was accepted: {reply:?}"),
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            Err(status.message().to_string())
        }
        Err(status) => Ok(format!("{:?}: {}", status.code(), status.message())),
    }
}
