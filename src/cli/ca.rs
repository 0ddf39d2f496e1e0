//! `pgquorum ca export` and `pgquorum ca rotate [--finish]` (see `crate::ca_rotation`).

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{client, output};
use crate::config::NodeConfig;

/// The CA certificates this member's clients trust (both during a CA rotation).
pub(super) fn trusted(config: &NodeConfig) -> anyhow::Result<String> {
    crate::ca_rotation::trusted_pem_in(&config.state_dir).with_context(|| {
        format!(
            "reading the cluster CA in {}: is this node set up (`pgquorum init` or `node join`)?",
            config.state_dir.display()
        )
    })
}

/// `GET /admin/ca`, as `crate::ca_rotation::Status` serves it.
#[derive(Debug, Deserialize)]
struct Status {
    ca_sha256: String,
    next_ca_sha256: Option<String>,
    waiting: Vec<String>,
}

async fn status(config: &NodeConfig) -> anyhow::Result<Status> {
    // A fresh client each time: the API's certificate and the trusted CAs change when the
    // rotation finishes.
    client(config, true)?.get("/admin/ca").await
}

fn short(sha256: &str) -> String {
    sha256.chars().take(16).collect()
}

/// Asks the daemon to start (or finish) a CA rotation, then follows it until every member
/// has moved to the new CA (or this member uses the new CA alone), for at most `wait`.
pub(super) async fn rotate(
    config: &NodeConfig,
    finish: bool,
    wait: Duration,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "finish": finish });
    let what = match finish {
        true => "finishing the CA rotation",
        false => "starting a CA rotation",
    };
    let before = status(config).await.context(what)?;
    let answer: Status = (client(config, true)?)
        .post("/admin/ca/rotate", &body)
        .await
        .context(what)?;
    let next = match (finish, before.next_ca_sha256, answer.next_ca_sha256) {
        (true, Some(next), _) | (false, _, Some(next)) => next,
        _ => bail!("{what}: the daemon reports no rotation under way"),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let last = match status(config).await {
            Ok(status) if finish && status.ca_sha256 == next => {
                output::line(&format!(
                    "CA rotation finished: the cluster CA is now {}…; the old one is trusted no \
                     more and join tokens made before are revoked; clients need only \
                     `pgquorum ca export` from now on",
                    short(&next)
                ));
                return Ok(());
            }
            Ok(status) if !finish && status.waiting.is_empty() => {
                output::line(&format!(
                    "every member trusts the old and the new CA ({}…) and presents a \
                     certificate of the new one. Give clients `pgquorum ca export` (both CAs), \
                     then run `pgquorum ca rotate --finish`",
                    short(&next)
                ));
                return Ok(());
            }
            Ok(status) => format!("members still to move: {}", status.waiting.join(", ")),
            // While this member switches its API to the new CA.
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{what}: not done after {} ({last}); members move by themselves once up (see \
                 their logs); run the same command again to keep waiting",
                humantime::format_duration(wait)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
