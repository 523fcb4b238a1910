//! Helpers shared by the tests that need real certificates (`tls.rs`, `netns.rs`,
//! `hostile_clients.rs`): a test CA made with rcgen for each run, the certificates it signs, and
//! a one-node mTLS server in the test process.

#![allow(dead_code)] // Each test crate uses the part it needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyperion::config::Config;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test CA and what it signs.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }

    /// A certificate for `dns` (and 127.0.0.1), for server and client authentication.
    pub fn issue(&self, dns: &str) -> (String, String) {
        self.issue_for(dns, &["127.0.0.1"])
    }

    /// A certificate naming `dns` and the IP addresses `ips`, for server and client
    /// authentication: (certificate PEM, key PEM).
    pub fn issue_for(&self, dns: &str, ips: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        params.distinguished_name.push(DnType::CommonName, dns);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A one-node cluster `n1` on a free loopback port, in production mode with mTLS (client
/// certificates from `ca`), in this process; `extra` variables override the defaults.
pub async fn start_node(
    dir: &Path,
    ca: &Ca,
    extra: &[(&str, String)],
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (cert, key) = ca.issue("n1");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hmac = write(dir, "hmac.key", &"k".repeat(32));
    let env: std::collections::BTreeMap<String, String> = [
        ("HYPERION_NODE_ID", "n1".to_string()),
        ("HYPERION_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("HYPERION_ADMIN_ADDR", "127.0.0.1:0".to_string()),
        ("HYPERION_CLUSTER_NODES", format!("n1=127.0.0.1:{port}")),
        ("HYPERION_DATA_DIR", dir.join("data").display().to_string()),
        ("HYPERION_DEV_MODE", "false".to_string()),
        ("HYPERION_HMAC_KEY_FILE", hmac.display().to_string()),
        (
            "HYPERION_TLS_CERT_FILE",
            write(dir, "node.pem", &cert).display().to_string(),
        ),
        (
            "HYPERION_TLS_KEY_FILE",
            write(dir, "node.key", &key).display().to_string(),
        ),
        (
            "HYPERION_TLS_CLIENT_CA_FILE",
            write(dir, "client-ca.pem", &ca.pem()).display().to_string(),
        ),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Config::from_env(&env).expect("a valid production configuration");
    let server = Server::bind(&config, NodeClock::system())
        .await
        .expect("the node starts");
    let addr = server.local_addr();
    let served = hyperion::runtime::spawn(async move {
        let _ = server.serve(std::future::pending()).await;
    });
    (addr, served)
}
