//! The real client address: who a request is judged and logged as.
//!
//! A request's TCP peer is the client unless the peer is one of `forwarding.trusted_hops`
//! (a load balancer or ingress in front of the pod). Then `X-Forwarded-For` is read from
//! right to left, skipping every trusted hop, and the first address that is not trusted is
//! the client: each hop appends the address it saw, so only the entries our own trusted
//! hops wrote can be believed, and anything further left is whatever the client claimed.
//! A peer outside the trusted networks gets no say at all, however many forged entries it
//! sends. Forwarding the header upstream is [`crate::forwarding`]'s business, not this one.

use std::net::{IpAddr, Ipv6Addr};

use crate::config::Forwarding;

/// The client address of a request.
///
/// `forwarded_for` is every `X-Forwarded-For` line of the request, in order.
///
/// With trusted hops `10.0.0.0/8` and a peer `10.0.0.5` sending
/// `X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.0.0.9`, the walk skips `10.0.0.9` (trusted)
/// and stops at `203.0.113.7`: that is the client; `6.6.6.6` is only a claim. The same
/// header from an untrusted peer `198.51.100.1` is ignored and the client is the peer.
/// When every entry is trusted, the leftmost one is the client. An entry that is not an
/// address ends the walk at the nearest hop already accepted, so garbage cannot pose as
/// a fresh client for every request.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a [u8]>,
    forwarding: &Forwarding,
) -> IpAddr {
    if !forwarding.real_ip || !forwarding.is_trusted(peer) {
        return peer;
    }

    let mut entries: Vec<&[u8]> = Vec::new();
    for line in forwarded_for {
        entries.extend(line.split(|b| *b == b','));
    }

    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = ip;
        if !forwarding.is_trusted(ip) {
            return client;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with blanks around it.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>().ok()
}

/// The address a client is counted and blocked as.
///
/// IPv4 addresses stand for themselves. An IPv6 client is its /64 network, because one
/// subscriber line gets a whole /64 and could otherwise rotate through addresses to
/// escape every limit; SAPL's own rate limiter keys its Redis entries the same way, so
/// `2001:db8:1:2:aaaa::1` is known as `2001:db8:1:2::`.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding(nets: &[&str]) -> Forwarding {
        Forwarding {
            trusted_hops: nets.iter().map(|n| n.parse().unwrap()).collect(),
            real_ip: true,
        }
    }

    fn walk(peer: &str, lines: &[&str], nets: &[&str]) -> String {
        let peer = peer.parse().unwrap();
        client_ip(peer, lines.iter().map(|l| l.as_bytes()), &forwarding(nets)).to_string()
    }

    const PRIVATE: [&str; 4] = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.1/32",
    ];

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            walk("198.51.100.1", &["1.2.3.4, 10.0.0.1"], &PRIVATE),
            "198.51.100.1"
        );
        assert_eq!(walk("198.51.100.1", &[], &PRIVATE), "198.51.100.1");
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_entry_from_the_right() {
        assert_eq!(
            walk("10.0.0.5", &["6.6.6.6, 203.0.113.7, 10.0.0.9"], &PRIVATE),
            "203.0.113.7"
        );
        // Two header lines are one list, in order.
        assert_eq!(
            walk(
                "127.0.0.1",
                &["6.6.6.6", "203.0.113.7, 192.168.1.1"],
                &PRIVATE
            ),
            "203.0.113.7"
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(walk("10.0.0.5", &[], &PRIVATE), "10.0.0.5");
        assert_eq!(walk("10.0.0.5", &[""], &PRIVATE), "10.0.0.5");
    }

    #[test]
    fn all_trusted_entries_give_the_leftmost() {
        assert_eq!(
            walk("10.0.0.5", &["192.168.0.3, 172.16.4.4"], &PRIVATE),
            "192.168.0.3"
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_nearest_accepted_hop() {
        assert_eq!(
            walk("10.0.0.5", &["203.0.113.7, unknown, 10.0.0.9"], &PRIVATE),
            "10.0.0.9"
        );
        assert_eq!(walk("10.0.0.5", &["not-an-ip"], &PRIVATE), "10.0.0.5");
    }

    #[test]
    fn ipv6_entries_are_read() {
        assert_eq!(
            walk("10.0.0.5", &[" 2001:db8::7 , 10.1.1.1"], &PRIVATE),
            "2001:db8::7"
        );
    }

    #[test]
    fn real_ip_off_means_the_peer() {
        let mut f = forwarding(&PRIVATE);
        f.real_ip = false;
        let peer = "10.0.0.5".parse().unwrap();
        let lines = ["203.0.113.7".as_bytes()];
        assert_eq!(client_ip(peer, lines.into_iter(), &f), peer);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let a = limit_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = limit_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::");
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(limit_key(v4), v4);
        assert_eq!(limit_key("::ffff:203.0.113.7".parse().unwrap()), v4);
    }
}
