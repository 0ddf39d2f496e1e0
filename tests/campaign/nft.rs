//! nftables in a host's network namespace: the nemesis's partitions and the regions' NAT
//! rules are scripts run here.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::common::netns::command_in;

/// Runs an nftables script in namespace `ns`; panics with its stderr if it fails.
pub fn nft(ns: &str, script: &str) {
    let mut child = command_in(ns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft (apt-get install nftables)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("writing the nft script");
    let out = child.wait_with_output().expect("waiting for nft");
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\nscript:\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Whether `nft` can be run here.
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}
