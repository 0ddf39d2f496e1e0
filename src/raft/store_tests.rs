//! Tests of the sled Raft store against its contract (shared/notes/raft.md §1.3, §6.4):
//! openraft's conformance suite, a clean restart, and kill -9 while appending and purging.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{blank_ent, log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use tempfile::TempDir;
use tokio::sync::watch;

use super::store::open_db;
use super::{ClusterView, Entry, LogStore, NodeId, RaftNode, StateMachine, TypeConfig};
use crate::cluster::{self, Command, CommandResult, Epoch, JoinToken, Member, Tags};

/// Opens the log store and the state machine over a sled database in `dir`. A store just
/// dropped in this process may still hold sled's file lock for a moment (its flusher thread
/// ends after the last handle is gone): the open is retried while the lock is busy, for up
/// to 5 s. CI failed once on a reopen that did not wait.
fn open_store(dir: &Path) -> (LogStore, StateMachine, watch::Receiver<Arc<ClusterView>>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let db = loop {
        match open_db(dir) {
            Ok(db) => break db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open sled db: {e}"),
        }
    };
    let log = LogStore::open(&db).expect("open log store");
    let (sm, view) = StateMachine::open(&db).expect("open state machine");
    (log, sm, view)
}

/// Builds a fresh store in its own temporary directory for each suite case.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm, _view) = open_store(dir.path());
        Ok((dir, log, sm))
    }
}

/// openraft's storage conformance suite on the real sled store. The suite makes its own
/// tokio runtime per case, so this is a plain test.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledStoreBuilder).expect("openraft storage suite");
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload,
    }
}

fn node(id: u64) -> RaftNode {
    RaftNode {
        name: format!("n{id}"),
        peer_addr: format!("127.0.0.1:{}", 7400 + id),
    }
}

/// A membership entry, the cluster bootstrap, a lease grant and renewals: indexes 1..=n.
fn cluster_log(n: u64) -> Vec<Entry> {
    let membership = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node(1))]));
    let bootstrap = Command::Bootstrap {
        key_sha256: None,
        cluster_id: "c1".into(),
        member: Member {
            id: cluster::NodeId(1),
            name: "n1".into(),
            peer_addr: node(1).peer_addr,
            api_addr: "127.0.0.1:8008".into(),
            pg_addr: String::new(),
            tags: Tags::default(),
        },
        token: JoinToken {
            id: "t".into(),
            secret_sha256: "00".repeat(32),
            uses_left: 2,
            expires_at_unix: 2_000_000_000,
        },
    };
    let mut entries = vec![
        entry(1, EntryPayload::Membership(membership)),
        entry(2, EntryPayload::Normal(bootstrap)),
        entry(
            3,
            EntryPayload::Normal(Command::AcquireLease {
                candidate: cluster::NodeId(1),
                expected: None,
            }),
        ),
    ];
    for index in 4..=n {
        entries.push(entry(
            index,
            EntryPayload::Normal(Command::RenewLease {
                holder: cluster::NodeId(1),
                epoch: Epoch(1),
            }),
        ));
    }
    entries
}

/// Everything that must survive a clean restart does: vote, committed, last purged, the log
/// range and contents, the snapshot, and the state machine restored from it.
#[tokio::test]
async fn restart_restores_vote_log_snapshot_and_state() {
    let dir = TempDir::new().unwrap();
    let vote = Vote::new_committed(3, 1);
    let entries = cluster_log(40);

    let (snapshot_meta, view_at_snapshot) = {
        let (mut log, mut sm, view) = open_store(dir.path());
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 40))).await.unwrap();

        // Apply up to 30 and snapshot there; then apply the rest, which is not in the snapshot.
        let results = sm.apply(entries[..30].to_vec()).await.unwrap();
        assert_eq!(results[1], CommandResult::Applied, "bootstrap applied");
        assert!(
            matches!(results[29], CommandResult::Lease { lease } if lease.seq == 27),
            "renewals applied: {:?}",
            results[29]
        );
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 30)));
        let at_snapshot = view.borrow().as_ref().clone();
        sm.apply(entries[30..].to_vec()).await.unwrap();
        assert_eq!(view.borrow().state.lease.unwrap().seq, 37);

        log.purge(log_id(1, 1, 20)).await.unwrap();
        (snapshot.meta, at_snapshot)
        // Every handle (and so the sled database) is dropped here.
    };

    let (mut log, mut sm, view) = open_store(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 40)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 20)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 40)));
    let stored = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(stored, entries[20..].to_vec(), "log holds exactly 21..=40");

    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, snapshot_meta);
    let data: ClusterView = serde_json::from_slice(current.snapshot.get_ref()).unwrap();
    assert_eq!(data, view_at_snapshot);

    // The state machine restarts from the snapshot; openraft re-applies 31..=40 from the log.
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 30)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));
    assert_eq!(view.borrow().as_ref(), &view_at_snapshot);
    let restored = view.borrow().state.clone();
    assert_eq!(restored.cluster_id, "c1");
    assert_eq!(restored.lease.unwrap().seq, 27);
    assert!(restored.member(cluster::NodeId(1)).is_some());
    sm.apply(stored[10..].to_vec()).await.unwrap();
    assert_eq!(view.borrow().state.lease.unwrap().seq, 37);
}

/// Set in the child process of [`kill_during_appends_loses_no_acknowledged_entry`]: the
/// directory of the store it appends to.
const CRASH_CHILD_ENV: &str = "PGQ_CRASH_CHILD";

/// The child side of the kill -9 test; a no-op unless [`CRASH_CHILD_ENV`] is set. Appends
/// single entries forever, printing `ACK <index>` once `append`'s callback reported the entry
/// durable, and every 100 entries purges up to 50 behind, printing `PURGED <index>` after.
#[test]
fn crash_child_appender() {
    let Ok(dir) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        use std::io::Write;
        let (mut log, _sm, _view) = open_store(Path::new(&dir));
        let mut next = match log.get_log_state().await.unwrap().last_log_id {
            Some(id) => id.index + 1,
            None => 1,
        };
        let mut out = std::io::stdout().lock();
        // libtest has printed "test <name> ... " without a newline; end that line.
        writeln!(out).unwrap();
        loop {
            // blocking_append returns only after the callback fired.
            log.blocking_append([blank_ent::<TypeConfig>(1, 1, next)])
                .await
                .unwrap();
            writeln!(out, "ACK {next}").unwrap();
            out.flush().unwrap();
            if next % 100 == 0 {
                log.purge(log_id(1, 1, next - 50)).await.unwrap();
                writeln!(out, "PURGED {}", next - 50).unwrap();
                out.flush().unwrap();
            }
            next += 1;
        }
    });
}

/// Runs the child appender on `dir`, whose log ends at `start`, SIGKILLs it right after it
/// acknowledged index `kill_at`, and returns the last acknowledged index and the last purge
/// it reported done.
fn run_and_kill_child(dir: &Path, start: u64, kill_at: u64) -> (u64, Option<u64>) {
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "raft::store_tests::crash_child_appender",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let stdout = child.stdout.take().unwrap();
    let mut acked = start;
    let mut purged = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        if let Some(n) = line.strip_prefix("ACK ") {
            let n: u64 = n.parse().unwrap();
            assert_eq!(n, acked + 1, "acks are consecutive");
            acked = n;
            if acked >= kill_at {
                // On Unix, Child::kill is SIGKILL (and needs no unsafe, which the crate denies).
                child.kill().expect("SIGKILL child");
                break;
            }
        } else if let Some(n) = line.strip_prefix("PURGED ") {
            purged = Some(n.parse().unwrap());
        }
    }
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "child died of SIGKILL"
        );
    }
    assert!(
        acked >= kill_at,
        "child exited early ({status}) after {acked} acks"
    );
    (acked, purged)
}

/// kill -9 in the middle of appends and purges, three times on the same store: every entry
/// whose append was acknowledged is there, the log has no holes and starts right after
/// last_purged, and `get_log_state` agrees with the contents.
#[tokio::test]
async fn kill_during_appends_loses_no_acknowledged_entry() {
    let dir = TempDir::new().unwrap();
    // Kills at 300 and 1000 land while the child purges, at 673 while it appends. Each run
    // continues the log the previous one left.
    let mut start = 0;
    for (run, kill_at) in [300u64, 673, 1000].into_iter().enumerate() {
        let (acked, purged) = run_and_kill_child(dir.path(), start, kill_at);

        let (mut log, _sm, _view) = open_store(dir.path());
        let state = log.get_log_state().await.unwrap();
        let entries = log.try_get_log_entries(0..).await.unwrap();
        let last_purged = state.last_purged_log_id.map(|id| id.index);
        let last = state.last_log_id.expect("log not empty").index;
        let context = format!(
            "run {run}: acked {acked}, reported purged {purged:?}, last_purged {last_purged:?}, \
             last {last}, {} entries",
            entries.len()
        );
        assert!(last >= acked, "acknowledged entry lost: {context}");
        if let Some(purged) = purged {
            assert!(
                last_purged >= Some(purged),
                "acknowledged purge lost: {context}"
            );
        }
        let first = last_purged.map_or(1, |p| p + 1);
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        let expected: Vec<u64> = (first..=last).collect();
        assert_eq!(
            indexes, expected,
            "log must be exactly last_purged+1..=last: {context}"
        );
        assert_eq!(
            entries.last().map(|e| e.log_id),
            state.last_log_id,
            "{context}"
        );
        assert!(entries
            .iter()
            .all(|e| e.log_id == log_id(1, 1, e.log_id.index)));
        // The reopened store takes the next entry.
        log.blocking_append([blank_ent::<TypeConfig>(1, 1, last + 1)])
            .await
            .unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 1, last + 1))
        );
        log.truncate(log_id(1, 1, last + 1)).await.unwrap();
        start = last;
    }
}

/// Purging beyond the last entry (what openraft does after installing a snapshot) leaves an
/// empty log whose state is last_purged for both ends, also after a restart.
#[tokio::test]
async fn purge_past_the_end_survives_restart() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm, _view) = open_store(dir.path());
        log.blocking_append((1..=5).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
            .await
            .unwrap();
        log.purge(log_id(2, 1, 9)).await.unwrap();
    }
    let (mut log, _sm, _view) = open_store(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 9)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 9)));
    assert!(log.try_get_log_entries(0..).await.unwrap().is_empty());
}

/// A purge that a crash interrupted after last_purged was made durable but before the
/// entries were deleted (what the kill -9 test hits at random) is finished on open.
#[tokio::test]
async fn open_finishes_an_interrupted_purge() {
    let dir = TempDir::new().unwrap();
    {
        let db = open_db(dir.path()).unwrap();
        let mut log = LogStore::open(&db).unwrap();
        log.blocking_append((1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
            .await
            .unwrap();
        // The first half of `purge(6)`: last_purged written and flushed, nothing deleted.
        let meta = db.open_tree("meta").unwrap();
        meta.insert(
            b"last_purged",
            super::store::encode(&Some(log_id::<NodeId>(1, 1, 6))).unwrap(),
        )
        .unwrap();
        db.flush().unwrap();
    }
    let (mut log, _sm, _view) = open_store(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 6)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));
    let indexes: Vec<u64> = log
        .try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, vec![7, 8, 9, 10]);
}
