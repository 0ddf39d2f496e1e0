//! pgquorum: highly available PostgreSQL with one binary per host.
//!
//! Data flows one way (DESIGN §1): Raft commits decisions, the state machine publishes the
//! committed [`raft::ClusterView`] on a watch channel, and each consumer reacts. Consumers
//! never call each other; they change the cluster only by proposing a [`cluster::Command`].
//!
//! ```text
//!   peers ⇄ raft::service/network ─► raft::state_machine ─cluster::apply─► ClusterView (watch)
//!                                                                   ├─► lease (clock)
//!                                                                   └─► api (REST)
//! ```
#![deny(unsafe_code)]
#![warn(clippy::print_stdout)]

pub mod accept;
pub mod api;
pub mod backup;
pub mod ca_rotation;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod failpoint;
pub mod fence;
pub mod ha;
pub mod hooks;
pub mod identity;
pub mod lease;
pub mod net;
pub mod peers;
pub mod pooler;
pub mod postgres;
pub mod proxy;
pub mod raft;
pub mod rotate;
pub mod secret;
pub mod systemd;
pub mod tls;
pub mod vip;
