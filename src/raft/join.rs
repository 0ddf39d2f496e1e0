//! The client side of the Join RPC: a host that is not a member yet reaches a member's peer
//! port over TLS pinned to the token's CA hash (it has no certificate to present, and trusts
//! no CA yet), and sends its request.

use std::time::Duration;

use anyhow::anyhow;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::proto::pb;
use crate::tls::{self, JoinTokenString};

/// Sends `request` to `peer`, whose certificate must chain to the CA that `token` pins.
/// Errors name the peer and carry its refusal's message.
pub async fn request_join(
    peer: &str,
    token: &JoinTokenString,
    request: pb::JoinRequest,
) -> anyhow::Result<pb::JoinReply> {
    let tls = tls::pinned_client_config(token.ca_sha256())?;
    let connector = TlsConnector::from(tls);
    let peer_addr = peer.to_string();
    let connect = tower::service_fn(move |_: tonic::transport::Uri| {
        let connector = connector.clone();
        let peer_addr = peer_addr.clone();
        async move {
            let tcp = TcpStream::connect(&peer_addr).await?;
            // The pin, not the name, is the trust anchor here; any name will do.
            let name = ServerName::try_from("pgquorum-join").expect("valid name");
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://peer")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_with_connector(connect)
        .await
        .map_err(|e| anyhow!("connecting to {peer}: {}", cause(&e)))?;
    let mut client = pb::peer_client::PeerClient::new(channel);
    let reply = client
        .join(request)
        .await
        .map_err(|status| anyhow!("joining through {peer}: {}", status.message()))?;
    Ok(reply.into_inner())
}

/// The innermost cause of an error: tonic's transport errors wrap the useful part (a
/// refused pin, a refused connection) in layers such as "transport error: unexpected error".
fn cause(e: &dyn std::error::Error) -> String {
    let mut innermost = e;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}
