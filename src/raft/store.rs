//! The Raft log and vote, persisted in sled.
//!
//! Durability rules (see shared/notes/raft.md §2 and §6.4), enforced here and nowhere else:
//! - `save_vote` returns, and `append` calls its callback, only after `flush_async` — a real
//!   fsync of the whole database in sled 0.34 — has completed.
//! - openraft serialises every call on `&mut self`, so vote and log writes are never reordered.
//! - `purge` persists the new last-purged id and fsyncs it before any entry is deleted, so a
//!   crash in between leaves a log that still starts right after last-purged.
//!
//! Keys: the log tree maps an 8-byte big-endian index to an encoded entry; the meta tree holds
//! `vote`, `committed`, `last_purged` and `format`. Values carry a leading format byte so the
//! on-disk format is ours to version, not serde's.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Entry, NodeId, TypeConfig};
use crate::failpoint;

/// The version of the encoding of every value this module writes.
const FORMAT: u8 = 1;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_FORMAT: &[u8] = b"format";

/// Opens (or creates) the sled database that holds the Raft log, the vote and the snapshot.
///
/// Errors name the directory; a database written by a newer format is refused.
pub fn open_db(dir: &Path) -> Result<sled::Db, io::Error> {
    let db = sled::Config::new()
        .path(dir)
        // The cluster state is a few kilobytes; keep sled's page cache small so the daemon's
        // memory stays bounded. Background flushing is a backstop only: every write that
        // openraft relies on is flushed explicitly.
        .cache_capacity(4 * 1024 * 1024)
        .flush_every_ms(Some(1000))
        .open()
        .map_err(|e| io::Error::other(format!("opening raft store in {}: {e}", dir.display())))?;
    let meta = db.open_tree("meta").map_err(io::Error::other)?;
    match meta.get(KEY_FORMAT).map_err(io::Error::other)? {
        None => {
            meta.insert(KEY_FORMAT, &[FORMAT])
                .map_err(io::Error::other)?;
            db.flush().map_err(io::Error::other)?;
        }
        Some(v) if v.as_ref() == [FORMAT] => {}
        Some(v) => {
            return Err(io::Error::other(format!(
                "raft store in {} has format {:?}, this build reads format {FORMAT}; \
                 run the pgquorum version that wrote it",
                dir.display(),
                v.as_ref()
            )))
        }
    }
    Ok(db)
}

/// Encodes a value with the format byte in front.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    let mut out = vec![FORMAT];
    serde_json::to_writer(&mut out, value).map_err(io::Error::other)?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => serde_json::from_slice(rest).map_err(io::Error::other),
        Some((v, _)) => Err(io::Error::other(format!("unknown value format {v}"))),
        None => Err(io::Error::other("empty value")),
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl Into<AnyError>,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, e).into()
}

/// The Raft log and vote store. Cheap to clone: sled handles are reference counted.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// Where the test crash points live ([`crate::failpoint`]); only debug builds look.
    failpoints: Option<PathBuf>,
    /// Whether the last membership entry this store appended was a joint configuration.
    appended_joint: bool,
}

impl LogStore {
    /// Opens the log and meta trees of `db`, and finishes a purge that a crash interrupted.
    pub fn open(db: &sled::Db) -> Result<Self, io::Error> {
        let store = Self {
            db: db.clone(),
            log: db.open_tree("log").map_err(io::Error::other)?,
            meta: db.open_tree("meta").map_err(io::Error::other)?,
            failpoints: None,
            appended_joint: false,
        };
        // `purge` makes last_purged durable before it deletes; a crash in between leaves
        // entries at or below last_purged. Delete them now so the log starts right after
        // last_purged again. Not flushed: redoing this after another crash is harmless.
        let last_purged: Option<LogId<NodeId>> = store.read_meta(KEY_LAST_PURGED)?;
        if let Some(last_purged) = last_purged {
            store.remove_range(..=index_key(last_purged.index))?;
        }
        Ok(store)
    }

    /// Honours the test crash points in `dir` (debug builds only; see [`crate::failpoint`]).
    pub fn with_failpoints(mut self, dir: PathBuf) -> Self {
        self.failpoints = Some(dir);
        self
    }

    /// The [`failpoint::BEFORE_SECOND_MEMBERSHIP_STEP`] check, for an entry about to be stored.
    fn check_failpoints(&mut self, entry: &Entry) {
        if let EntryPayload::Membership(membership) = &entry.payload {
            let joint = membership.get_joint_config().len() > 1;
            if self.appended_joint && !joint {
                failpoint::crash_if_set(
                    self.failpoints.as_deref(),
                    failpoint::BEFORE_SECOND_MEMBERSHIP_STEP,
                );
            }
            self.appended_joint = joint;
        }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, io::Error> {
        match self.meta.get(key).map_err(io::Error::other)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), io::Error> {
        self.meta
            .insert(key, encode(value)?)
            .map_err(io::Error::other)?;
        Ok(())
    }

    async fn fsync(&self) -> Result<(), io::Error> {
        self.db.flush_async().await.map_err(io::Error::other)?;
        Ok(())
    }

    /// Removes every log entry whose index lies in `range`.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), io::Error> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (key, _) = item.map_err(io::Error::other)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(io::Error::other)
    }

    /// The number of entries in the log (O(n); for benchmarks and tests).
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range((start, end)) {
            let (_, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            let entry: Entry =
                decode(&value).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let read = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e);
        let last_purged: Option<LogId<NodeId>> = self.read_meta(KEY_LAST_PURGED).map_err(read)?;
        let last = match self.log.last().map_err(|e| read(io::Error::other(e)))? {
            Some((_, value)) => Some(decode::<Entry>(&value).map_err(read)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: io::Error| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e);
        self.write_meta(KEY_VOTE, vote).map_err(write)?;
        // A vote that is not on disk could be cast twice in one term after a crash.
        self.fsync().await.map_err(write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not flushed: losing it only means re-applying less of the log at start, which
        // openraft then does once the leader tells it the commit index again.
        self.write_meta(KEY_COMMITTED, &committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .read_meta(KEY_COMMITTED)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e);
        let mut batch = sled::Batch::default();
        for entry in entries {
            self.check_failpoints(&entry);
            batch.insert(
                &index_key(entry.log_id.index),
                encode(&entry).map_err(write)?,
            );
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write(io::Error::other(e)))?;
        // The entries are readable now; openraft may only count them toward a quorum once
        // they are on disk, so the callback waits for the fsync.
        match self.fsync().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = write(io::Error::other(e.to_string()));
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e);
        self.remove_range(index_key(log_id.index)..)
            .map_err(write)?;
        self.fsync().await.map_err(write)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e);
        // last_purged first, durably: otherwise a crash after deleting entries would leave a
        // log whose start openraft cannot explain.
        self.write_meta(KEY_LAST_PURGED, &Some(log_id))
            .map_err(write)?;
        self.fsync().await.map_err(write)?;
        self.remove_range(..=index_key(log_id.index)).map_err(write)
    }
}
