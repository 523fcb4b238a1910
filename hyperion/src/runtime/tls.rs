//! The production build's secure transport (compiled only there; the simulator keeps madsim's
//! plaintext channels): a TLS accept loop for the gRPC listener, and a TLS connector for
//! channels. Part of the runtime seam: it knows sockets, rustls and tonic's connection traits,
//! and nothing of the product (certificates are classified by a callback the product hands in).
//!
//! Bounds on every accepted connection: at most `connections_max` at once (more are closed at
//! accept), a TLS handshake finished within `handshake_timeout`, and no `idle_timeout` without
//! a byte from the client (a slow-loris connection that sends nothing, or half a frame, is
//! closed).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::Connected;

use super::{ChannelSecurity, ConnectionInfo, ConnectionLimits, ListenerSecurity};

/// One accepted, handshaken connection.
pub(super) struct SecureConnection {
    stream: IdleTimeout<tokio_rustls::server::TlsStream<TcpStream>>,
    info: ConnectionInfo,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for SecureConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for SecureConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SecureConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A stream that fails its reads once `idle` passed without a byte read.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener`, handshakes them (bounded), and yields them to the gRPC
/// server. Stops when the server drops the stream (shutdown).
pub(super) fn incoming(
    listener: TcpListener,
    security: ListenerSecurity,
    limits: ConnectionLimits,
) -> tokio_stream::wrappers::ReceiverStream<Result<SecureConnection, io::Error>> {
    // Handshaken connections wait here for the server to take them; it takes them at once.
    let (ready, connections) = mpsc::channel(64);
    super::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.connections_max));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&security.tls));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = ready.closed() => return,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    super::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                tracing::warn!(
                    %remote_addr,
                    limit = limits.connections_max,
                    "connection refused: too many open connections"
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, ready, security) = (acceptor.clone(), ready.clone(), security.clone());
            super::spawn(async move {
                let handshake = super::timeout(limits.handshake_timeout, acceptor.accept(tcp));
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote_addr, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| (security.classify)(chain));
                let connection = SecureConnection {
                    stream: IdleTimeout::new(stream, limits.idle_timeout),
                    info: ConnectionInfo {
                        remote_addr: Some(remote_addr),
                        peer,
                    },
                    _permit: permit,
                };
                let _ = ready.send(Ok(connection)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(connections)
}

/// Dials `host:port` of a URI over TCP, then TLS with the channel's configuration, verifying
/// the server against its name.
#[derive(Clone)]
pub(super) struct TlsConnector {
    pub(super) security: ChannelSecurity,
    pub(super) connect_timeout: Duration,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let security = self.security.clone();
        let connect_timeout = self.connect_timeout;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in address"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&security.tls));
                connector.connect(security.server_name.clone(), tcp).await
            };
            match super::timeout(connect_timeout, connect).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS connection to {host}:{port} timed out"),
                )),
            }
        })
    }
}

/// The address a socket listener is bound to, and the listener.
pub(super) fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = std::net::TcpListener::bind(addr)?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    Ok((TcpListener::from_std(socket)?, local))
}

/// One HTTPS GET over HTTP/1.1 (the Vault client's transport), bounded in time and answer size.
pub(super) async fn https_get(request: super::HttpsGet) -> io::Result<super::HttpsAnswer> {
    use http_body_util::BodyExt;
    let super::HttpsGet {
        tls,
        host,
        port,
        path,
        headers,
        timeout,
        body_max,
    } = request;
    let exchange = async move {
        let server_name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        super::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = http::Request::get(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONNECTION, "close");
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(io::Error::other)?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let status = answer.status().as_u16();
        let body = http_body_util::Limited::new(answer.into_body(), body_max)
            .collect()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
            .to_bytes();
        Ok(super::HttpsAnswer {
            status,
            body: zeroize::Zeroizing::new(body.to_vec()),
        })
    };
    match super::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
    }
}
