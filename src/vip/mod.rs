//! The floating VIP (issue 5, DESIGN §3 and §5): an address present on exactly the member
//! that holds the lease and runs a writable primary, added over netlink and announced so the
//! LAN's neighbour caches follow it, removed before PostgreSQL is demoted.
//!
//! Built so far: the announcement frames ([`announce`]). Not yet: adding and removing the
//! address, sending the frames, binding all of it to the lease (see the issue).

pub mod announce;
