//! Hosts as Linux network namespaces (DESIGN §8.3): each host is a namespace with its own
//! address on a bridge, loopback up; the test process reaches every host through the bridge.
//! A host is cut off by taking its link to the bridge down, and healed by bringing it up.
//!
//! ```text
//!   root namespace: bridge pgq<k>br 10.213.<k>.254/24
//!     ├── veth pgq<k>h1 ── namespace pgq<k>-h1: eth0 10.213.<k>.1/24, lo
//!     ├── veth pgq<k>h2 ── namespace pgq<k>-h2: eth0 10.213.<k>.2/24, lo
//!     ├── ...
//!     └── veth pgq<k>cl ── namespace pgq<k>-cl: eth0 10.213.<k>.200/24, lo   (the client)
//! ```
//!
//! The client namespace is a machine on the same LAN that runs no pgquorum: it reaches the
//! floating VIP (10.213.<k>.100) the way an application would, through its own neighbour
//! (ARP) cache, which the tests read to see the gratuitous ARP of a new VIP holder. Every
//! address used here is inside 10.213.0.0/16.
//!
//! Needs root (CAP_NET_ADMIN) and `ip`: without them [`Hosts::create`] returns `None` so the
//! test skips, except when `CI=true`, where it fails.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A set of hosts and one client; removed (namespaces, links, bridge) on drop.
pub struct Hosts {
    k: u32,
    n: usize,
    /// Holds an exclusive `flock` on `<LOCK_DIR>/<k>.lock` while these hosts exist: another
    /// test process (or a bench) never picks the same `k`, and one that finds the lock free
    /// knows that namespaces numbered `k` are leftovers of a dead process.
    _lock: std::fs::File,
}

/// Where the per-`k` lock files live.
const LOCK_DIR: &str = "/run/pgquorum-test-hosts";

/// Locks the first free `k` from `start` on (mod 250): the lock file, held.
fn lock_free_k(start: u32) -> (u32, std::fs::File) {
    use std::os::fd::AsRawFd as _;
    std::fs::create_dir_all(LOCK_DIR).expect("creating the hosts' lock dir");
    for offset in 0..250 {
        let k = (start + offset) % 250;
        let file = std::fs::File::create(format!("{LOCK_DIR}/{k}.lock"))
            .expect("creating a hosts lock file");
        // SAFETY: flock(2) on a descriptor we own; LOCK_NB makes it return at once.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (k, file);
        }
    }
    panic!("all 250 host sets are in use (locks in {LOCK_DIR})");
}

impl Hosts {
    /// `n` hosts, or `None` (after a message) when this machine cannot make them and we are
    /// not in CI.
    pub fn create(n: usize) -> Option<Hosts> {
        if !super::needs(can_create()) {
            return None;
        }
        // Distinct per test in this process and unlikely to meet another test binary's; the
        // lock makes sure.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let start = (std::process::id() % 50) * 5 + NEXT.fetch_add(1, Ordering::Relaxed) % 5;
        let (k, lock) = lock_free_k(start);
        let hosts = Hosts { k, n, _lock: lock };
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
        let client = hosts.client();
        let veth = hosts.client_veth();
        ip(&["netns", "add", &client]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &client,
        ]);
        ip(&["link", "set", &veth, "master", &bridge]);
        ip(&["link", "set", &veth, "up"]);
        let addr = format!("{}/24", hosts.client_ip());
        ip(&["-n", &client, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &client, "link", "set", "eth0", "up"]);
        ip(&["-n", &client, "link", "set", "lo", "up"]);
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

    /// The client namespace: on the same bridge as the hosts, running no pgquorum.
    pub fn client(&self) -> String {
        format!("pgq{}-cl", self.k)
    }

    /// The client's address.
    pub fn client_ip(&self) -> String {
        format!("10.213.{}.200", self.k)
    }

    /// The floating VIP of a test on these hosts (no prefix; it is a /24 like the hosts').
    pub fn vip(&self) -> String {
        format!("10.213.{}.100", self.k)
    }

    /// Gives every host and the client an IPv6 address as well, `fd00:213:<k>::<i>/64`
    /// (client `::200`), without duplicate address detection so they are usable at once.
    pub fn add_ipv6(&self) {
        let mut all: Vec<(String, usize)> = (1..=self.n).map(|i| (self.netns(i), i)).collect();
        all.push((self.client(), 200));
        for (ns, i) in all {
            let addr = format!("fd00:213:{}::{i}/64", self.k);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0", "nodad"]);
        }
    }

    /// The IPv6 VIP for [`Hosts::add_ipv6`]'s subnet (no prefix; it is a /64).
    pub fn vip6(&self) -> String {
        format!("fd00:213:{}::100", self.k)
    }

    /// The hosts (1-based) whose `eth0` carries `address` (IPv4 or IPv6, no prefix), one
    /// `ip` call per host.
    pub fn holders_of(&self, address: &str) -> Vec<usize> {
        // Compared as addresses, not text: `ip` prints IPv6 canonically ("fd00:213::100"),
        // which differs from "fd00:213:0::100" when k is 0.
        let wanted: std::net::IpAddr = address
            .parse()
            .unwrap_or_else(|e| panic!("holders_of: {address:?} is not an address: {e}"));
        (1..=self.n)
            .filter(|&i| {
                let ns = self.netns(i);
                let text = stdout_of(
                    Command::new("ip").args(["-n", &ns, "-o", "addr", "show", "dev", "eth0"]),
                )
                .unwrap_or_else(|e| panic!("{e}"));
                text.split_whitespace()
                    .any(|w| w.split('/').next().and_then(|a| a.parse().ok()) == Some(wanted))
            })
            .collect()
    }

    /// The MAC the client's neighbour entry for `address` names, if it has one.
    pub fn client_neighbour_mac(&self, address: &str) -> Option<String> {
        let text =
            stdout_of(Command::new("ip").args(["-n", &self.client(), "neigh", "show", address]))
                .unwrap_or_else(|e| panic!("{e}"));
        word_after(&text, "lladdr")
    }

    /// The MAC address of host `i`'s `eth0`.
    pub fn mac(&self, i: usize) -> String {
        let ns = self.netns(i);
        let text = stdout_of(Command::new("ip").args(["-n", &ns, "-o", "link", "show", "eth0"]))
            .unwrap_or_else(|e| panic!("{e}"));
        word_after(&text, "link/ether")
            .unwrap_or_else(|| panic!("no link/ether in the link of {ns}: {text}"))
    }

    /// Whether host `i`'s `eth0` carries the VIP now (one `ip` call; works while it is cut).
    pub fn has_vip(&self, i: usize) -> bool {
        let ns = self.netns(i);
        let text =
            stdout_of(Command::new("ip").args(["-n", &ns, "-o", "addr", "show", "dev", "eth0"]))
                .unwrap_or_else(|e| panic!("{e}"));
        text.contains(&format!("inet {}/", self.vip()))
    }

    /// The hosts (1-based) whose `eth0` carries the VIP, asked one after the other: not an
    /// atomic snapshot.
    pub fn vip_holders(&self) -> Vec<usize> {
        (1..=self.n).filter(|&i| self.has_vip(i)).collect()
    }

    /// The client's neighbour (ARP) entry for the VIP as `ip neigh` prints it; empty when
    /// there is none. Reading it sends nothing.
    pub fn client_neighbour_entry(&self) -> String {
        stdout_of(Command::new("ip").args(["-n", &self.client(), "neigh", "show", &self.vip()]))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The MAC address the client would send VIP traffic to (`lladdr` of its neighbour entry),
    /// if it has one.
    pub fn client_vip_mac(&self) -> Option<String> {
        word_after(&self.client_neighbour_entry(), "lladdr")
    }

    /// Who holds the VIP, each host's MAC and the client's neighbour entry: context for a
    /// failing assertion.
    pub fn vip_report(&self) -> String {
        let hosts: Vec<String> = (1..=self.n)
            .map(|i| {
                let holds = if self.has_vip(i) {
                    "has the VIP"
                } else {
                    "no VIP"
                };
                format!("h{i} {} {holds}", self.mac(i))
            })
            .collect();
        format!(
            "{}; client neighbour entry for {}: {:?}",
            hosts.join(", "),
            self.vip(),
            self.client_neighbour_entry()
        )
    }

    fn client_veth(&self) -> String {
        format!("pgq{}cl", self.k)
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
            .args(["netns", "del", &self.client()])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.client_veth()])
            .output();
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

/// `program`, to be run inside network namespace `ns` (`ip netns exec <ns> <program>`); add
/// arguments and environment, then run it, e.g. with [`stdout_of`].
pub fn command_in(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(program);
    command
}

/// Runs `command` to completion (stdin closed): its stdout, trimmed, if it exited 0; else
/// the command line, its status and its stderr.
pub fn stdout_of(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{command:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The whitespace-separated word after `key` in `text`.
fn word_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(str::to_string)
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
