//! The writer/reader TCP proxy every member runs (DESIGN §5): the writer port always reaches
//! the current primary, the reader port the replicas within a lag limit. Routing follows the
//! committed cluster state through the watch channel, never a polling health check.
//!
//! Built in steps (issue 4): so far the routing table ([`routes`]), pure and table-tested.

pub mod routes;

pub use routes::{routes, Inputs, Policy, Routes, Target};
