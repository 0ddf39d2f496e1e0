//! Cleaning up after a bench whose hosts are network namespaces (`vip_failover`, `wan`):
//! processes left in the namespaces, and on a fatal signal the namespaces, bridges and temp
//! dirs themselves. Deleting a namespace does not end its processes, and a bench killed by
//! Ctrl-C runs no destructor, so both are done here. Included with `mod netns_cleanup;` by
//! benches that also include the test harness as `mod common;`.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::common::netns::Hosts;
use crate::common::TestCluster;

/// `pid`, when it is a live `postgres` process.
pub fn live_postgres(pid: Option<i32>) -> Option<i32> {
    let pid = pid?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "postgres" && !process_gone(pid)).then_some(pid)
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// The namespaces of `hosts`: every host's and the client's.
pub fn namespaces(hosts: &Hosts) -> Vec<String> {
    let mut names: Vec<String> = (1..=hosts.len()).map(|i| hosts.netns(i)).collect();
    names.push(hosts.client());
    names
}

/// SIGKILLs every process in the namespaces (the daemons' postmasters die with the daemons,
/// but a psql or an `ip` may remain), until none is left or 10 s passed. This process is
/// skipped: a bench's own relay threads may live in the hosts' namespaces.
pub fn kill_namespace_processes(namespaces: &[String]) {
    let me = std::process::id();
    for _ in 0..100 {
        let pids: Vec<i32> = namespaces
            .iter()
            .filter_map(|ns| {
                Command::new("ip")
                    .args(["netns", "pids", ns])
                    .stderr(Stdio::null())
                    .output()
                    .ok()
            })
            .flat_map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .filter(|&pid| pid as u32 != me && !process_gone(pid))
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; `pid` was listed in one of
            // this bench's namespaces just now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Kills every process left in one set of hosts' namespaces when dropped. Drop it after the
/// cluster (whose nodes SIGKILL their daemons) and before the hosts (which delete the
/// namespaces).
pub struct Reaper {
    namespaces: Vec<String>,
}

impl Reaper {
    pub fn new(hosts: &Hosts) -> Reaper {
        Reaper {
            namespaces: namespaces(hosts),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_namespace_processes(&self.namespaces);
    }
}

/// What a signal handler must clean up: every namespace, bridge and temp dir this process
/// made (those of clusters already gone are gone: removing them again does nothing).
struct Registry {
    namespaces: Vec<String>,
    bridges: Vec<String>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: Vec::new(),
    bridges: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remember `hosts`' namespaces and bridge for the signal handler.
pub fn register_hosts(hosts: &Hosts) {
    let mut reg = registry();
    reg.namespaces.extend(namespaces(hosts));
    // The harness names the bridge `pgq<k>br` after the client namespace `pgq<k>-cl`.
    if let Some(bridge) = hosts
        .client()
        .strip_suffix("-cl")
        .map(|prefix| format!("{prefix}br"))
    {
        reg.bridges.push(bridge);
    }
}

/// Remember the cluster's nodes' temp dirs for the signal handler.
pub fn register_dirs(cluster: &TestCluster) {
    let mut reg = registry();
    for i in 1..=cluster.len() {
        if let Some(dir) = cluster.node(i).state_dir.parent() {
            reg.dirs.push(dir.to_path_buf());
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: kill everything in the registered namespaces, delete them
/// and the bridges, remove the temp dirs. Call before starting any thread.
pub fn install_signal_cleanup() {
    crate::report::on_fatal_signal(|sig| {
        eprintln!("signal {sig}: killing the daemons, removing the namespaces and temp dirs");
        let reg = registry();
        kill_namespace_processes(&reg.namespaces);
        for ns in &reg.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for bridge in &reg.bridges {
            let _ = Command::new("ip").args(["link", "del", bridge]).output();
        }
        for dir in &reg.dirs {
            let _ = fs::remove_dir_all(dir);
        }
    });
}
