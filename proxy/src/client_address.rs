//! The client's real address when the proxy sits behind a load balancer that speaks PROXY
//! protocol v2 (an AWS NLB target group with `proxy_protocol_v2`, HAProxy's
//! `send-proxy-v2`). An NLB with IP targets does not preserve client addresses: without the
//! header every session would come from the balancer, the per-address start-up limit would
//! be one limit for everybody, and the audit's `client` would name the balancer.
//!
//! Trust is by the connecting address: a connection from `proxy_protocol.from` must begin
//! with a header (a LOCAL one, as health checks send, keeps the balancer's address); a
//! connection from anywhere else that begins with one is refused as a malformed start-up,
//! so nobody can claim an address by sending a header themselves.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::v2;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The `[proxy_protocol]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyProtocolSettings {
    /// Networks of the load balancers that send a PROXY protocol v2 header (e.g. the NLB's
    /// subnets). Empty: no header is accepted from anyone.
    pub from: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("a connection from the load balancer without a PROXY protocol v2 header")]
    Missing,
    #[error("a malformed PROXY protocol v2 header: {0}")]
    Malformed(String),
    #[error("a PROXY protocol v2 header without an IP source address")]
    NoAddress,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Largest address block accepted (IPv6 addresses plus a few TLVs; AWS adds the endpoint id).
const MAX_PAYLOAD: usize = 512;

/// The address the session is from: the header's source when `peer` is a trusted balancer,
/// else `peer` itself. Reads exactly the header, nothing of what follows it.
pub async fn resolve(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    settings: &ProxyProtocolSettings,
) -> Result<SocketAddr, HeaderError> {
    if settings.from.is_empty() {
        return Ok(peer);
    }
    // From anywhere else nothing is read here: what comes first must be a start-up
    // message, whose length a header's bytes would make absurd, so the start-up check (in
    // its per-address slot) refuses it. Waiting here would hold a connection outside that
    // limit.
    if !settings.from.iter().any(|net| net.contains(&peer.ip())) {
        return Ok(peer);
    }
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head).await?;
    if head[..12] != v2::PROTOCOL_PREFIX[..] {
        return Err(HeaderError::Missing);
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(HeaderError::Malformed(format!("{len} bytes of addresses")));
    }
    let mut all = Vec::with_capacity(16 + len);
    all.extend_from_slice(&head);
    all.resize(16 + len, 0);
    tcp.read_exact(&mut all[16..]).await?;
    let header =
        v2::Header::try_from(all.as_slice()).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    source(&header, peer)
}

fn source(header: &v2::Header<'_>, peer: SocketAddr) -> Result<SocketAddr, HeaderError> {
    match (header.command, &header.addresses) {
        // The balancer's own connection (a health check).
        (v2::Command::Local, _) => Ok(peer),
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Ok(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Ok(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, _) => Err(HeaderError::NoAddress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cmd: u8, addresses: &[u8], family: u8) -> Vec<u8> {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.push(cmd);
        h.push(family);
        h.extend((addresses.len() as u16).to_be_bytes());
        h.extend(addresses);
        h
    }

    #[test]
    fn the_source_address_is_the_clients() {
        let peer: SocketAddr = "10.0.0.5:41000".parse().unwrap();
        let ipv4 = header(
            0x21,
            &[192, 0, 2, 7, 10, 0, 0, 9, 0x9c, 0x40, 0x19, 0x01],
            0x11,
        );
        let h = v2::Header::try_from(ipv4.as_slice()).unwrap();
        assert_eq!(
            source(&h, peer).unwrap(),
            "192.0.2.7:40000".parse().unwrap()
        );
        let local = header(0x20, &[], 0x00);
        let h = v2::Header::try_from(local.as_slice()).unwrap();
        assert_eq!(source(&h, peer).unwrap(), peer);
        let unspecified = header(0x21, &[], 0x00);
        let h = v2::Header::try_from(unspecified.as_slice()).unwrap();
        assert!(matches!(source(&h, peer), Err(HeaderError::NoAddress)));
    }
}
