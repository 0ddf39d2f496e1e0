//! The pooler (issue 20, under construction): a PostgreSQL-aware port on every member, fed
//! by the same lease-bound routing as the proxy, that logs clients in itself and hands
//! their transactions to pooled server connections.
//!
//! Built so far, and not yet listening anywhere: the server's side of the protocol until
//! login ([`wire`]) and SCRAM-SHA-256 at both ends from a role's verifier ([`scram`]), so
//! that a client's login yields the key the pooler logs in to PostgreSQL with, and no
//! password is stored.

pub mod scram;
pub mod wire;
