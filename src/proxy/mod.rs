//! The writer/reader TCP proxy every member runs (DESIGN §5): the writer port always reaches
//! the current primary, the reader port the replicas within a lag limit. Routing follows the
//! committed cluster state through the watch channel, never a polling health check.
//!
//! ```text
//!  view, peer statuses, lease clock ─► routes() ─► watch<Routes> ─► writer / reader connections
//! ```

pub mod routes;
pub mod server;
pub mod stats;

pub use routes::{routes, Balance, Inputs, Policy, Routes, Target};
