//! Three regions on one machine: every TCP path between two hosts goes through a relay that
//! delays it (the kernel here has no netem).
//!
//! ```text
//!   host i's namespace                                        host j's namespace
//!   daemon ─► J:7400 ─(nft dnat)─► I:relay(i→j, 7400) ─relay, +delay each way─► J:7400
//! ```
//!
//! For each ordered pair of hosts (i, j) and each port a member serves to its peers (Raft and
//! status on the peer port, the API, PostgreSQL for replication, cloning, rewind and the proxy's
//! backends), a relay listens in host i's namespace on i's own address, and a NAT rule in that
//! namespace sends i's connections to j's port there. The relay's own upstream connection,
//! also made from i's namespace, carries a firewall mark that the NAT rule lets through. So
//! a connection from i to j is delayed once per direction (a round trip costs twice the
//! delay), the far end sees it come from i's address as without the relay, and the
//! nemesis's partitions (filter rules on the peers' addresses in i's namespace) cut the
//! relayed paths exactly as they cut direct ones. Clients outside the hosts reach them
//! directly: each is near the member it talks to.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use super::common::netns::Hosts;
use super::nft::nft;
use super::relay::{Link, Relay, RelayHandle};

/// The firewall mark of the relays' upstream connections.
const MARK: u32 = 0x2a;
/// The nftables table of the NAT rules, in each host's namespace.
const TABLE: &str = "pgq_regions";
/// Relays for paths to host j listen on `RELAY_BASE + 100 j + k` (k: the port's index).
const RELAY_BASE: u16 = 20000;

/// The relays and NAT rules; dropping it stops the relays (the rules go with the
/// namespaces).
pub struct Regions {
    relays: Vec<RelayHandle>,
}

impl Regions {
    /// Puts a relay with `one_way` delay on every path between `hosts` to each of `ports`.
    pub fn create(hosts: &Hosts, one_way: Duration, ports: &[u16]) -> Regions {
        let mut relays = Vec::new();
        for i in 1..=hosts.len() {
            let ns = hosts.netns(i);
            let own = hosts.ip(i);
            let mut rules = format!(
                "table ip {TABLE} {{\n chain output {{\n  type nat hook output priority -100; \
                 policy accept;\n  meta mark {MARK} return\n"
            );
            let mut wanted = Vec::new();
            for j in (1..=hosts.len()).filter(|&j| j != i) {
                for (k, &port) in ports.iter().enumerate() {
                    let relay_port = RELAY_BASE + 100 * j as u16 + k as u16;
                    let listen: SocketAddr = format!("{own}:{relay_port}").parse().unwrap();
                    let upstream: SocketAddr = format!("{}:{port}", hosts.ip(j)).parse().unwrap();
                    wanted.push((listen, upstream));
                    rules.push_str(&format!(
                        "  ip daddr {} tcp dport {port} dnat to {own}:{relay_port}\n",
                        hosts.ip(j)
                    ));
                }
            }
            rules.push_str(" }\n}\n");
            relays.extend(spawn_in(&ns, &wanted, one_way));
            nft(&ns, &rules);
        }
        Regions { relays }
    }

    /// Connections relayed so far, over every path: evidence the traffic went through.
    pub fn relayed_connections(&self) -> u64 {
        self.relays.iter().map(|r| r.stats().accepted).sum()
    }
}

/// Starts relays `(listen, upstream)` from a thread that has entered namespace `ns`: their
/// listening sockets, runtime threads and upstream connections all live there.
fn spawn_in(ns: &str, wanted: &[(SocketAddr, SocketAddr)], one_way: Duration) -> Vec<RelayHandle> {
    let ns = ns.to_string();
    let wanted = wanted.to_vec();
    std::thread::spawn(move || {
        let path = format!("/var/run/netns/{ns}");
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns(2) on a valid descriptor only changes this thread's namespace; the
        // thread exists only to create the relays, whose threads inherit it.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            entered,
            0,
            "setns into {ns}: {}",
            std::io::Error::last_os_error()
        );
        wanted
            .iter()
            .map(|&(listen, upstream)| {
                Relay::spawn_marked(listen, upstream, Link::delayed(one_way), Some(MARK))
                    .unwrap_or_else(|e| panic!("relay {listen} -> {upstream} in {ns}: {e}"))
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("the relay-starting thread")
}
