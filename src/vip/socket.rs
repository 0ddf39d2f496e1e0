//! Sends the frames of [`super::announce`] out of one interface, on an `AF_PACKET` socket
//! (needs CAP_NET_RAW). The socket is opened with protocol 0, so it never receives.

use std::net::IpAddr;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

use super::announce::{gratuitous_arp, unsolicited_neighbour_advertisement};
use super::netlink::Interface;
use super::Error;

/// Announces one address on one interface.
pub struct Announcer {
    socket: Socket,
    destination: SockAddr,
    frame: Vec<u8>,
    what: String,
}

impl Announcer {
    /// A socket bound to nothing, addressed to `interface`, with the frame for `vip`.
    pub fn open(interface: &Interface, vip: IpAddr) -> Result<Self, Error> {
        let (frame, ethertype, broadcast) = match vip {
            IpAddr::V4(v4) => (gratuitous_arp(interface.mac, v4), 0x0806u16, [0xff; 6]),
            IpAddr::V6(v6) => (
                unsolicited_neighbour_advertisement(interface.mac, v6),
                0x86dd,
                [0x33, 0x33, 0, 0, 0, 1],
            ),
        };
        let what = format!("announcing {vip} on {}", interface.name);
        let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(|e| Error::Announce {
            doing: what.clone(),
            source: e,
        })?;
        let destination = link_address(interface.index, ethertype, broadcast);
        Ok(Self {
            socket,
            destination,
            frame,
            what,
        })
    }

    /// Sends the frame once.
    pub fn send(&self) -> Result<(), Error> {
        self.socket
            .send_to(&self.frame, &self.destination)
            .map(|_| ())
            .map_err(|e| Error::Announce {
                doing: self.what.clone(),
                source: e,
            })
    }
}

/// A `sockaddr_ll` for sending to `destination` (an Ethernet address) out of interface
/// `index` with `ethertype`.
#[allow(unsafe_code)]
fn link_address(index: u32, ethertype: u16, destination: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_ll (both are
    // plain C structs of integers), and the storage was zeroed, so every field is valid.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = ethertype.to_be();
    ll.sll_ifindex = i32::try_from(index).unwrap_or(0);
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&destination);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the first `len` bytes of `storage` hold the sockaddr_ll initialised above.
    unsafe { SockAddr::new(storage, len) }
}
