//! The floating VIP on real hosts (network namespaces, DESIGN §8.3) with real PostgreSQL: it
//! is on the primary's host and nowhere else, follows a failover (the kernel drops it from a
//! dead host by itself, the new holder's gratuitous ARP moves a client's neighbour entry),
//! leaves a cut-off primary within ttl, is never on two hosts during a switchover, and a
//! stale copy is removed when the daemon starts; a `pre_promote` hook that refuses hands the
//! promotion (and the VIP) to another member. A client namespace on the same bridge plays
//! the application. Needs root; skips without it locally, fails in CI.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::netns::{command_in, stdout_of, Hosts};
use common::node::psql;
use common::pg::{replicas_streaming, writable, FORMATION};
use common::wait::scaled;
use common::{assert_success, eventually, require_postgres, Node, TestCluster};

/// The cluster's lease ttl (the default): a VIP holder that stops renewing loses the address
/// within about this long.
const TTL: Duration = Duration::from_secs(2);
/// From a lost primary to a writable new one whose host has the VIP.
const FAILOVER: Duration = Duration::from_secs(30);
/// From the VIP on a new host to the client's neighbour entry naming that host.
const ANNOUNCE: Duration = Duration::from_secs(5);
/// A client connection through the VIP, retried: PGCONNECT_TIMEOUT is 2 s.
const CONNECT: Duration = Duration::from_secs(10);
/// How many samples in a row must agree that exactly one host has the VIP.
const STEADY_SAMPLES: u32 = 20;

/// A write and the server's identity, through the VIP. The insert fails on a replica, so an
/// answer means a writable primary: `f|<server address>|<postmaster start time>`. The start
/// time tells the members apart (compare with [`start_time`]).
const PROBE: &str = "with w as (insert into probe default values returning 1) \
                     select pg_is_in_recovery(), inet_server_addr(), pg_postmaster_start_time() \
                     from w";

/// The `[vip]` section for `hosts`; with `interface` the interface is named, else the daemon
/// finds the one whose subnet contains the VIP.
fn vip_config(hosts: &Hosts, interface: bool) -> String {
    let mut text = format!("[vip]\naddress = \"{}/24\"\n", hosts.vip());
    if interface {
        text.push_str("interface = \"eth0\"\n");
    }
    text
}

/// Runs `sql` from the client namespace through VIP:5432 as `app`; its unaligned output.
fn through_vip(hosts: &Hosts, sql: &str) -> Result<String, String> {
    let vip = hosts.vip();
    stdout_of(
        command_in(&hosts.client(), psql())
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-U", "app", "-d", "postgres", "-h", &vip, "-p", "5432", "-c", sql,
            ])
            .env("PGCONNECT_TIMEOUT", "2")
            .env("PGPASSWORD", "app"),
    )
}

/// When `node`'s postmaster started, asked through its unix socket.
fn start_time(node: &Node) -> Result<String, String> {
    node.sql("select pg_postmaster_start_time()")
}

/// Whether the client, through the VIP, writes to `node`'s PostgreSQL as a primary and sees
/// the VIP as the server's address.
fn reaches_through_vip(hosts: &Hosts, node: &Node) -> Result<(), String> {
    let want = format!("f|{}|{}", hosts.vip(), start_time(node)?);
    let got = through_vip(hosts, PROBE)?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "through the VIP: {got:?}, want {:?} ({want:?})",
            node.name
        ))
    }
}

/// Waits until the client reaches `node` through the VIP (see [`reaches_through_vip`]).
fn wait_reaches_through_vip(hosts: &Hosts, node: &Node, when: &str) {
    let what = format!("the client reaches {} through the VIP {when}", node.name);
    eventually(CONNECT, &what, || {
        reaches_through_vip(hosts, node).map_err(|e| format!("{e}; {}", hosts.vip_report()))
    });
}

/// Samples who has the VIP until [`STEADY_SAMPLES`] samples in a row find exactly host
/// `expected`; panics at once if a sample finds two hosts with it.
fn wait_vip_only_on(hosts: &Hosts, expected: usize, deadline: Duration, when: &str) {
    let mut in_a_row = 0;
    let what = format!("only h{expected} has the VIP {when}, {STEADY_SAMPLES} samples in a row");
    eventually(deadline, &what, || {
        let holders = hosts.vip_holders();
        assert!(
            holders.len() <= 1,
            "two hosts have the VIP at once {when}: {holders:?}; {}",
            hosts.vip_report()
        );
        if holders == [expected] {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        if in_a_row >= STEADY_SAMPLES {
            Ok(())
        } else {
            Err(format!("{in_a_row} in a row; now on {holders:?}"))
        }
    });
}

/// Waits until the client's neighbour entry for the VIP names host `i`'s MAC; how long that
/// took. Reading the entry sends nothing, so only an announcement can change it.
fn wait_client_neighbour_is(hosts: &Hosts, i: usize) -> Duration {
    let mac = hosts.mac(i);
    let started = Instant::now();
    let what = format!("the client's neighbour entry for the VIP is h{i}'s MAC {mac}");
    eventually(ANNOUNCE, &what, || {
        if hosts.client_vip_mac().as_deref() == Some(mac.as_str()) {
            Ok(started.elapsed())
        } else {
            Err(hosts.vip_report())
        }
    })
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A three-member cluster on `hosts` with `[vip]` configured: one writable primary, two
/// replicas streaming, the role `app` and the table `probe` created, and the VIP only on the
/// primary's host. Returns the cluster and the primary's index (= its host's).
fn cluster_with_vip(hosts: &Hosts, interface: bool, extra: &str) -> (TestCluster, usize) {
    let config = format!("{}\n{extra}", vip_config(hosts, interface));
    let cluster = TestCluster::start_on_hosts_with(hosts, &config);
    let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "two replicas stream", || {
        replicas_streaming(&cluster, primary)
    });
    cluster
        .node(primary)
        .sql(
            "create role app login password 'app'; \
             create table probe (at timestamptz default now()); grant all on probe to app",
        )
        .unwrap();
    wait_vip_only_on(hosts, primary, FAILOVER, "after formation");
    (cluster, primary)
}

/// Stops the sampler of a scope when dropped, also when the test panics in the scope (which
/// otherwise waits for the sampler forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn the_vip_follows_the_primary_when_its_host_dies() {
    if !require_postgres() {
        return;
    }
    let Some(hosts) = Hosts::create(3) else {
        return;
    };
    // The first member asked to promote is refused by its pre_promote hook (a directory made
    // once, atomically, on the filesystem the hosts share); every hook call is recorded.
    let hook_dir = tempfile::tempdir().expect("a temp dir for the hook");
    std::fs::set_permissions(
        hook_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let calls = hook_dir.path().join("calls");
    let hook = hook_dir.path().join("pre_promote.sh");
    std::fs::write(
        &hook,
        format!(
            "echo \"$*\" >> {calls}\nmkdir {dir}/refused 2>/dev/null && exit 1\nexit 0\n",
            calls = calls.display(),
            dir = hook_dir.path().display()
        ),
    )
    .unwrap();
    let hooks = format!("[hooks]\npre_promote = \"sh {}\"\n", hook.display());
    let (mut cluster, old) = cluster_with_vip(&hosts, false, &hooks);
    wait_reaches_through_vip(&hosts, cluster.node(old), "after formation");
    let old_mac = hosts.mac(old);
    assert_eq!(
        hosts.client_vip_mac().as_deref(),
        Some(old_mac.as_str()),
        "the client sends VIP traffic to the primary's host: {}",
        hosts.vip_report()
    );

    // Everything on the primary's host dies; its link stays up, so only the address's
    // lifetime in the kernel takes the VIP away.
    let postmaster = cluster
        .node(old)
        .postmaster_pid()
        .expect("the primary's postmaster pid");
    let killed = Instant::now();
    cluster.node_mut(old).kill();
    eventually(
        Duration::from_secs(10),
        "the dead daemon's postmaster is gone",
        || process_gone(postmaster).then_some(()).ok_or(postmaster),
    );
    let (mut old_gone, mut new_writable, mut doubles) = (None, None, Vec::new());
    let new = eventually(
        FAILOVER,
        "a survivor is the writable primary and only its host has the VIP",
        || {
            let holders = hosts.vip_holders();
            let at = killed.elapsed();
            if !holders.contains(&old) {
                old_gone.get_or_insert(at);
            }
            if holders.len() > 1 {
                doubles.push((at, holders.clone()));
            }
            let new = writable(&cluster).map_err(|e| format!("{e}; VIP on {holders:?}"))?;
            new_writable.get_or_insert(at);
            if holders == [new] {
                Ok(new)
            } else {
                Err(format!("n{new} is writable; VIP on {holders:?}"))
            }
        },
    );
    let new_holds = killed.elapsed();
    // The pre_promote hook refused the first survivor it was asked on, with the VIP among its
    // arguments; the other one was promoted and holds the VIP.
    let lines: Vec<String> = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let refused = lines.first().cloned().unwrap_or_default();
    let vip_arg = format!("{}/24", hosts.vip());
    assert!(
        refused.starts_with("primary n") && refused.ends_with(&vip_arg),
        "pre_promote got role, member, epoch and the VIP: {lines:?}"
    );
    assert!(
        !refused.starts_with(&format!("primary {} ", cluster.node(new).name)),
        "the member whose pre_promote refused was promoted anyway: {lines:?}"
    );
    let new_writable = new_writable.expect("seen writable before holding the VIP");
    let old_gone = old_gone.expect("the dead host's VIP is gone");
    assert!(
        old_gone <= scaled(TTL + Duration::from_secs(3)),
        "the dead host h{old} kept the VIP for {old_gone:?} after SIGKILL (ttl {TTL:?})"
    );
    // No client traffic yet: the neighbour entry can only have moved by announcement.
    let announced = wait_client_neighbour_is(&hosts, new);
    wait_reaches_through_vip(&hosts, cluster.node(new), "after the failover");
    eprintln!(
        "vip failover: h{old} lost the VIP {old_gone:?} after SIGKILL; n{new} writable by \
         {new_writable:?}, its host had the VIP by {new_holds:?}; the client's neighbour entry \
         named it {announced:?} later; samples with two holders: {doubles:?}"
    );

    // A VIP left behind on the dead host (as by a crash before the kernel dropped it) is
    // removed when its daemon starts again; it rejoins as a replica.
    let ns = hosts.netns(old);
    let vip = format!("{}/24", hosts.vip());
    stdout_of(Command::new("ip").args(["-n", &ns, "addr", "add", &vip, "dev", "eth0"]))
        .unwrap_or_else(|e| panic!("adding a stale VIP on h{old}: {e}"));
    assert!(hosts.has_vip(old), "{}", hosts.vip_report());
    let restarted = Instant::now();
    cluster.node_mut(old).start();
    eventually(
        Duration::from_secs(10),
        "the restarted daemon removes the stale VIP from its host",
        || {
            (!hosts.has_vip(old))
                .then_some(())
                .ok_or(hosts.vip_report())
        },
    );
    let stale_removed = restarted.elapsed();
    eventually(
        FORMATION,
        "the old primary streams from the new one",
        || replicas_streaming(&cluster, new),
    );
    wait_vip_only_on(&hosts, new, FAILOVER, "after the old primary rejoined");
    assert_eq!(writable(&cluster), Ok(new));
    wait_reaches_through_vip(&hosts, cluster.node(new), "after the old primary rejoined");
    eprintln!("vip: the stale VIP on h{old} was removed {stale_removed:?} after its start");
}

#[test]
fn the_vip_leaves_a_partitioned_primary_and_a_switchover_never_doubles_it() {
    if !require_postgres() {
        return;
    }
    let Some(hosts) = Hosts::create(3) else {
        return;
    };
    let (cluster, old) = cluster_with_vip(&hosts, true, "");
    wait_reaches_through_vip(&hosts, cluster.node(old), "after formation");
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != old).collect();

    // The cut-off primary cannot renew its lease: the VIP leaves its host within ttl (the
    // addresses are read inside the namespace, which the cut does not affect).
    let cut = Instant::now();
    cluster.node(old).note("=== harness: host cut off ===");
    hosts.cut(old);
    eventually(
        TTL + Duration::from_secs(1),
        "the cut-off host no longer has the VIP",
        || (!hosts.has_vip(old)).then_some(()).ok_or("still there"),
    );
    let dropped = cut.elapsed();
    let mut doubles = Vec::new();
    let new = eventually(
        FAILOVER,
        "a survivor is the writable primary and only its host has the VIP",
        || {
            let holders = hosts.vip_holders();
            if holders.len() > 1 {
                doubles.push((cut.elapsed(), holders.clone()));
            }
            let old_writable = cluster.node(old).sql("select pg_is_in_recovery()");
            let writable: Vec<usize> = survivors
                .iter()
                .copied()
                .filter(|&i| {
                    cluster.node(i).sql("select pg_is_in_recovery()").as_deref() == Ok("f")
                })
                .collect();
            match writable.as_slice() {
                [one] if old_writable.as_deref() != Ok("f") && holders == [*one] => Ok(*one),
                _ => Err(format!(
                    "writable survivors {writable:?}; old primary in recovery: {old_writable:?}; \
                     VIP on {holders:?}"
                )),
            }
        },
    );
    let moved = cut.elapsed();
    wait_reaches_through_vip(&hosts, cluster.node(new), "after the partition");
    eprintln!(
        "vip partition: the cut-off h{old} dropped the VIP {dropped:?} after the cut (ttl \
         {TTL:?}); n{new} writable with the VIP by {moved:?}; samples with two holders: \
         {doubles:?}"
    );

    cluster.node(old).note("=== harness: host healed ===");
    hosts.heal(old);
    eventually(
        FORMATION,
        "the old primary streams from the new one",
        || replicas_streaming(&cluster, new),
    );
    wait_vip_only_on(&hosts, new, FAILOVER, "after the heal");

    // Switchover to the old primary, sampled throughout: each sample reads the three hosts
    // one after the other (one `ip` call each), so it is no atomic snapshot, but the VIP on
    // two hosts for longer than one sampling round would be seen in some sample.
    let candidate = old;
    let name = cluster.node(candidate).name.clone();
    let stop = AtomicBool::new(false);
    let base = Instant::now();
    let (samples, requested, done) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let sampler = s.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let holders = hosts.vip_holders();
                samples.push((base.elapsed(), holders));
            }
            samples
        });
        let requested = base.elapsed();
        let output = cluster.node(new).cli(&["switchover", "--candidate", &name]);
        assert_success(&output, "switchover");
        eventually(
            FAILOVER,
            "the candidate is the writable primary and only its host has the VIP",
            || {
                let holders = hosts.vip_holders();
                match writable(&cluster) {
                    Ok(w) if w == candidate && holders == [candidate] => Ok(()),
                    other => Err(format!("writable: {other:?}; VIP on {holders:?}")),
                }
            },
        );
        let done = base.elapsed();
        drop(_stop);
        let samples = sampler
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (samples, requested, done)
    });
    let doubles: Vec<&(Duration, Vec<usize>)> =
        samples.iter().filter(|(_, h)| h.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "{} of {} samples saw the VIP on two hosts during the switchover, first at {:?}",
        doubles.len(),
        samples.len(),
        doubles.first()
    );
    let first_on_candidate = samples
        .iter()
        .position(|(_, h)| h == &[candidate])
        .unwrap_or_else(|| panic!("no sample saw the VIP on h{candidate}: {samples:?}"));
    let last_on_old_holder = samples[..first_on_candidate]
        .iter()
        .rposition(|(_, h)| h == &[new])
        .unwrap_or_else(|| panic!("no sample saw the VIP on h{new} first: {samples:?}"));
    let without_holder = first_on_candidate - last_on_old_holder - 1;
    let gap = samples[first_on_candidate].0 - samples[last_on_old_holder].0;
    let round = samples.last().map(|(t, _)| *t).unwrap_or_default() / samples.len() as u32;
    let announced = wait_client_neighbour_is(&hosts, candidate);
    wait_reaches_through_vip(&hosts, cluster.node(candidate), "after the switchover");
    assert_eq!(writable(&cluster), Ok(candidate));
    eprintln!(
        "vip switchover n{new} -> n{candidate}: {} samples (a round every {round:?}), none with \
         two holders; no holder for at most {gap:?} ({without_holder} samples); done {:?} after \
         the request; the client's neighbour entry followed {announced:?} after that",
        samples.len(),
        done - requested
    );
}

#[test]
fn an_ipv6_vip_moves_with_an_unsolicited_neighbour_advertisement() {
    if !require_postgres() {
        return;
    }
    let Some(hosts) = Hosts::create(3) else {
        return;
    };
    hosts.add_ipv6();
    let vip = hosts.vip6();
    // No interface named: the daemon finds eth0 by the IPv6 subnet.
    let config = format!("[vip]\naddress = \"{vip}/64\"\n");
    let mut cluster = TestCluster::start_on_hosts_with(&hosts, &config);
    let old = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "two replicas stream", || {
        replicas_streaming(&cluster, old)
    });
    let only_on = |i: usize| {
        let holders = hosts.holders_of(&vip);
        if holders == [i] {
            Ok(())
        } else {
            Err(format!("{vip} on {holders:?}"))
        }
    };
    eventually(FAILOVER, "only the primary's host has the IPv6 VIP", || {
        only_on(old)
    });

    // The client resolves the VIP through its kernel (neighbour discovery) by opening a
    // connection to a closed port: the primary's host answers with a reset.
    let touch = || {
        command_in(&hosts.client(), "bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{vip}/9")])
            .output()
            .expect("bash in the client namespace")
    };
    let refused = touch();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused"),
        "a host with the VIP answered (connection refused): {refused:?}"
    );
    assert_eq!(
        hosts.client_neighbour_mac(&vip),
        Some(hosts.mac(old)),
        "the client's neighbour entry names the primary's host"
    );

    let killed = Instant::now();
    cluster.node_mut(old).kill();
    let new = eventually(
        FAILOVER,
        "a survivor is the writable primary and only its host has the IPv6 VIP",
        || {
            let new = writable(&cluster)?;
            only_on(new).map(|()| new)
        },
    );
    let moved = killed.elapsed();
    // No traffic from the client since: only the unsolicited advertisement (with the
    // Override flag, and a checksum the client's kernel accepted) can have moved the entry.
    let new_mac = hosts.mac(new);
    let announced = Instant::now();
    eventually(
        ANNOUNCE,
        "the client's neighbour entry names the new host",
        || {
            let mac = hosts.client_neighbour_mac(&vip);
            (mac.as_deref() == Some(new_mac.as_str()))
                .then_some(())
                .ok_or(mac)
        },
    );
    let followed = announced.elapsed();
    let refused = touch();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused"),
        "the new holder answers on the VIP at once (no duplicate address detection): {refused:?}"
    );
    eprintln!(
        "vip ipv6: n{new}'s host had {vip} {moved:?} after n{old} was killed; the client's \
         neighbour entry followed {followed:?} after that"
    );
}
