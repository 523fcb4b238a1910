//! Hostile clients against a real mTLS node on loopback, over raw sockets (std TCP and rustls,
//! HTTP/2 frames written by hand): each attack ends with the node closing or refusing, within a
//! bound, without waiting for or buffering what the attacker announced, and the node goes on
//! serving a well-behaved client. The bounds are the node's documented limits
//! (`hyperion/src/server.rs`, README "Connection limits"); the timeouts are shortened here with
//! `HYPERION_TLS_HANDSHAKE_TIMEOUT_MS` and `HYPERION_CONNECTION_IDLE_TIMEOUT_MS`.
//!
//! - a TLS handshake half sent, then silence: closed at the handshake timeout;
//! - a finished handshake, then silence, or HTTP/2 headers half sent (no END_HEADERS): closed at
//!   the idle timeout;
//! - garbage instead of the HTTP/2 preface: closed at once;
//! - a 1 MiB metadata value (HEADERS + CONTINUATION frames, far above the 16 KiB header list
//!   bound): the request or the connection is refused before the block is complete;
//! - a gRPC message announcing 2 GiB of which 5 bytes arrive: the stream is answered and ended
//!   without the rest; through the Rust stub, an oversized Set gets its status.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyperion::client::{Client, ClientSecurity};
use hyperion::proto::cache_service_client::CacheServiceClient;
use hyperion::proto::SetRequest;
use hyperion::resilience::RetryPolicy;
use hyperion::runtime::ChannelSecurity;
use hyperion::secret::Secret;
use support::{start_node, write, Ca};
use tonic::Code;

/// How long the test waits for the node to act before calling it unbounded (generous: the
/// node's own timeouts here are under a second).
const WAIT_MAX: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT_MS: u64 = 300;
const IDLE_TIMEOUT_MS: u64 = 600;

struct Node {
    dir: PathBuf,
    ca: Ca,
    addr: SocketAddr,
    served: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.served.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn node(name: &str) -> Node {
    let dir = std::env::temp_dir().join(format!("hyperion-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("Hyperion test CA");
    let (addr, served) = start_node(
        &dir,
        &ca,
        &[
            (
                "HYPERION_TLS_HANDSHAKE_TIMEOUT_MS",
                HANDSHAKE_TIMEOUT_MS.to_string(),
            ),
            (
                "HYPERION_CONNECTION_IDLE_TIMEOUT_MS",
                IDLE_TIMEOUT_MS.to_string(),
            ),
        ],
    )
    .await;
    Node {
        dir,
        ca,
        addr,
        served,
    }
}

impl Node {
    fn identity(&self) -> (Secret, Secret) {
        let (cert, key) = self.ca.issue("alice");
        (
            Secret::new(cert.into_bytes()),
            Secret::new(key.into_bytes()),
        )
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        let (cert, key) = self.identity();
        hyperion::tls::client_config(self.ca.pem().as_bytes(), Some((&cert, &key))).unwrap()
    }

    /// A TCP connection whose reads give up after [`WAIT_MAX`].
    fn tcp(&self) -> TcpStream {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(WAIT_MAX)).unwrap();
        tcp
    }

    /// A finished TLS handshake with a valid client certificate.
    fn tls_stream(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let connection =
            rustls::ClientConnection::new(self.tls(), "n1".try_into().unwrap()).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, self.tcp());
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("the handshake completes");
        }
        stream
    }

    /// The generated stub over mTLS with a valid client certificate.
    fn stub(&self) -> CacheServiceClient<tonic::transport::Channel> {
        CacheServiceClient::new(hyperion::runtime::channel(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr)).unwrap(),
            Some(ChannelSecurity {
                tls: self.tls(),
                server_name: "n1".try_into().unwrap(),
            }),
            Duration::from_secs(5),
        ))
    }

    /// A well-behaved client is still served.
    async fn still_serves(&self) {
        let ca = write(&self.dir, "ca.pem", &self.ca.pem());
        let (cert, key) = self.ca.issue("bob");
        let cert = write(&self.dir, "bob.pem", &cert);
        let key = write(&self.dir, "bob.key", &key);
        let security =
            ClientSecurity::from_files(Some(&ca), Some(&cert), Some(&key), None).unwrap();
        let client = Client::secured(&self.addr.to_string(), security)
            .unwrap()
            .with_retry(RetryPolicy {
                max_attempts: 100,
                max_total: Duration::from_secs(10),
                ..hyperion::client::default_retry_policy()
            });
        client
            .set(b"k", b"v", 0, 0)
            .await
            .expect("a well-behaved client is served");
    }
}

/// Reads until the peer closes the connection (EOF or an error such as a reset), returning how
/// long that took; panics if it is still open after [`WAIT_MAX`].
fn closed_within(mut stream: impl Read, what: &str) -> Duration {
    let started = hyperion::runtime::now();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("{what}: the node kept the connection open for {WAIT_MAX:?}")
            }
            Err(_) => break,
        }
        assert!(started.elapsed() < WAIT_MAX, "{what}: still talking");
    }
    let elapsed = started.elapsed();
    eprintln!("{what}: closed after {elapsed:?}");
    elapsed
}

/// One HTTP/2 frame (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    assert!(length < 1 << 24);
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const GOAWAY: u8 = 0x7;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The client connection preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1), the string-length form.
fn hpack_length(mut value: usize) -> Vec<u8> {
    if value < 127 {
        return vec![value as u8];
    }
    let mut out = vec![127];
    value -= 127;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
    out
}

/// A header block of literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2).
fn header_block(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        out.extend(hpack_length(name.len()));
        out.extend(name.as_bytes());
        out.extend(hpack_length(value.len()));
        out.extend(*value);
    }
    out
}

/// The header block of a gRPC call to `CacheService.Get`, with `extra` fields.
fn grpc_headers(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut fields: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":scheme", b"https"),
        (":path", b"/hyperion.v1.CacheService/Get"),
        (":authority", b"n1"),
        ("content-type", b"application/grpc"),
        ("te", b"trailers"),
    ];
    fields.extend_from_slice(extra);
    header_block(&fields)
}

/// Reads frames until the node ends stream 1 (HEADERS with END_STREAM, or RST_STREAM), sends
/// GOAWAY, or closes; returns which.
fn stream_one_ended(mut stream: impl Read, what: &str) -> &'static str {
    let started = hyperion::runtime::now();
    let mut header = [0u8; 9];
    loop {
        if stream.read_exact(&mut header).is_err() {
            return "connection closed";
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).is_err() {
            return "connection closed";
        }
        match (kind, id) {
            (GOAWAY, _) => return "GOAWAY",
            (RST_STREAM, 1) => return "RST_STREAM",
            (HEADERS, 1) if flags & END_STREAM != 0 => return "stream ended by the node",
            _ => {}
        }
        assert!(started.elapsed() < WAIT_MAX, "{what}: never ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_handshake_is_closed_at_the_handshake_timeout() {
    let node = node("handshake").await;
    let mut tcp = node.tcp();
    // A TLS record header announcing a 512-byte ClientHello, and 8 bytes of it.
    tcp.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0,
    ])
    .unwrap();
    let elapsed = closed_within(&tcp, "half-sent handshake");
    assert!(elapsed >= Duration::from_millis(HANDSHAKE_TIMEOUT_MS / 2));
    node.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_half_sent_headers_are_closed_at_the_idle_timeout() {
    let node = node("idle").await;
    let idle = node.tls_stream();
    closed_within(idle, "idle after the handshake");

    let mut half = node.tls_stream();
    let mut bytes = preface();
    let block = grpc_headers(&[]);
    // The first half of the block, without END_HEADERS: the node waits for a CONTINUATION.
    bytes.extend(frame(HEADERS, 0, 1, &block[..block.len() / 2]));
    half.write_all(&bytes).unwrap();
    half.flush().unwrap();
    closed_within(half, "half-sent headers");
    node.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_http2_is_closed() {
    let node = node("garbage").await;
    let mut garbage = node.tls_stream();
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 13) as u8).collect();
    // The node may close before all of it is written.
    let _ = garbage.write_all(&bytes);
    let _ = garbage.flush();
    let elapsed = closed_within(garbage, "garbage after the handshake");
    assert!(
        elapsed < Duration::from_millis(IDLE_TIMEOUT_MS),
        "closed for the garbage, not for idleness: {elapsed:?}"
    );
    node.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_metadata_value_is_refused_before_it_is_buffered() {
    let node = node("metadata").await;
    let mut stream = node.tls_stream();
    let huge = vec![b'a'; 1 << 20];
    let block = grpc_headers(&[("x-junk", &huge)]);
    let mut bytes = preface();
    // 16 KiB frames: the node's SETTINGS_MAX_FRAME_SIZE.
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i == 0 { last | END_STREAM } else { last };
        bytes.extend(frame(kind, flags, 1, chunk));
    }
    // The node may refuse before all of it is written.
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
    let how = stream_one_ended(&mut stream, "huge metadata");
    eprintln!("1 MiB metadata value: {how}");

    // The same through the Rust stub: a status, not a hang.
    let mut stub = node.stub();
    let mut request = tonic::Request::new(hyperion::proto::GetRequest {
        key: b"k".to_vec(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "x-junk",
        String::from_utf8(vec![b'a'; 1 << 20])
            .unwrap()
            .parse()
            .unwrap(),
    );
    let status = stub.get(request).await.unwrap_err();
    eprintln!(
        "1 MiB metadata value through the stub: {:?} {}",
        status.code(),
        status.message()
    );
    assert_ne!(status.code(), Code::Ok);
    node.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_without_reading_it() {
    let node = node("oversized").await;
    let mut stream = node.tls_stream();
    let mut bytes = preface();
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &grpc_headers(&[])));
    // A gRPC message prefix announcing 2 GiB - 1; nothing of it follows.
    bytes.extend(frame(DATA, 0, 1, &[0, 0x7f, 0xff, 0xff, 0xff]));
    stream.write_all(&bytes).unwrap();
    stream.flush().unwrap();
    let how = stream_one_ended(&mut stream, "2 GiB announced");
    eprintln!("a message announcing 2 GiB: {how}");
    assert_ne!(how, "connection closed", "answered, not dropped");

    // Through the Rust stub, a Set whose value is past the node's message bound.
    let mut stub = node.stub().max_encoding_message_size(usize::MAX);
    let status = stub
        .set(SetRequest {
            key: b"k".to_vec(),
            value: vec![0; 8 << 20],
            ..Default::default()
        })
        .await
        .unwrap_err();
    eprintln!(
        "an 8 MiB Set through the stub: {:?} {}",
        status.code(),
        status.message()
    );
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    node.still_serves().await;
}
