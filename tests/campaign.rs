//! The fault campaign (issue 7): evidence that pgquorum loses no acknowledged commit and never
//! has two writable members, whatever is done to it.
//!
//! A campaign runs three hosts as network namespaces, clients that write unique values
//! through every path (the writer ports, the VIP, each PostgreSQL directly), samplers that
//! probe on every host whether its PostgreSQL accepts writes, and a nemesis that injects
//! faults in a random order drawn from a seed: kills and pauses of the daemon and of
//! PostgreSQL, partitions (both ways and one way), host restarts, a rolling restart and
//! switchovers. After the last fault it heals everything, lets the cluster converge, reads the
//! final table on the primary and checks the whole history. For the three-region runs, every
//! path between hosts goes through a relay that adds a one-way delay.
//!
//! Built so far, as pure and self-contained modules with their unit tests (no root, no
//! PostgreSQL; `cargo test --test campaign`):
//! - [`history`]: the records (writes with their outcome, faults, writability samples, the
//!   final read) and their JSON-lines file;
//! - [`checker`]: history + final table -> report: lost acknowledged writes, failed writes
//!   that reappeared, unknown writes, intervals with two writable members, recovery time per
//!   fault and per kind; the summary table and the CI verdict;
//! - [`relay`]: the userspace TCP relay (delay, jitter, cut) for the three-region
//!   simulation.
//!
//! Still to build: the clients, samplers and nemesis on real daemons in network namespaces,
//! the relays placed between the hosts, and the campaign entry point (a short, fixed-seed run
//! for CI; longer ones as documented commands).

mod common;

#[path = "campaign/checker.rs"]
mod checker;
#[path = "campaign/history.rs"]
mod history;
#[path = "campaign/relay.rs"]
mod relay;
