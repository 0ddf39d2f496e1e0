//! The routing table: which backends each proxy port sends new connections to.

use super::*;
use crate::cluster::Tags;
use crate::postgres::Lsn;

const MB: u64 = 1024 * 1024;

fn member(id: u64, noloadbalance: bool) -> Member {
    Member {
        id: NodeId(id),
        name: format!("n{id}"),
        peer_addr: String::new(),
        api_addr: String::new(),
        pg_addr: format!("10.0.0.{id}:5432"),
        tags: Tags {
            noloadbalance,
            ..Tags::default()
        },
    }
}

fn primary(at: u64) -> PgStatus {
    PgStatus {
        running: true,
        timeline: 1,
        wal_position: Some(Lsn(at)),
        ..PgStatus::default()
    }
}

fn delayed(replayed: u64, delay_ms: u64) -> PgStatus {
    PgStatus {
        replay_delay_ms: Some(delay_ms),
        ..replica(replayed)
    }
}

fn replica(replayed: u64) -> PgStatus {
    PgStatus {
        running: true,
        in_recovery: true,
        timeline: 1,
        wal_position: Some(Lsn(replayed)),
        replayed: Some(Lsn(replayed)),
        streaming: true,
        pending_restart: false,
        replay_delay_ms: None,
        primary_end: Some(Lsn(replayed)),
        archive: None,
    }
}

fn t(id: u64) -> Target {
    Target {
        node: NodeId(id),
        addr: format!("10.0.0.{id}:5432"),
    }
}

fn lease(holder: u64) -> Option<Lease> {
    Some(Lease {
        holder: NodeId(holder),
        epoch: Epoch(7),
        seq: 1,
    })
}

/// (case, lease, alive, statuses by id, previous readers, noloadbalance ids, policy
/// fallback, want writer, want readers)
type Case = (
    &'static str,
    Option<Lease>,
    bool,
    Vec<(u64, PgStatus)>,
    Vec<u64>,
    Vec<u64>,
    bool,
    Option<u64>,
    Vec<u64>,
);

#[test]
fn routing_table() {
    let p = 100 * MB;
    let not_streaming = PgStatus {
        streaming: false,
        ..replica(p)
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("healthy: writer to the holder, readers to both replicas",
            lease(1), true, vec![(1, primary(p)), (2, replica(p)), (3, replica(p))],
            vec![], vec![], true, Some(1), vec![2, 3]),
        ("no lease: no writer, readers fall back to nothing",
            None, false, vec![(2, replica(p)), (3, replica(p))],
            vec![2], vec![], true, None, vec![2]),
        ("lease not alive on my clock (minority side): no writer",
            lease(1), false, vec![(1, primary(p)), (2, replica(p))],
            vec![], vec![], true, None, vec![2]),
        ("holder not writable (still promoting): no writer",
            lease(2), true, vec![(2, replica(p)), (3, replica(p))],
            vec![], vec![], true, None, vec![]),
        ("holder's status unknown: no writer",
            lease(1), true, vec![(2, replica(p))],
            vec![], vec![], false, None, vec![]),
        ("a writable member without the lease gets nothing",
            lease(2), true, vec![(1, primary(p)), (2, primary(p)), (3, replica(p))],
            vec![], vec![], true, Some(2), vec![3]),
        ("a replica not streaming is no reader",
            lease(1), true, vec![(1, primary(p)), (2, not_streaming), (3, replica(p))],
            vec![], vec![], true, Some(1), vec![3]),
        ("noloadbalance replicas are no readers",
            lease(1), true, vec![(1, primary(p)), (2, replica(p)), (3, replica(p))],
            vec![], vec![2], true, Some(1), vec![3]),
        ("a lagging replica is dropped",
            lease(1), true, vec![(1, primary(p)), (2, replica(p - 17 * MB)), (3, replica(p))],
            vec![2, 3], vec![], true, Some(1), vec![3]),
        ("a reader within the limit stays (hysteresis)",
            lease(1), true, vec![(1, primary(p)), (2, replica(p - 14 * MB))],
            vec![2], vec![], true, Some(1), vec![2]),
        ("a replica back within the limit but not below it minus hysteresis waits",
            lease(1), true, vec![(1, primary(p)), (2, replica(p - 14 * MB))],
            vec![], vec![], true, Some(1), vec![1]),
        ("a replica well within the limit is admitted",
            lease(1), true, vec![(1, primary(p)), (2, replica(p - 12 * MB))],
            vec![], vec![], true, Some(1), vec![2]),
        ("a replica whose replay is too far behind in time is dropped",
            lease(1), true, vec![(1, primary(p)), (2, delayed(p, 10_001)), (3, delayed(p, 0))],
            vec![2, 3], vec![], true, Some(1), vec![3]),
        ("a reader within the time limit stays (hysteresis)",
            lease(1), true, vec![(1, primary(p)), (2, delayed(p, 9_000))],
            vec![2], vec![], true, Some(1), vec![2]),
        ("a replica back within the time limit but above three quarters of it waits",
            lease(1), true, vec![(1, primary(p)), (2, delayed(p, 9_000))],
            vec![], vec![], true, Some(1), vec![1]),
        ("a replica at three quarters of the time limit is admitted",
            lease(1), true, vec![(1, primary(p)), (2, delayed(p, 7_500))],
            vec![], vec![], true, Some(1), vec![2]),
        ("an unknown replay delay does not keep a replica out",
            lease(1), true, vec![(1, primary(p)), (2, PgStatus { replay_delay_ms: None, ..replica(p) })],
            vec![], vec![], true, Some(1), vec![2]),
        ("no replica qualifies: readers fall back to the primary",
            lease(1), true, vec![(1, primary(p))],
            vec![], vec![], true, Some(1), vec![1]),
        ("no replica qualifies and no fallback: no reader",
            lease(1), true, vec![(1, primary(p))],
            vec![], vec![], false, Some(1), vec![]),
        ("primary position unknown: readers kept, none added",
            None, false, vec![(2, replica(p)), (3, replica(p))],
            vec![3], vec![], false, None, vec![3]),
    ];
    for (case, lease, alive, statuses, previous, noload, fallback, writer, readers) in cases {
        let members = (1..=3)
            .map(|id| (NodeId(id), member(id, noload.contains(&id))))
            .collect();
        let statuses = statuses
            .into_iter()
            .map(|(id, pg)| (NodeId(id), pg))
            .collect();
        let inputs = Inputs {
            lease,
            lease_alive: alive,
            members: &members,
            statuses: &statuses,
        };
        let policy = Policy {
            max_lag: 16 * MB,
            max_delay: Duration::from_secs(10),
            fallback_to_primary: fallback,
            balance: Balance::LeastConnections,
        };
        let previous = Routes {
            epoch: None,
            writer: None,
            readers: previous.into_iter().map(t).collect(),
        };
        let got = routes(&inputs, &policy, &previous);
        assert_eq!(got.writer, writer.map(t), "{case}: writer");
        assert_eq!(
            got.readers,
            readers.into_iter().map(t).collect::<Vec<_>>(),
            "{case}: readers"
        );
        assert_eq!(
            got.epoch,
            got.writer.as_ref().map(|_| Epoch(7)),
            "{case}: epoch"
        );
    }
}
