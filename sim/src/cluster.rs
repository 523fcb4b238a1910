//! Building simulated nodes: servers that run [`hyperion::server::Server`] and client nodes that
//! run [`hyperion::client::Client`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hyperion::client::Client;
use hyperion::config::Config;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};

/// Node time at simulation start: 2026-01-01T00:00:00Z, so stamps look like real epoch millis.
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;
/// The gRPC port every simulated server listens on.
pub const SIM_PORT: u16 = 7000;

/// The simulated address of server number `index` (0-based): 10.0.0.(index + 1).
pub fn server_ip(index: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, index + 1))
}

/// The simulated address of client number `index` (0-based): 10.0.1.(index + 1).
pub fn client_ip(index: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, index + 1))
}

/// The configuration of a simulated server: the embedded default, listening on its simulated
/// address. (The environment parser refuses non-loopback plaintext; simulated networks are not
/// real ones.)
pub fn server_config(index: u8) -> Config {
    let mut config = Config::development();
    config.node_id = format!("node{}", index + 1);
    config.listen_addr = SocketAddr::new(server_ip(index), SIM_PORT);
    config.cluster_nodes = vec![config.listen_addr.to_string()];
    config
}

/// A running simulated server.
pub struct SimServer {
    pub handle: NodeHandle,
    pub addr: SocketAddr,
    /// The node's clock; skew it with `set_rate` / `jump_ms` while the node runs.
    pub clock: NodeClock,
}

impl SimServer {
    /// Starts a server node named after the config's node id. On restart the node runs the same
    /// startup again (with the same clock).
    pub fn start(config: Config) -> SimServer {
        let clock = NodeClock::starting_at_ms(SIM_EPOCH_MS);
        let addr = config.listen_addr;
        let node_clock = clock.clone();
        let handle = Handle::current()
            .create_node()
            .name(config.node_id.clone())
            .ip(addr.ip())
            .init(move || {
                let config = config.clone();
                let clock = node_clock.clone();
                async move {
                    let server =
                        Server::bind(&config, clock).expect("simulated server config is valid");
                    server
                        .serve(std::future::pending())
                        .await
                        .expect("simulated server serves until killed");
                }
            })
            .build();
        SimServer {
            handle,
            addr,
            clock,
        }
    }

    /// A client for this server.
    pub fn client(&self) -> Client {
        Client::new(&self.addr.to_string()).expect("a socket address is a valid endpoint")
    }
}

/// A client node (its own IP, so rate limits and clogs apply to it alone).
pub fn client_node(index: u8) -> NodeHandle {
    Handle::current()
        .create_node()
        .name(format!("client{}", index + 1))
        .ip(client_ip(index))
        .build()
}

/// Cuts every packet between two nodes, both directions, until [`heal_link`].
pub fn cut_link(a: &NodeHandle, b: &NodeHandle) {
    let net = NetSim::current();
    net.clog_link(a.id(), b.id());
    net.clog_link(b.id(), a.id());
}

/// Undoes [`cut_link`].
pub fn heal_link(a: &NodeHandle, b: &NodeHandle) {
    let net = NetSim::current();
    net.unclog_link(a.id(), b.id());
    net.unclog_link(b.id(), a.id());
}
