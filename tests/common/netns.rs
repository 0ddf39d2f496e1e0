//! Hosts as Linux network namespaces (DESIGN §8.3): each host is a namespace with its own
//! address on a bridge, loopback up; the test process reaches every host through the bridge.
//! A host is cut off by taking its link to the bridge down, and healed by bringing it up.
//!
//! ```text
//!   root namespace: bridge pgq<k>br 10.213.<k>.254/24
//!     ├── veth pgq<k>h1 ── namespace pgq<k>-h1: eth0 10.213.<k>.1/24, lo
//!     ├── veth pgq<k>h2 ── namespace pgq<k>-h2: eth0 10.213.<k>.2/24, lo
//!     └── ...
//! ```
//!
//! Needs root (CAP_NET_ADMIN) and `ip`: without them [`Hosts::create`] returns `None` so the
//! test skips, except when `CI=true`, where it fails.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A set of hosts; removed (namespaces, links, bridge) on drop.
pub struct Hosts {
    k: u32,
    n: usize,
}

impl Hosts {
    /// `n` hosts, or `None` (after a message) when this machine cannot make them and we are
    /// not in CI.
    pub fn create(n: usize) -> Option<Hosts> {
        if let Err(why) = can_create() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "network namespace tests must run in CI, but {why}"
            );
            eprintln!("skipping: {why}");
            return None;
        }
        // Distinct per test in this process and unlikely to meet another test binary's.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = (std::process::id() % 50) * 5 + NEXT.fetch_add(1, Ordering::Relaxed) % 5;
        let hosts = Hosts { k, n };
        hosts.remove_leftovers();
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.213.{k}.254/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 1..=n {
            let ns = hosts.netns(i);
            let veth = hosts.veth(i);
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", &bridge]);
            ip(&["link", "set", &veth, "up"]);
            let addr = format!("{}/24", hosts.ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        Some(hosts)
    }

    /// Host `i`'s (1-based) address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.213.{}.{i}", self.k)
    }

    /// Host `i`'s namespace name, for `ip netns exec`.
    pub fn netns(&self, i: usize) -> String {
        format!("pgq{}-h{i}", self.k)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    /// Cuts host `i` off from every other host and from the test process.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]);
    }

    /// Undoes [`Hosts::cut`].
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "up"]);
    }

    fn bridge(&self) -> String {
        format!("pgq{}br", self.k)
    }

    fn veth(&self, i: usize) -> String {
        format!("pgq{}h{i}", self.k)
    }

    fn remove_leftovers(&self) {
        for i in 1..=self.n {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(i)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.remove_leftovers();
    }
}

/// Why this process cannot create namespaces, if it cannot.
fn can_create() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("creating network namespaces needs root".to_string());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("the `ip` command (iproute2) is missing".to_string()),
    }
}

/// Runs `ip <args>`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
