//! What the secure transport carries, the same in both builds: the TLS settings of a listener
//! and of a channel, the information a connection attaches to its requests, and one HTTPS GET.
//! (The production build's implementation is `tls.rs`; the simulator's channels are plaintext.)

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Transport security of a listener (production build; ignored by the simulator, whose
/// channels stay plaintext and whose callers carry their identity in metadata instead, see
/// [`simulated_identity`]).
#[derive(Clone)]
pub struct ListenerSecurity {
    /// The TLS configuration (its certificate resolver and client verifier may reload what they
    /// serve; the configuration itself stays).
    pub tls: Arc<rustls::ServerConfig>,
    /// Classifies a client's certificate chain once per connection, at the handshake; the
    /// result travels with every request of the connection ([`connection_peer`]).
    pub classify: Arc<PeerClassifier>,
}

/// See [`ListenerSecurity::classify`].
pub type PeerClassifier = dyn Fn(&[rustls_pki_types::CertificateDer<'static>]) -> Option<Arc<dyn Any + Send + Sync>>
    + Send
    + Sync;

/// Bounds on the connections of a secure listener (see `runtime/tls.rs`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; more are closed at accept.
    pub connections_max: usize,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// What the transport knows about the connection a request arrived on; attached by the
/// production TLS listener to every request (a tonic request extension).
#[derive(Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The classifier's verdict on the client's certificate, if it presented one.
    pub peer: Option<Arc<dyn Any + Send + Sync>>,
}

/// The classified certificate of the connection `extensions` belong to (production TLS
/// listener); `None` without TLS, without a client certificate, and always in simulation.
pub fn connection_peer(extensions: &http::Extensions) -> Option<Arc<dyn Any + Send + Sync>> {
    extensions
        .get::<ConnectionInfo>()
        .and_then(|info| info.peer.clone())
}

/// The client's address of a request, whichever listener accepted it.
pub fn remote_addr<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|info| info.remote_addr)
        .or_else(|| request.remote_addr())
}

/// Transport security of a channel (production build; the simulator dials plaintext).
#[derive(Clone)]
pub struct ChannelSecurity {
    /// The TLS configuration (its verifier checks the server against `server_name`).
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// One HTTPS GET (for the Vault secret provider; production build only).
pub struct HttpsGet {
    /// The TLS configuration the server is verified with.
    pub tls: Arc<rustls::ClientConfig>,
    /// The server's host name (verified against its certificate) and port.
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// Request headers (mark secret ones sensitive).
    pub headers: http::HeaderMap,
    /// Bound on the whole exchange.
    pub timeout: Duration,
    /// Largest answer body read.
    pub body_max: usize,
}

/// The answer to an [`HttpsGet`]; the body is zeroized when dropped (it may hold a secret).
pub struct HttpsAnswer {
    pub status: u16,
    pub body: zeroize::Zeroizing<Vec<u8>>,
}

/// One HTTP request to a plain handler (the admin port): what the handlers look at, nothing
/// more. Bodies are not read: no admin endpoint takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// The query string without `?` (empty if none).
    pub query: String,
    /// The `Authorization` header, if present and text.
    pub authorization: Option<String>,
}

impl HttpRequest {
    /// A request as a test or the simulator makes one: `target` is a path with an optional
    /// query.
    pub fn new(method: &str, target: &str, authorization: Option<&str>) -> HttpRequest {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            authorization: authorization.map(str::to_string),
        }
    }
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds (429 answers).
    pub retry_after_s: Option<u64>,
}

/// A plain request handler, as the HTTP server calls it.
pub type HttpHandler = Arc<
    dyn Fn(HttpRequest) -> std::pin::Pin<Box<dyn std::future::Future<Output = HttpResponse> + Send>>
        + Send
        + Sync,
>;
