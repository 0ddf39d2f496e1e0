//! The openraft state machine: applies committed commands with the pure `cluster::apply` and
//! publishes the result as a [`ClusterView`] on a watch channel, which every consumer reads.
//!
//! The state is small (members, lease, dynamic config), so it lives in memory and is made
//! durable only by snapshots. A snapshot is one sled value (meta and data together), written
//! and fsynced in a single insert, so installing one is crash-atomic. At start the state is
//! rebuilt from the last snapshot and openraft re-applies the log after it; `applied_state`
//! therefore only ever reports what is durable.

use std::io::{self, Cursor};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::store::{decode, encode};
use super::{Entry, NodeId, RaftNode, TypeConfig};
use crate::cluster::{self, ClusterState, CommandResult};

const KEY_SNAPSHOT: &[u8] = b"current";

/// What consumers see: the committed cluster state, the Raft membership it was applied with,
/// and the index of the last applied entry. Published after every applied batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub state: ClusterState,
    pub membership: StoredMembership<NodeId, RaftNode>,
    pub last_applied: Option<LogId<NodeId>>,
}

/// The serialized form of a snapshot, stored and shipped as one value.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, RaftNode>,
    data: Vec<u8>,
}

/// The state machine handed to openraft. Cheap to clone; clones share nothing mutable except
/// through the sled tree and the watch sender.
pub struct StateMachine {
    view: ClusterView,
    snapshots: sled::Tree,
    db: sled::Db,
    publish: watch::Sender<Arc<ClusterView>>,
    snapshot_seq: u64,
}

impl StateMachine {
    /// Opens the state machine over `db`, restoring the last snapshot if there is one.
    /// Returns it with the receiver side of the view channel.
    pub fn open(db: &sled::Db) -> Result<(Self, watch::Receiver<Arc<ClusterView>>), io::Error> {
        let snapshots = db.open_tree("snapshot").map_err(io::Error::other)?;
        let view = match snapshots.get(KEY_SNAPSHOT).map_err(io::Error::other)? {
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes)?;
                serde_json::from_slice(&stored.data).map_err(io::Error::other)?
            }
            None => ClusterView::default(),
        };
        let (publish, rx) = watch::channel(Arc::new(view.clone()));
        let sm = Self {
            view,
            snapshots,
            db: db.clone(),
            publish,
            snapshot_seq: 0,
        };
        Ok((sm, rx))
    }

    fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, io::Error> {
        match self.snapshots.get(KEY_SNAPSHOT).map_err(io::Error::other)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn persist_snapshot(&self, stored: &StoredSnapshot) -> Result<(), io::Error> {
        self.snapshots
            .insert(KEY_SNAPSHOT, encode(stored)?)
            .map_err(io::Error::other)?;
        self.db.flush_async().await.map_err(io::Error::other)?;
        Ok(())
    }
}

fn sm_err(verb: ErrorVerb, e: &io::Error) -> StorageError<NodeId> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, e).into()
}

fn snapshot_err(
    meta: Option<&SnapshotMeta<NodeId, RaftNode>>,
    e: &io::Error,
) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data =
            serde_json::to_vec(&self.view).map_err(|e| snapshot_err(None, &io::Error::other(e)))?;
        self.snapshot_seq += 1;
        let snapshot_id = match self.view.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.snapshot_seq),
            None => format!("none-{}", self.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.view.last_applied,
            last_membership: self.view.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.persist_snapshot(&stored)
            .await
            .map_err(|e| snapshot_err(Some(&meta), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, RaftNode>), StorageError<NodeId>>
    {
        Ok((self.view.last_applied, self.view.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.view.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Applied,
                EntryPayload::Normal(command) => cluster::apply(&mut self.view.state, &command),
                EntryPayload::Membership(membership) => {
                    self.view.membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::Applied
                }
            };
            results.push(result);
        }
        self.publish.send_replace(Arc::new(self.view.clone()));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            view: self.view.clone(),
            snapshots: self.snapshots.clone(),
            db: self.db.clone(),
            publish: self.publish.clone(),
            snapshot_seq: {
                self.snapshot_seq += 1;
                self.snapshot_seq
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, RaftNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let view: ClusterView = serde_json::from_slice(&data)
            .map_err(|e| sm_err(ErrorVerb::Read, &io::Error::other(e)))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // Persist first: if we crash before the in-memory swap, the restart restores it.
        self.persist_snapshot(&stored)
            .await
            .map_err(|e| snapshot_err(Some(meta), &e))?;
        self.view = view;
        self.publish.send_replace(Arc::new(self.view.clone()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .current_snapshot()
            .map_err(|e| snapshot_err(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
