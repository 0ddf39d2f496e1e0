//! The leader lease through a running cluster: one holder at a time, renewals keep it, a
//! takeover only after ttl without renewals, and a larger epoch for every new tenure.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{assert_error, assert_success, eventually, Node, OutputExt, TestCluster, ELECTION};

/// The default ttl of the lease (cluster dynamic config).
const TTL: Duration = Duration::from_secs(2);

/// `pgquorum lease <action>` on `node`; the lease it reports, or the failed output.
fn lease(node: &Node, action: &str) -> Result<Value, std::process::Output> {
    let output = node.cli(&["lease", action]);
    if !output.status.success() {
        return Err(output);
    }
    let reply: Value = serde_json::from_slice(&output.stdout).expect("lease prints JSON");
    assert_eq!(reply["type"], "lease", "{reply}");
    Ok(reply["lease"].clone())
}

fn epoch(lease: &Value) -> u64 {
    lease["epoch"].as_u64().expect("an epoch")
}

/// Waits until `node` has applied a lease for which `f` holds.
fn wait_for_lease(node: &Node, what: &str, f: impl Fn(&Value) -> bool) {
    eventually(Duration::from_secs(5), what, || {
        let view = node.cluster_view()?;
        if f(&view["lease"]) {
            Ok(())
        } else {
            Err(view["lease"].to_string())
        }
    });
}

#[test]
fn the_lease_moves_only_after_ttl_without_renewals_and_each_tenure_has_a_larger_epoch() {
    let cluster = TestCluster::start(3);
    let view = cluster.wait_converged(ELECTION, "three members agree");
    let (n2, n3) = (cluster.node(2), cluster.node(3));
    let (id2, id3) = (cluster.id_of(&view, 2), cluster.id_of(&view, 3));

    let first = lease(n2, "acquire").expect("n2 acquires the free lease");
    assert_eq!(first["holder"], id2);
    assert_eq!(first["seq"], 0);
    let e1 = epoch(&first);
    assert!(e1 >= 1);

    for seq in 1..=2 {
        let renewed = lease(n2, "renew").expect("the holder renews");
        assert_eq!(renewed["seq"], seq, "each renewal counts: {renewed}");
        assert_eq!(epoch(&renewed), e1, "a renewal keeps the tenure");
    }

    // While n2 keeps renewing, n3 is refused, however long it lasts.
    let renewing = Instant::now();
    let mut refusals = 0;
    let mut last_renewal = Instant::now();
    while renewing.elapsed() < TTL + Duration::from_secs(1) {
        // Taken before the request: the renewal commits after it is sent, so n3's ttl runs
        // from later than this, however long the answer takes to come back on a busy host.
        last_renewal = Instant::now();
        lease(n2, "renew").expect("the holder keeps renewing");
        let refused = lease(n3, "acquire").expect_err("n3 may not take a renewed lease");
        assert_error(
            &refused,
            1,
            &format!("lease is held by node {id2} (epoch {e1}"),
        );
        refusals += 1;
    }
    assert!(refusals >= 3, "n3 tried only {refusals} times");

    // n2 stops renewing: n3 takes over, but not before ttl has passed.
    let second = eventually(TTL * 5, "n3 takes over the unrenewed lease", || {
        lease(n3, "acquire")
    });
    let waited = last_renewal.elapsed();
    assert!(
        waited >= TTL - Duration::from_millis(100),
        "n3 took over {waited:?} after the last renewal was sent; the ttl is {TTL:?}"
    );
    assert_eq!(second["holder"], id3);
    assert_eq!(second["seq"], 0);
    let e2 = epoch(&second);
    assert!(e2 > e1, "a new holder gets a larger epoch: {e1} -> {e2}");
    eprintln!("n3 took over {waited:?} after n2's last renewal was sent");

    // n2 has lost it.
    wait_for_lease(n2, "n2 sees n3's lease", |l| l["holder"] == id3);
    let refused = lease(n2, "renew").expect_err("n2 no longer holds the lease");
    assert_error(&refused, 1, "does not hold the lease");
    let refused = lease(n2, "release").expect_err("only the holder releases");
    assert_error(&refused, 1, "does not hold the lease");

    // Released, it is free at once, and the next tenure's epoch is larger still.
    let released = n3.cli(&["lease", "release"]);
    assert_success(&released, "n3 releases");
    assert!(
        released.stdout_text().contains("\"type\""),
        "{}",
        released.stdout_text()
    );
    wait_for_lease(n2, "n2 sees the lease released", Value::is_null);
    let third = lease(n2, "acquire").expect("n2 acquires the released lease at once");
    assert_eq!(third["holder"], id2);
    assert!(
        epoch(&third) > e2,
        "epochs only grow: {e2} -> {}",
        epoch(&third)
    );
    wait_for_lease(cluster.node(1), "n1 applies n2's new tenure", |l| {
        *l == third
    });
    let listed = cluster.node(1).list();
    let holders: Vec<&Value> = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["lease_holder"] == true)
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        holders,
        [&Value::from(id2)],
        "list marks exactly n2 as holder: {listed}"
    );
}
