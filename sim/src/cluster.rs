//! Building simulated clusters: N server nodes that run [`hyperion::server::Server`] on crashable
//! simulated disks, client nodes that run [`hyperion::client::Client`], and the faults a test or
//! scenario applies to them (partitions, one-way links, kills, restarts, power loss, pauses,
//! clock skew).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyperion::client::Client;
use hyperion::config::{ClusterNode, Config};
use hyperion::db::SystemOfRecord;
use hyperion::db::{DbClient, DbClientConfig, SimDatabase};
use hyperion::replica::{RaftStatus, Replica};
use hyperion::runtime::{FatalExit, FatalHandler, NodeClock, SIMULATED_EXIT_MARKER};
use hyperion::server::Server;
use hyperion_raft::storage::SimDisk;
use hyperion_raft::Role;
use hyperion_store::StoreStats;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};

/// Node time at simulation start: 2026-01-01T00:00:00Z, so stamps look like real epoch millis.
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;
/// The gRPC port every simulated server listens on.
pub const SIM_PORT: u16 = 7000;

/// The simulated address of server number `index` (0-based): 10.0.0.(index + 1).
pub fn server_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1))
}

/// The simulated address of client number `index` (0-based): 10.0.1.(index + 1).
pub fn client_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1))
}

/// The configuration of server `index` of an `n`-node simulated cluster: the embedded default,
/// listening on its simulated address, with the cluster's members. (The environment parser
/// refuses non-loopback plaintext; simulated networks are not real ones.)
pub fn server_config(index: usize, n: usize) -> Config {
    let mut config = Config::development();
    config.cluster_nodes = (0..n)
        .map(|i| ClusterNode {
            name: format!("node{}", i + 1),
            addr: SocketAddr::new(server_ip(i), SIM_PORT).to_string(),
        })
        .collect();
    config.node_index = index;
    config.replication_factor = n;
    config.node_id = format!("node{}", index + 1);
    config.listen_addr = SocketAddr::new(server_ip(index), SIM_PORT);
    // A simulated disk is memory: a small reserve (the product's default is 64 MiB) keeps the
    // running out of space a disk_full fault models, at a fraction of the cost.
    config.disk_reserve_mb = 1;
    config
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A simulated server: its madsim node, its disk (which outlives restarts), its clock and, while
/// it runs, its replica handle (for status checks).
pub struct SimServer {
    pub handle: NodeHandle,
    pub addr: SocketAddr,
    pub clock: NodeClock,
    pub disk: SimDisk,
    /// The configuration the next (re)start uses.
    pub config: Arc<Mutex<Config>>,
    replica: Arc<Mutex<Option<Replica>>>,
    start_error: Arc<Mutex<Option<String>>>,
    exits: Arc<Mutex<Vec<NodeExit>>>,
    /// Set from the node's exit until madsim restarts it.
    awaiting_restart: Arc<std::sync::atomic::AtomicBool>,
}

/// The longest a node that exited waits for its restart (madsim restarts it 1-10 s after).
pub const EXIT_RESTART_MAX: Duration = Duration::from_secs(10);

/// A simulated process exit: the node could not go on ([`FatalHandler`]); madsim restarts it
/// after a seeded delay (1-10 s), as a supervisor restarts an exited process.
#[derive(Debug, Clone)]
pub struct NodeExit {
    pub at: hyperion::runtime::Instant,
    pub exit: FatalExit,
    /// Whether a disk fault was failing this node's syncs when it exited (an expected exit).
    pub disk_failing: bool,
}

impl SimServer {
    /// Starts a server node; on restart madsim runs the same startup again, on the same disk and
    /// clock. `disk_seed` drives the disk's power-loss tearing.
    pub fn start(config: Config, disk_seed: u64) -> SimServer {
        SimServer::start_with(config, disk_seed, None)
    }

    /// Like [`SimServer::start`], with the shared simulated database as system of record: every
    /// (re)start builds a fresh client (pool, breaker) against it and warms it up first.
    pub fn start_with(
        config: Config,
        disk_seed: u64,
        database: Option<DatabaseSetup>,
    ) -> SimServer {
        let clock = NodeClock::starting_at_ms(SIM_EPOCH_MS);
        let disk = SimDisk::new(disk_seed);
        let replica = Arc::new(Mutex::new(None));
        let start_error = Arc::new(Mutex::new(None));
        let exits = Arc::new(Mutex::new(Vec::new()));
        let awaiting_restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = config.listen_addr;
        let name = config.node_id.clone();
        let config = Arc::new(Mutex::new(config));
        let (node_clock, node_disk) = (clock.clone(), disk.clone());
        let (node_replica, node_error, node_config, node_exits) = (
            Arc::clone(&replica),
            Arc::clone(&start_error),
            Arc::clone(&config),
            Arc::clone(&exits),
        );
        let node_awaiting = Arc::clone(&awaiting_restart);
        let handle = Handle::current()
            .create_node()
            .name(name)
            .ip(addr.ip())
            .restart_on_panic_matching(SIMULATED_EXIT_MARKER)
            .init(move || {
                let config = lock(&node_config).clone();
                let clock = node_clock.clone();
                let disk = node_disk.clone();
                let slot = Arc::clone(&node_replica);
                let error_slot = Arc::clone(&node_error);
                let database = database.clone();
                node_awaiting.store(false, std::sync::atomic::Ordering::Relaxed);
                let fatal = {
                    let (slot, exits, disk) =
                        (Arc::clone(&slot), Arc::clone(&node_exits), disk.clone());
                    let awaiting = Arc::clone(&node_awaiting);
                    FatalHandler::recording(move |exit| {
                        *lock(&slot) = None;
                        awaiting.store(true, std::sync::atomic::Ordering::Relaxed);
                        lock(&exits).push(NodeExit {
                            at: hyperion::runtime::now(),
                            exit: exit.clone(),
                            disk_failing: disk.syncs_failing(),
                        });
                    })
                };
                async move {
                    let record = match database {
                        None => None,
                        Some(setup) => {
                            // Every process start builds its own pool over the shared database.
                            let db = setup.db.new_pool(setup.client.max_concurrent_queries);
                            let rng = hyperion::runtime::seeded_rng();
                            let client = if setup.warm_up {
                                DbClient::connect_and_warm(db, setup.client.clone(), rng).await
                            } else {
                                // The 2025-01-08 pre-fix: the pool is created by the first query.
                                Ok(DbClient::new(db, setup.client.clone(), rng))
                            };
                            match client {
                                Ok(client) => Some(SystemOfRecord::Simulated(client)),
                                Err(error) => {
                                    *lock(&error_slot) = Some(error.to_string());
                                    return;
                                }
                            }
                        }
                    };
                    let on_start_failure = fatal.clone();
                    let failing_disk = disk.clone();
                    let server =
                        match Server::start_with(&config, clock, Box::new(disk), record, fatal)
                            .await
                        {
                            Ok(server) => server,
                            Err(error) if failing_disk.syncs_failing() => {
                                // A start on a disk that still fails its fsyncs ends the process
                                // as storage failure (74), and its supervisor tries again later.
                                on_start_failure.exit(FatalExit {
                                    code: hyperion::runtime::EXIT_STORAGE_FAILED,
                                    reason: format!("could not start: {error}"),
                                })
                            }
                            Err(error) => {
                                // As a real process would: report and stop (the node stays down).
                                *lock(&error_slot) = Some(error.to_string());
                                return;
                            }
                        };
                    *lock(&error_slot) = None;
                    *lock(&slot) = Some(server.replica());
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
            disk,
            config,
            replica,
            start_error,
            exits,
            awaiting_restart,
        }
    }

    /// Whether the node exited and madsim has not restarted it yet.
    pub fn awaiting_restart(&self) -> bool {
        self.awaiting_restart
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every time this node exited on its own so far.
    pub fn exits(&self) -> Vec<NodeExit> {
        lock(&self.exits).clone()
    }

    /// Why the last start failed, if it did.
    pub fn start_error(&self) -> Option<String> {
        lock(&self.start_error).clone()
    }

    /// The running replica (in-process access for harness work such as bulk preloads).
    pub fn replica(&self) -> Option<Replica> {
        lock(&self.replica).clone()
    }

    /// Pending write-behind mutations and bytes, if the node is running.
    pub fn write_behind_backlog(&self) -> Option<(usize, u64)> {
        lock(&self.replica)
            .as_ref()
            .map(Replica::write_behind_backlog)
    }

    /// The node's database breaker state (0 closed, 1 open, 2 half-open), if it has one.
    pub fn database_breaker_state(&self) -> Option<u8> {
        lock(&self.replica)
            .as_ref()
            .and_then(|replica| replica.record().map(|r| r.breaker_state().as_metric()))
    }

    /// The replica's Raft status, if the node is running.
    pub fn status(&self) -> Option<RaftStatus> {
        lock(&self.replica).as_ref().map(Replica::status)
    }

    /// The replica's applied index and state digest, if the node is running.
    pub fn state_digest(&self) -> Option<(u64, u64)> {
        lock(&self.replica).as_ref().map(Replica::state_digest)
    }

    /// The store's counters and gauges, if the node is running.
    pub fn stats(&self) -> Option<StoreStats> {
        lock(&self.replica).as_ref().map(Replica::stats)
    }

    /// Bytes the replica holds outside its store (only the read-path leak fault injection).
    pub fn retained_read_bytes(&self) -> Option<u64> {
        lock(&self.replica)
            .as_ref()
            .map(Replica::retained_read_bytes)
    }

    /// A client talking to this node only.
    pub fn client(&self) -> Client {
        Client::new(&self.addr.to_string()).expect("a socket address is a valid endpoint")
    }
}

/// A simulated cluster of N servers.
pub struct SimCluster {
    pub servers: Vec<SimServer>,
    /// The system of record every node writes behind to and reads through, if any.
    pub database: Option<SimDatabase>,
}

/// How simulated nodes use the shared simulated database.
#[derive(Clone)]
pub struct DatabaseSetup {
    pub db: SimDatabase,
    /// Warm the pool up before serving (the 2025-01-08 fix); off replays the incident.
    pub warm_up: bool,
    /// The client's cap, timeouts, retries, breaker and single-flight.
    pub client: DbClientConfig,
}

impl DatabaseSetup {
    /// The product's settings over `db`.
    pub fn new(db: SimDatabase) -> DatabaseSetup {
        DatabaseSetup {
            db,
            warm_up: true,
            client: hyperion::config::DatabaseConfig::default().client_config(),
        }
    }
}

impl SimCluster {
    /// Starts `n` servers; `tweak` adjusts each one's configuration (timings, flags).
    pub fn start(n: usize, tweak: impl Fn(&mut Config)) -> SimCluster {
        SimCluster::start_with(n, tweak, None)
    }

    /// Starts `n` servers over a shared simulated database (the system of record). Every node's
    /// configuration must pass the product's `Config::validate`: a simulated node is never
    /// built with a setting the product would refuse.
    pub fn start_with(
        n: usize,
        tweak: impl Fn(&mut Config),
        database: Option<DatabaseSetup>,
    ) -> SimCluster {
        let servers = (0..n)
            .map(|i| {
                let mut config = server_config(i, n);
                tweak(&mut config);
                if let Err(error) = config.validate() {
                    panic!(
                        "node{} would run with a configuration the product refuses: {error}",
                        i + 1
                    );
                }
                SimServer::start_with(config, madsim::rand::random::<u64>(), database.clone())
            })
            .collect();
        SimCluster {
            servers,
            database: database.map(|setup| setup.db),
        }
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.to_string()).collect()
    }

    /// A client that knows every node.
    pub fn client(&self) -> Client {
        Client::cluster(&self.addrs()).expect("simulated addresses are valid")
    }

    /// The index of the node that is leader in the highest term among running nodes, if any.
    pub fn leader(&self) -> Option<usize> {
        self.servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.status().map(|st| (i, st)))
            .filter(|(_, st)| st.role == Some(Role::Leader))
            .max_by_key(|(_, st)| st.term)
            .map(|(i, _)| i)
    }

    /// Waits (in simulated time) until some node leads; returns its index.
    pub async fn wait_for_leader(&self, within: Duration) -> Option<usize> {
        let deadline = hyperion::runtime::now() + within;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if hyperion::runtime::now() >= deadline {
                return None;
            }
            madsim::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a leader exists and every running node knows it; returns its index.
    pub async fn wait_for_settled_leader(&self, within: Duration) -> Option<usize> {
        let deadline = hyperion::runtime::now() + within;
        loop {
            if let Some(leader) = self.leader() {
                let leader_id = leader as u64 + 1;
                let settled = self
                    .servers
                    .iter()
                    .filter_map(SimServer::status)
                    .all(|status| status.leader_id == Some(leader_id));
                if settled {
                    return Some(leader);
                }
            }
            if hyperion::runtime::now() >= deadline {
                return None;
            }
            madsim::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let net = NetSim::current();
        for &x in a {
            for &y in b {
                net.clog_link(self.servers[x].handle.id(), self.servers[y].handle.id());
                net.clog_link(self.servers[y].handle.id(), self.servers[x].handle.id());
            }
        }
    }

    /// Restores both directions between every node of `a` and every node of `b` (undoes
    /// [`SimCluster::partition`] for these nodes only).
    pub fn unpartition(&self, a: &[usize], b: &[usize]) {
        let net = NetSim::current();
        for &x in a {
            for &y in b {
                net.unclog_link(self.servers[x].handle.id(), self.servers[y].handle.id());
                net.unclog_link(self.servers[y].handle.id(), self.servers[x].handle.id());
            }
        }
    }

    /// Cuts one direction: messages from `from` to `to` are lost.
    pub fn cut_one_way(&self, from: usize, to: usize) {
        NetSim::current().clog_link(self.servers[from].handle.id(), self.servers[to].handle.id());
    }

    /// Undoes [`SimCluster::cut_one_way`].
    pub fn heal_one_way(&self, from: usize, to: usize) {
        NetSim::current().unclog_link(self.servers[from].handle.id(), self.servers[to].handle.id());
    }

    /// Isolates `node` from every other server (clients can still reach it).
    pub fn isolate(&self, node: usize) {
        let others: Vec<usize> = (0..self.servers.len()).filter(|&i| i != node).collect();
        self.partition(&[node], &others);
    }

    /// Restores every link between servers.
    pub fn heal(&self) {
        let net = NetSim::current();
        for x in &self.servers {
            for y in &self.servers {
                if x.handle.id() != y.handle.id() {
                    net.unclog_link(x.handle.id(), y.handle.id());
                }
            }
        }
    }

    /// Kills a node's process (its disk keeps everything written, as after a crash).
    pub fn kill(&self, node: usize) {
        *lock(&self.servers[node].replica) = None;
        let id = self.servers[node].handle.id();
        hyperion::runtime::sim::cancel_pause_request(id);
        Handle::current().kill(id);
    }

    /// Restarts a killed node: it recovers from its disk. A node that exited on its own is left
    /// to its pending restart (two restarts would bind its address twice).
    pub fn restart(&self, node: usize) {
        if self.servers[node].awaiting_restart() {
            return;
        }
        Handle::current().restart(self.servers[node].handle.id());
    }

    /// Kills a node and cuts its power: unsynced disk writes are lost (the last may be torn).
    pub fn power_loss(&self, node: usize) {
        self.kill(node);
        self.servers[node].disk.power_loss();
    }

    /// Freezes a node (a long GC pause or a stopped VM); its clock keeps running.
    pub fn pause(&self, node: usize) {
        Handle::current().pause(self.servers[node].handle.id());
    }

    /// Resumes a paused node (and withdraws a pause inside a turn that has not landed yet).
    pub fn resume(&self, node: usize) {
        let id = self.servers[node].handle.id();
        hyperion::runtime::sim::cancel_pause_request(id);
        Handle::current().resume(id);
    }
}

/// A client node (its own IP, so rate limits and clogs apply to it alone).
pub fn client_node(index: usize) -> NodeHandle {
    Handle::current()
        .create_node()
        .name(format!("client{}", index + 1))
        .ip(client_ip(index))
        .build()
}

/// Writes keys `k0..k{count}` (each key's value is the key) from client `node`, and returns
/// every key with the version it was acknowledged with.
pub async fn write_keys(node: &NodeHandle, client: &Client, count: u32) -> Vec<(String, u64)> {
    let client = client.clone();
    node.spawn(async move {
        let mut written = Vec::with_capacity(count as usize);
        for i in 0..count {
            let key = format!("k{i}");
            let reply = client
                .set(key.as_bytes(), key.as_bytes(), 0, 0)
                .await
                .expect("write acknowledged");
            written.push((key, reply.version));
        }
        written
    })
    .await
    .expect("the writing client node ran")
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
