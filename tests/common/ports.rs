//! Free loopback ports: bind `127.0.0.1:0`, note the port, release it.
//!
//! A process-wide set makes sure two nodes of the same test binary never get the same port,
//! even when the kernel hands a released port out again.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A loopback port that is free now and was not handed out before by this process.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        if handed_out().lock().expect("port set").insert(port) {
            return port;
        }
    }
}

/// Whether nothing listens on (or holds) `127.0.0.1:port`.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}
