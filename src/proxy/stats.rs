//! What the proxy counts for `/metrics`: connections (open and total) and bytes per port and
//! backend, refusals per port, and changes of the writer route.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::cluster::NodeId;

/// The proxy's two ports, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    Writer,
    Reader,
}

impl Port {
    pub fn label(self) -> &'static str {
        match self {
            Port::Writer => "writer",
            Port::Reader => "reader",
        }
    }
}

/// Counters for one backend behind one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub active: u64,
    pub total: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
}

/// A copy of every counter, taken at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub backends: BTreeMap<(Port, NodeId), Backend>,
    /// Connections refused (no backend, too many connections, backend unreachable).
    pub refused: BTreeMap<Port, u64>,
    /// Times the writer route changed.
    pub writer_changes: u64,
}

/// Shared by the proxy's tasks and read by the API.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Snapshot>,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().expect("proxy stats poisoned").clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Snapshot) -> T) -> T {
        f(&mut self.inner.lock().expect("proxy stats poisoned"))
    }

    pub fn opened(&self, port: Port, node: NodeId) {
        self.with(|s| {
            let b = s.backends.entry((port, node)).or_default();
            b.active += 1;
            b.total += 1;
        });
    }

    /// A connection closed after copying these many bytes each way.
    pub fn closed(&self, port: Port, node: NodeId, to_backend: u64, to_client: u64) {
        self.with(|s| {
            let b = s.backends.entry((port, node)).or_default();
            b.active = b.active.saturating_sub(1);
            b.bytes_to_backend += to_backend;
            b.bytes_to_client += to_client;
        });
    }

    pub fn refused(&self, port: Port) {
        self.with(|s| *s.refused.entry(port).or_default() += 1);
    }

    pub fn writer_changed(&self) {
        self.with(|s| s.writer_changes += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let stats = Stats::default();
        stats.opened(Port::Writer, NodeId(1));
        stats.opened(Port::Writer, NodeId(1));
        stats.closed(Port::Writer, NodeId(1), 10, 20);
        stats.refused(Port::Reader);
        stats.writer_changed();
        let s = stats.snapshot();
        assert_eq!(
            s.backends[&(Port::Writer, NodeId(1))],
            Backend {
                active: 1,
                total: 2,
                bytes_to_backend: 10,
                bytes_to_client: 20
            }
        );
        assert_eq!(s.refused[&Port::Reader], 1);
        assert_eq!(s.writer_changes, 1);
    }
}
