//! The CLI's client of a node's admin HTTP port (`HYPERION_ADMIN_ADDR`): one HTTP/1.1 request per
//! connection, plaintext or TLS (with the CA of `--ca`), bounded in time and in answer size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Exit, Failure};

/// Largest admin answer read (a scrape of a busy node is tens of KiB).
pub const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Where and how to reach the admin port.
pub struct AdminTarget {
    /// `host:port`.
    pub addr: String,
    /// TLS, when the node's ports have it (the CA of `--ca`; HTTP/1.1 is negotiated).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the node's certificate must carry (default: the host of `addr`).
    pub server_name: Option<String>,
    /// `Authorization: Bearer <key>` for `/admin/*`.
    pub api_key: Option<hyperion::secret::Secret>,
    /// Bound on the whole exchange.
    pub deadline: Duration,
}

/// An answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (admin endpoints answer JSON, errors as `{"error": ...}`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| serde_json::json!({ "error": self.text().trim() }))
    }

    /// `Ok` for 2xx; otherwise the failure its status means: unavailable for 502–504, a refusal
    /// for 4xx (the body says why), a failure for other statuses.
    pub fn success(self, what: &str) -> Result<Answer, Failure> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let reason = match self.json().get("error").and_then(|e| e.as_str()) {
            Some(error) => error.to_string(),
            None => self.text().trim().to_string(),
        };
        let exit = match self.status {
            502..=504 => Exit::Unavailable,
            400..=499 => Exit::Refused,
            _ => Exit::Failed,
        };
        Err(Failure::new(
            exit,
            format!("{what}: HTTP {}: {reason}", self.status),
        ))
    }
}

fn unavailable(addr: &str, problem: impl std::fmt::Display) -> Failure {
    Failure::new(
        Exit::Unavailable,
        format!("admin port {addr}: {problem} (--admin-addr, HYPERION_ADMIN_ADDR)"),
    )
}

/// Sends `method path` (with the key, if any) and reads the answer.
pub async fn call(target: &AdminTarget, method: &str, path: &str) -> Result<Answer, Failure> {
    let exchange = exchange(target, method, path);
    match hyperion::runtime::timeout(target.deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(unavailable(
            &target.addr,
            format!("no answer within {} ms", target.deadline.as_millis()),
        )),
    }
}

async fn exchange(target: &AdminTarget, method: &str, path: &str) -> Result<Answer, Failure> {
    let addr = target.addr.as_str();
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| unavailable(addr, e))?;
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    match &target.tls {
        None => send(TokioIo::new(tcp), target, method, path).await,
        Some(config) => {
            let mut config = (**config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = target.server_name.as_deref().unwrap_or(host).to_string();
            let name = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(|e| Failure::new(Exit::Usage, format!("--server-name `{name}`: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| unavailable(addr, format!("TLS: {e}")))?;
            send(TokioIo::new(stream), target, method, path).await
        }
    }
}

async fn send<S>(io: S, target: &AdminTarget, method: &str, path: &str) -> Result<Answer, Failure>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let addr = target.addr.as_str();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| unavailable(addr, e))?;
    hyperion::runtime::spawn(async move {
        let _ = connection.await;
    });
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr)
        .header(http::header::CONNECTION, "close");
    if let Some(key) = &target.api_key {
        let mut value = http::HeaderValue::from_bytes(&[b"Bearer ", key.expose()].concat())
            .map_err(|_| {
                Failure::new(
                    Exit::Usage,
                    "--admin-api-key-file: the key holds characters a header cannot carry",
                )
            })?;
        value.set_sensitive(true);
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Failure::new(Exit::Usage, format!("{method} {path}: {e}")))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| unavailable(addr, e))?;
    let status = answer.status().as_u16();
    let body = http_body_util::Limited::new(answer.into_body(), ANSWER_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| unavailable(addr, format!("reading the answer: {e}")))?
        .to_bytes()
        .to_vec();
    Ok(Answer { status, body })
}
