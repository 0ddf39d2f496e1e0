//! Who may call the REST API's unsafe endpoints (Patroni's `restapi.allowlist`): the
//! addresses in `[api] allowlist`, by network. Health and read-only endpoints stay open to
//! anyone (load balancers, Prometheus); admin calls also need the bearer token.

use std::net::IpAddr;

use axum::http::Method;

use crate::net::Network;

/// Whether a request to `path` with `method` is unsafe: it changes something, or reads
/// what only an administrator may (join tokens, the dynamic config).
pub fn is_unsafe(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || path.starts_with("/admin")
        || path == "/config"
}

/// Whether `remote` may make the request: always for a safe one; for an unsafe one, when
/// there is no allowlist or `remote` is in it.
pub fn allowed(allowlist: &[Network], method: &Method, path: &str, remote: IpAddr) -> bool {
    allowlist.is_empty() || !is_unsafe(method, path) || allowlist.iter().any(|n| n.contains(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn unsafe_calls_need_an_allowed_address_and_safe_ones_do_not() {
        let list = nets(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let post = Method::POST;
        let get = Method::GET;
        let cases: [(&str, &Method, &str, &str, bool); 10] = [
            (
                "in the network",
                &post,
                "/admin/switchover",
                "10.1.2.3",
                true,
            ),
            (
                "the single address",
                &post,
                "/admin/switchover",
                "192.168.1.7",
                true,
            ),
            (
                "its neighbour",
                &post,
                "/admin/switchover",
                "192.168.1.8",
                false,
            ),
            ("outside", &post, "/admin/switchover", "172.16.0.1", false),
            (
                "IPv4-mapped IPv6",
                &post,
                "/admin/switchover",
                "::ffff:10.9.9.9",
                true,
            ),
            (
                "IPv6 network",
                &Method::DELETE,
                "/admin/tokens/x",
                "fd00::5",
                true,
            ),
            (
                "reading tokens is unsafe",
                &get,
                "/admin/tokens",
                "172.16.0.1",
                false,
            ),
            (
                "reading the config is unsafe",
                &get,
                "/config",
                "172.16.0.1",
                false,
            ),
            ("health is open", &get, "/primary", "172.16.0.1", true),
            ("metrics are open", &get, "/metrics", "172.16.0.1", true),
        ];
        for (case, method, path, remote, expected) in cases {
            assert_eq!(allowed(&list, method, path, ip(remote)), expected, "{case}");
        }
        assert!(
            allowed(&[], &post, "/admin/switchover", ip("172.16.0.1")),
            "no allowlist"
        );
    }
}
