//! The gate: an HTTP-level layer of the production server that refuses a request before its
//! body is read when its connection cannot possibly be allowed (a `RaftService` call without a
//! member's certificate; a client call with no credential at all where one is required). A
//! peer message may be up to a gigabyte (a snapshot travels whole): nobody but a member gets to
//! make the node buffer one.
//!
//! The handlers make every decision again ([`Authority::raft_sender`],
//! [`Authority::authorize`]); the gate only refuses earlier. The simulator's transport ignores
//! layers, so its requests meet the handlers' checks alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Authority, PresentedCertificate, API_KEY_METADATA};

/// The path prefix of `RaftService` methods.
const RAFT_SERVICE_PATH: &str = "/hyperion.raft.v1.RaftService/";

/// See the module docs.
#[derive(Clone)]
pub struct Gate {
    authority: Arc<Authority>,
}

impl Gate {
    pub fn new(authority: Arc<Authority>) -> Gate {
        Gate { authority }
    }
}

impl<S> tower_layer::Layer<S> for Gate {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            authority: Arc::clone(&self.authority),
        }
    }
}

/// The [`Gate`] around a service.
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    authority: Arc<Authority>,
}

impl Authority {
    /// Whether a request on a connection that proved `certificate` (and whose headers are
    /// `headers`) may reach the handler of `path` at all.
    pub fn gate(
        &self,
        path: &str,
        certificate: Option<&PresentedCertificate>,
        headers: &http::HeaderMap,
    ) -> Result<(), tonic::Status> {
        if path.starts_with(RAFT_SERVICE_PATH) {
            if !self.rules.require_peer_identity || self.unauthenticated_raft {
                return Ok(());
            }
            return match certificate {
                Some(PresentedCertificate::Member { name }) if self.member_id(name).is_some() => {
                    Ok(())
                }
                None => Err(tonic::Status::unauthenticated(
                    "RaftService: no certificate presented; only cluster members may call it",
                )),
                Some(_) => Err(tonic::Status::permission_denied(
                    "RaftService: only cluster members may call it (HYPERION_CLUSTER_NODES, \
                     HYPERION_TLS_PEER_CA_FILE)",
                )),
            };
        }
        let credential = matches!(
            certificate,
            Some(PresentedCertificate::Member { .. } | PresentedCertificate::Client { .. })
        ) || headers.contains_key(http::header::AUTHORIZATION)
            || headers.contains_key(API_KEY_METADATA);
        if self.rules.require_client_identity && !credential {
            if let Some(PresentedCertificate::Rejected { reason }) = certificate {
                return Err(tonic::Status::permission_denied(format!(
                    "the client certificate is not accepted: {reason}"
                )));
            }
            return Err(tonic::Status::unauthenticated(
                "no client certificate and no bearer token: this node requires one \
                 (HYPERION_TLS_CLIENT_CA_FILE, HYPERION_JWT_JWKS_FILE)",
            ));
        }
        Ok(())
    }
}

type Answer<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for GateService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Answer<http::Response<R>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let certificate = crate::runtime::connection_peer(request.extensions());
        let certificate = certificate
            .as_deref()
            .and_then(|peer| peer.downcast_ref::<PresentedCertificate>());
        match self
            .authority
            .gate(request.uri().path(), certificate, request.headers())
        {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}
