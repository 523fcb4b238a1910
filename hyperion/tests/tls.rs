//! mTLS over real sockets on loopback (tokio build; the simulator has no TLS): a node with a
//! certificate and a client CA, and every kind of caller the zero-trust model expects — a
//! client with a certificate from the CA, a plaintext client, a TLS client without a
//! certificate, a certificate from another CA, a client certificate calling `RaftService`, and
//! a caller claiming the simulator's identity header. Then rotation: a bad new certificate file
//! keeps the old one, a good one (from a new CA) is served to new connections after SIGHUP
//! while an established connection lives on. Certificates are made with rcgen for each run.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyperion::client::{Client, ClientSecurity};
use hyperion::raft_proto::raft_service_client::RaftServiceClient;
use hyperion::resilience::RetryPolicy;
use hyperion::runtime::ChannelSecurity;
use hyperion::secret::Secret;
use support::{start_node, write, Ca};
use tonic::Code;

struct Fixture {
    dir: PathBuf,
    ca: Ca,
    addr: SocketAddr,
}

impl Fixture {
    /// Client security from `ca_pem` and an optional certificate.
    fn security(&self, ca_pem: &str, identity: Option<(String, String)>) -> ClientSecurity {
        let ca = write(&self.dir, &format!("ca-{}.pem", unique()), ca_pem);
        let (cert, key) = match identity {
            Some((cert, key)) => (
                Some(write(&self.dir, &format!("c-{}.pem", unique()), &cert)),
                Some(write(&self.dir, &format!("k-{}.pem", unique()), &key)),
            ),
            None => (None, None),
        };
        ClientSecurity::from_files(Some(&ca), cert.as_deref(), key.as_deref(), None).unwrap()
    }

    fn client(&self, security: ClientSecurity) -> Client {
        Client::secured(&self.addr.to_string(), security)
            .unwrap()
            .with_retry(RetryPolicy {
                max_attempts: 1,
                ..hyperion::client::default_retry_policy()
            })
            .with_breaker(None)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn fixture(name: &str) -> (Fixture, tokio::task::JoinHandle<()>) {
    let dir = std::env::temp_dir().join(format!("hyperion-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("Hyperion test CA");
    let (addr, served) = start_node(&dir, &ca, &[]).await;
    (Fixture { dir, ca, addr }, served)
}

/// Retries until the single node leads and takes the write (it elects itself at once).
async fn first_write(client: &Client) {
    for attempt in 0..100 {
        match client.set(b"k", b"v", 0, 0).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::Unavailable && attempt < 99 => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => panic!("the first write failed: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_the_status_its_credentials_deserve() {
    let (fx, served) = fixture("callers").await;
    let alice = fx.client(fx.security(&fx.ca.pem(), Some(fx.ca.issue("alice"))));
    first_write(&alice).await;
    let hit = alice.get(b"k", false).await.unwrap();
    assert_eq!(hit.value, b"v");

    // Plaintext against the TLS port: the handshake never happens and the node closes the
    // connection; there is no gRPC status to give, only a transport error (the client reads
    // the TLS alert as a broken HTTP/2 connection).
    let plaintext = fx.client(ClientSecurity::default());
    let status = plaintext.get(b"k", false).await.unwrap_err();
    assert!(
        std::error::Error::source(&status).is_some()
            && matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
        "a transport error, not an answer: {status:?}"
    );
    eprintln!("plaintext client: {:?} {}", status.code(), status.message());

    // TLS without a client certificate.
    let anonymous = fx.client(fx.security(&fx.ca.pem(), None));
    let status = anonymous.get(b"k", false).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    eprintln!("no certificate: {:?} {}", status.code(), status.message());

    // A certificate from another CA.
    let other_ca = Ca::new("Another CA");
    let stranger = fx.client(fx.security(&fx.ca.pem(), Some(other_ca.issue("alice"))));
    let status = stranger.get(b"k", false).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("HYPERION_TLS_CLIENT_CA_FILE"),
        "{status:?}"
    );
    eprintln!("another CA: {:?} {}", status.code(), status.message());

    // A client certificate calling RaftService (refused before the body is read).
    let (cert, key) = fx.ca.issue("alice");
    let tls = hyperion::tls::client_config(
        fx.ca.pem().as_bytes(),
        Some((
            &Secret::new(cert.into_bytes()),
            &Secret::new(key.into_bytes()),
        )),
    )
    .unwrap();
    let channel = hyperion::runtime::channel(
        tonic::transport::Endpoint::from_shared(format!("http://{}", fx.addr)).unwrap(),
        Some(ChannelSecurity {
            tls: Arc::clone(&tls),
            server_name: "n1".try_into().unwrap(),
        }),
        Duration::from_secs(2),
    );
    let mut raft = RaftServiceClient::new(channel.clone());
    let status = raft
        .send(hyperion::raft_proto::MessageBatch::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    eprintln!(
        "client certificate on RaftService: {:?} {}",
        status.code(),
        status.message()
    );

    // The simulator's identity header means nothing in production.
    let mut anonymous_raft = RaftServiceClient::new(hyperion::runtime::channel(
        tonic::transport::Endpoint::from_shared(format!("http://{}", fx.addr)).unwrap(),
        Some(ChannelSecurity {
            tls: hyperion::tls::client_config(fx.ca.pem().as_bytes(), None).unwrap(),
            server_name: "n1".try_into().unwrap(),
        }),
        Duration::from_secs(2),
    ));
    let mut forged = tonic::Request::new(hyperion::raft_proto::MessageBatch::default());
    forged.metadata_mut().insert(
        hyperion::runtime::SIMULATED_IDENTITY_METADATA,
        "member:n1".parse().unwrap(),
    );
    let status = anonymous_raft.send(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The certificate must name the server: n1's certificate is not `n2`.
    let misnamed = fx.client(ClientSecurity {
        server_name: Some("n2".to_string()),
        ..fx.security(&fx.ca.pem(), Some(fx.ca.issue("alice")))
    });
    assert_eq!(
        misnamed.get(b"k", false).await.unwrap_err().code(),
        Code::Unavailable
    );
    served.abort();
    let _ = std::fs::remove_dir_all(&fx.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_keeping_connections_and_refusing_bad_files() {
    let (fx, served) = fixture("rotation").await;
    let identity = fx.ca.issue("alice");
    let established = fx.client(fx.security(&fx.ca.pem(), Some(identity.clone())));
    first_write(&established).await;

    // A bad certificate file: the node keeps serving the old one.
    std::fs::write(fx.dir.join("node.pem"), "not a certificate").unwrap();
    hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = fx.client(fx.security(&fx.ca.pem(), Some(identity.clone())));
    fresh
        .get(b"k", false)
        .await
        .expect("the old certificate still serves");

    // A new CA: the node's certificate, its key and the client CA rotate together.
    let ca2 = Ca::new("Hyperion test CA, next year");
    let (cert, key) = ca2.issue("n1");
    std::fs::write(fx.dir.join("node.key"), key).unwrap();
    std::fs::write(fx.dir.join("node.pem"), cert).unwrap();
    std::fs::write(fx.dir.join("client-ca.pem"), ca2.pem()).unwrap();
    hangup();
    let rotated = fx.client(fx.security(&ca2.pem(), Some(ca2.issue("alice"))));
    let mut served_new = false;
    for _ in 0..50 {
        if rotated.get(b"k", false).await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_new, "new connections get the new certificate");
    // The connection made before the rotation was not dropped.
    established
        .get(b"k", false)
        .await
        .expect("an established connection keeps working");
    // A client of the old CA can no longer verify the node.
    let old = fx.client(fx.security(&fx.ca.pem(), Some(identity)));
    assert_eq!(
        old.get(b"k", false).await.unwrap_err().code(),
        Code::Unavailable
    );
    served.abort();
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// SIGHUP to this process (the node under test runs in it).
fn hangup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn a_non_loopback_address_without_tls_exits_with_one_line_naming_the_variables() {
    // 192.0.2.0/24 is reserved for documentation: the node refuses before binding anything.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hyperion"))
        .arg("serve")
        .env_clear()
        .env("HYPERION_LISTEN_ADDR", "192.0.2.10:7000")
        .output()
        .expect("hyperion runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for variable in [
        "HYPERION_LISTEN_ADDR",
        "HYPERION_TLS_CERT_FILE",
        "HYPERION_TLS_KEY_FILE",
        "HYPERION_TLS_CLIENT_CA_FILE",
    ] {
        assert!(stderr.contains(variable), "{variable} missing: {stderr}");
    }
}
