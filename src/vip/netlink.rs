//! The kernel side of the VIP: find the interface, add the address with a lifetime, remove
//! it, ask whether it is there. Over rtnetlink, never by running `ip`.
//!
//! Every add is a *replace* that also sets the address's valid lifetime: the kernel deletes
//! an address whose lifetime runs out, so a daemon that is killed or stopped (SIGKILL,
//! SIGSTOP, a hung process) cannot leave the VIP behind for longer than about one lease.
//! Refreshing it with each renewal keeps it.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use super::announce::Mac;
use super::Error;

/// `CAP_NET_ADMIN` and `CAP_NET_RAW` as bits of the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// The capabilities netlink mode needs that this process lacks, by name (empty when it has
/// both): CAP_NET_ADMIN to add and remove the address, CAP_NET_RAW to announce it.
pub fn missing_capabilities() -> Vec<&'static str> {
    missing_in(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// [`missing_capabilities`] judged from the text of a `/proc/<pid>/status` file.
fn missing_in(status: &str) -> Vec<&'static str> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect()
}

/// One interface, found by name or by the subnet of one of its addresses.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
}

/// A netlink connection (its task runs on the current runtime).
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub fn connect() -> Result<Self, Error> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| Error::Netlink {
                doing: "opening a netlink socket".into(),
                message: source.to_string(),
            })?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The interface named `name`, or (`None`) the one that has an address whose subnet
    /// contains `vip` (the VIP itself does not count).
    pub async fn interface(&self, name: Option<&str>, vip: IpAddr) -> Result<Interface, Error> {
        let index = match name {
            Some(name) => {
                let link = self
                    .handle
                    .link()
                    .get()
                    .match_name(name.to_string())
                    .execute()
                    .try_next()
                    .await;
                match link {
                    Ok(Some(link)) => link.header.index,
                    _ => {
                        return Err(Error::NoInterface {
                            what: format!(
                                "[vip] interface = {name:?} does not exist on this host; `ip \
                                 link` lists them, or remove the key to pick the one whose \
                                 subnet holds the VIP"
                            ),
                        })
                    }
                }
            }
            None => self.index_for_subnet(vip).await?,
        };
        let link = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(|e| netlink_error("reading the interface", e))?
            .ok_or_else(|| Error::NoInterface {
                what: format!("interface {index} vanished"),
            })?;
        let mut found_name = String::new();
        let mut mac = None;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(n) => found_name = n.clone(),
                LinkAttribute::Address(bytes)
                    if bytes.len() == 6 && bytes.iter().any(|b| *b != 0) =>
                {
                    mac = Some([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]]);
                }
                _ => {}
            }
        }
        let mac = mac.ok_or_else(|| Error::NoInterface {
            what: format!(
                "interface {found_name:?} has no Ethernet address (loopback or a tunnel?): a VIP \
                 needs a LAN interface; set [vip] interface"
            ),
        })?;
        Ok(Interface {
            name: found_name,
            index,
            mac,
        })
    }

    async fn index_for_subnet(&self, vip: IpAddr) -> Result<u32, Error> {
        let mut addresses = self.handle.address().get().execute();
        while let Some(message) = addresses
            .try_next()
            .await
            .map_err(|e| netlink_error("listing addresses", e))?
        {
            let prefix = message.header.prefix_len;
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = local.or_else(|| {
                message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(address) = address {
                if address != vip && same_subnet(address, vip, prefix) && !address.is_loopback() {
                    return Ok(message.header.index);
                }
            }
        }
        Err(Error::NoInterface {
            what: format!(
                "no interface has an address in the subnet of the VIP {vip}; set [vip] interface"
            ),
        })
    }

    /// Adds `vip/prefix` on `interface`, or refreshes it, valid for `lifetime` (whole
    /// seconds, at least one). IPv6 addresses skip duplicate address detection (a VIP moves
    /// on purpose) and are never preferred as a source address.
    pub async fn add(
        &self,
        interface: &Interface,
        vip: IpAddr,
        prefix: u8,
        lifetime: Duration,
    ) -> Result<(), Error> {
        let mut request = self
            .handle
            .address()
            .add(interface.index, vip, prefix)
            .replace();
        let seconds = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut cache = CacheInfo::default();
        cache.ifa_valid = seconds;
        cache.ifa_preferred = if vip.is_ipv6() { 0 } else { seconds };
        let message = request.message_mut();
        message.attributes.push(AddressAttribute::CacheInfo(cache));
        if vip.is_ipv6() {
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("adding {vip}/{prefix} to {}", interface.name), e))
    }

    /// Removes every copy of `vip` from `interface`; true if there was one.
    pub async fn remove(&self, interface: &Interface, vip: IpAddr) -> Result<bool, Error> {
        let found = self.find(interface, vip).await?;
        let removed = !found.is_empty();
        for message in found {
            match self.handle.address().del(message).execute().await {
                Ok(()) => {}
                // Gone meanwhile (its lifetime ran out): what we wanted.
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(netlink_error(
                        &format!("removing {vip} from {}", interface.name),
                        e,
                    ))
                }
            }
        }
        Ok(removed)
    }

    /// Whether `vip` is on `interface`.
    pub async fn is_present(&self, interface: &Interface, vip: IpAddr) -> Result<bool, Error> {
        Ok(!self.find(interface, vip).await?.is_empty())
    }

    /// The kernel's records of `vip` on `interface`.
    async fn find(&self, interface: &Interface, vip: IpAddr) -> Result<Vec<AddressMessage>, Error> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(interface.index)
            .set_address_filter(vip)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing addresses", e))
    }
}

/// Whether `a` and `b` share their first `prefix` bits (false across address families).
pub fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The errno of a netlink error reply, positive.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

fn netlink_error(doing: &str, error: rtnetlink::Error) -> Error {
    let message = match errno(&error) {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => error.to_string(),
    };
    Error::Netlink {
        doing: doing.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_compared_on_their_prefix_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("same /24", "10.0.0.5", "10.0.0.100", 24, true),
            ("other /24", "10.0.1.5", "10.0.0.100", 24, false),
            ("a /16 holds both", "10.0.1.5", "10.0.0.100", 16, true),
            (
                "/32 is the address itself",
                "10.0.0.5",
                "10.0.0.100",
                32,
                false,
            ),
            ("/0 holds everything", "192.168.1.1", "10.0.0.1", 0, true),
            ("IPv6 /64", "fd00:1::5", "fd00:1::100", 64, true),
            ("IPv6 other /64", "fd00:2::5", "fd00:1::100", 64, false),
            ("families never match", "10.0.0.5", "fd00:1::100", 0, false),
        ];
        for (what, a, b, prefix, want) in cases {
            assert_eq!(same_subnet(ip(a), ip(b), prefix), want, "{what}");
        }
    }

    #[test]
    fn capabilities_are_read_from_the_effective_set() {
        let status = |eff: &str| format!("Name:\tpgquorum\nCapInh:\t0\nCapEff:\t{eff}\n");
        let cases: [(&str, String, Vec<&str>); 5] = [
            ("root", status("000001ffffffffff"), vec![]),
            (
                "no capabilities",
                status("0000000000000000"),
                vec!["CAP_NET_ADMIN", "CAP_NET_RAW"],
            ),
            (
                "the unit's ambient pair",
                status("0000000000003000"),
                vec![],
            ),
            (
                "admin only",
                status("0000000000001000"),
                vec!["CAP_NET_RAW"],
            ),
            (
                "unreadable",
                String::new(),
                vec!["CAP_NET_ADMIN", "CAP_NET_RAW"],
            ),
        ];
        for (what, text, want) in cases {
            assert_eq!(missing_in(&text), want, "{what}");
        }
    }
}
