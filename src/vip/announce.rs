//! The frames that tell a LAN a floating address has moved to this host (issue 5): Linux
//! does not announce an address when one is added, so without them clients keep the old
//! host's MAC until their neighbour entry expires (~47 s measured here). Pure: bytes in,
//! bytes out; sending them takes a packet socket and CAP_NET_RAW.
//!
//! - IPv4: a gratuitous ARP *request* (sender IP = target IP = the VIP), broadcast, as
//!   keepalived sends it.
//! - IPv6: an unsolicited Neighbour Advertisement for the VIP to all nodes (`ff02::1`) with
//!   the Override flag and our MAC as target link-layer address (RFC 4861 §7.2.6).

use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet address.
pub type Mac = [u8; 6];

const BROADCAST: Mac = [0xff; 6];
/// `33:33` + the low 32 bits of `ff02::1`.
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Override: replace the cached link-layer address.
const FLAG_OVERRIDE: u32 = 0x2000_0000;
const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;

/// The 42-byte gratuitous ARP request announcing that `vip` is at `mac`.
pub fn gratuitous_arp(mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&BROADCAST);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    frame.push(6); // hardware address length
    frame.push(4); // protocol address length
    frame.extend_from_slice(&1u16.to_be_bytes()); // request
    frame.extend_from_slice(&mac); // sender hardware address
    frame.extend_from_slice(&vip.octets()); // sender protocol address
    frame.extend_from_slice(&[0; 6]); // target hardware address: unknown
    frame.extend_from_slice(&vip.octets()); // target protocol address: the same VIP
    frame
}

/// The 86-byte unsolicited Neighbour Advertisement announcing that `vip` is at `mac`.
pub fn unsolicited_neighbour_advertisement(mac: Mac, vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // ICMPv6: type, code, checksum (filled below), flags, target, option.
    let mut icmp = Vec::with_capacity(32);
    icmp.push(NEIGHBOUR_ADVERTISEMENT);
    icmp.push(0);
    icmp.extend_from_slice(&[0, 0]);
    icmp.extend_from_slice(&FLAG_OVERRIDE.to_be_bytes());
    icmp.extend_from_slice(&vip.octets());
    icmp.push(OPTION_TARGET_LINK_LAYER_ADDRESS);
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(vip, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = Vec::with_capacity(86);
    frame.extend_from_slice(&ALL_NODES_MAC);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, no class or flow
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    frame.push(ICMPV6);
    frame.push(255); // hop limit: receivers drop NAs that crossed a router
    frame.extend_from_slice(&vip.octets());
    frame.extend_from_slice(&all_nodes.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// The Internet checksum of an ICMPv6 message over the IPv6 pseudo-header (RFC 8200 §8.1).
fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + message.len());
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
    pseudo.extend_from_slice(message);
    !ones_complement_sum(&pseudo)
}

fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    #[test]
    fn a_gratuitous_arp_names_the_vip_as_sender_and_target() {
        let vip = Ipv4Addr::new(10, 77, 0, 100);
        let frame = gratuitous_arp(MAC, vip);
        assert_eq!(frame.len(), 42);
        // (what, byte range, expected)
        let fields: [(&str, std::ops::Range<usize>, Vec<u8>); 9] = [
            ("destination: broadcast", 0..6, BROADCAST.to_vec()),
            ("source: our MAC", 6..12, MAC.to_vec()),
            ("ethertype ARP", 12..14, vec![0x08, 0x06]),
            ("Ethernet / IPv4", 14..18, vec![0, 1, 0x08, 0x00]),
            ("lengths 6 and 4, request", 18..22, vec![6, 4, 0, 1]),
            ("sender MAC", 22..28, MAC.to_vec()),
            ("sender IP: the VIP", 28..32, vip.octets().to_vec()),
            ("target MAC unknown", 32..38, vec![0; 6]),
            ("target IP: the VIP", 38..42, vip.octets().to_vec()),
        ];
        for (what, range, want) in fields {
            assert_eq!(frame[range].to_vec(), want, "{what}");
        }
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_checks_out() {
        let vip: Ipv6Addr = "fd00:77::100".parse().unwrap();
        let frame = unsolicited_neighbour_advertisement(MAC, vip);
        assert_eq!(frame.len(), 86);
        let fields: [(&str, std::ops::Range<usize>, Vec<u8>); 10] = [
            (
                "destination: all-nodes multicast MAC",
                0..6,
                ALL_NODES_MAC.to_vec(),
            ),
            ("source: our MAC", 6..12, MAC.to_vec()),
            ("ethertype IPv6", 12..14, vec![0x86, 0xdd]),
            (
                "payload 32 bytes, ICMPv6, hop limit 255",
                18..22,
                vec![0, 32, 58, 255],
            ),
            ("source: the VIP", 22..38, vip.octets().to_vec()),
            ("destination: ff02::1", 38..54, {
                let mut a = vec![0xff, 0x02];
                a.extend([0; 13]);
                a.push(1);
                a
            }),
            ("Neighbour Advertisement", 54..56, vec![136, 0]),
            ("Override, not Solicited", 58..62, vec![0x20, 0, 0, 0]),
            ("target: the VIP", 62..78, vip.octets().to_vec()),
            ("target link-layer address option", 78..86, {
                let mut o = vec![2, 1];
                o.extend(MAC);
                o
            }),
        ];
        for (what, range, want) in fields {
            assert_eq!(frame[range].to_vec(), want, "{what}");
        }
        // A receiver's check: the sum over the pseudo-header and the message, checksum
        // included, is all ones.
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&vip.octets());
        pseudo.extend_from_slice(&all_nodes.octets());
        pseudo.extend_from_slice(&32u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&frame[54..]);
        assert_eq!(ones_complement_sum(&pseudo), 0xffff);
    }

    #[test]
    fn the_checksum_matches_a_known_value() {
        // RFC 1071's example: the ones' complement sum of these words is 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&bytes), 0xddf2);
    }
}
