//! IP networks as the config names them: `10.0.0.0/8`, `192.168.1.7`, `fd00::/8`.

use std::net::IpAddr;
use std::str::FromStr;

/// The host of `host:port` (`[v6]:port` gives `v6`); all of `addr` when it has no port.
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// One entry: an address, or a network `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        let bad = || {
            format!(
                "{text:?} is not an address or a network (for example \"10.0.0.0/8\", \
                 \"192.168.1.7\" or \"fd00::/8\")"
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mask = |bits: u32| -> u128 {
            if self.prefix == 0 {
                0
            } else {
                u128::MAX << (bits - u32::from(self.prefix))
            }
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(32) as u32;
                u32::from(net) & m == u32::from(ip) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(128);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        let cases = [
            ("10.0.0.1:8008", "10.0.0.1"),
            ("db1.example.com:7400", "db1.example.com"),
            ("[fd00::1]:5432", "fd00::1"),
            ("db1", "db1"),
        ];
        for (addr, host) in cases {
            assert_eq!(host_of(addr), host, "{addr}");
        }
    }

    #[test]
    fn entries_parse_or_name_the_problem() {
        for good in ["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", "0.0.0.0/0"] {
            assert!(good.parse::<Network>().is_ok(), "{good}");
        }
        for bad in ["10.0.0.0/33", "host.example", "10.0.0/8", "::/129", ""] {
            let error = bad.parse::<Network>().unwrap_err();
            assert!(
                error.contains("is not an address or a network"),
                "{bad}: {error}"
            );
        }
    }
}
