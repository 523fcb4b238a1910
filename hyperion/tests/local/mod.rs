//! One in-process node on loopback for the HTTP/2 tests (`loopback.rs`, `watch.rs`): started
//! with the product's configuration, served until stopped, its data directory removed after.

#![allow(dead_code)] // Each test crate uses the part it needs.

use std::net::SocketAddr;
use std::time::Duration;

use hyperion::config::Config;
use hyperion::limits::RateLimits;
use hyperion::proto::cache_service_client::CacheServiceClient;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;
use tokio::sync::oneshot;

pub struct Running {
    pub addr: SocketAddr,
    pub replica: hyperion::replica::Replica,
    data_dir: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), hyperion::server::StartError>>,
}

impl Running {
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        let result = tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic");
        assert!(result.is_ok(), "graceful shutdown returns Ok: {result:?}");
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn loopback_config() -> Config {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT_DIR: AtomicU32 = AtomicU32::new(0);
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.data_dir = std::env::temp_dir().join(format!(
        "hyperion-loopback-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    config
}

pub async fn start(config: Config, limits: RateLimits) -> Running {
    let config_dir = config.data_dir.clone();
    let server = Server::bind(&config, NodeClock::system())
        .await
        .expect("server binds")
        .with_rate_limits(limits);
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "port 0 resolves before serving");
    let replica = server.replica();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    // A single node elects itself after one election timeout.
    for _ in 0..200 {
        if replica.status().role == Some(hyperion_raft::Role::Leader) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        replica.status().role,
        Some(hyperion_raft::Role::Leader),
        "leader within 5 s"
    );
    Running {
        addr,
        replica,
        data_dir: config_dir,
        stop: Some(stop),
        served,
    }
}

pub fn generous_limits() -> RateLimits {
    RateLimits {
        get_per_sec: 1_000_000,
        set_per_sec: 1_000_000,
        batch_get_per_sec: 1_000_000,
        admin_per_sec: 0,
    }
}

pub async fn raw_client(addr: SocketAddr) -> CacheServiceClient<tonic::transport::Channel> {
    CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects over loopback")
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}
