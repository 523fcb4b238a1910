//! The production build's HTTP/1.1 server for plain handlers (the admin port), on hyper: bounded
//! connections, a bounded request head, a header-read timeout, and TLS with the gRPC port's
//! configuration when it has one. The seam knows no endpoint: it hands each request to the
//! handler it is given.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{HttpHandler, HttpRequest, HttpResponse};

/// Most admin connections open at once; more are closed at accept.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// A request head must arrive within this (a slow client is dropped).
pub const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest buffered request head (hyper's minimum is 8 KiB).
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
/// A TLS handshake must finish within this.
pub const HTTP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let socket = std::net::TcpListener::bind(addr)?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    Ok((TcpListener::from_std(socket)?, local))
}

fn to_request<B>(request: &http::Request<B>) -> HttpRequest {
    HttpRequest {
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().unwrap_or("").to_string(),
        authorization: request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string),
    }
}

fn to_response(answer: HttpResponse) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = http::StatusCode::from_u16(answer.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(answer.content_type),
    );
    if let Some(secs) = answer.retry_after_s {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    response
}

async fn serve_connection<S>(stream: S, handler: HttpHandler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let handler = Arc::clone(&handler);
            async move {
                let answer = handler(to_request(&request)).await;
                Ok::<_, Infallible>(to_response(answer))
            }
        });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_READ_TIMEOUT)
        .max_buf_size(HTTP_HEAD_BYTES_MAX)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "admin connection ended with an error");
    }
}

/// Accepts until `shutdown` resolves.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: HttpHandler,
    shutdown: impl Future<Output = ()> + Send,
) {
    let tls = tls.map(|config| {
        // The same certificate and client verifier as the gRPC port, speaking HTTP/1.1.
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(HTTP_CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let handler = Arc::clone(&handler);
        let tls = tls.clone();
        super::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, handler).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HTTP_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        serve_connection(stream, handler).await;
                    }
                }
            }
        });
    }
}
