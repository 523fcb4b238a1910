//! The gRPC health service (`grpc.health.v1.Health`, `proto/health.proto`): SERVING exactly when
//! the admin port's `/ready` would answer 200 ([`crate::admin::readiness`]), for the empty
//! service name (the whole server) and for `hyperion.v1.CacheService`.
//!
//! `Watch` sends the status at once and then each change, polling every
//! [`WATCH_POLL_INTERVAL`]; it ends with NOT_SERVING when the server shuts down, so an open watch
//! never holds a graceful shutdown up. Runs in both builds.

use std::pin::Pin;
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::health_proto::health_check_response::ServingStatus;
use crate::health_proto::health_server::Health;
use crate::health_proto::{HealthCheckRequest, HealthCheckResponse};
use crate::replica::Replica;

/// The service names this server reports on: the whole server, and the cache API.
pub const SERVICES: [&str; 2] = ["", "hyperion.v1.CacheService"];
/// How often an open `Watch` looks at the node's readiness.
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Largest health request (a service name).
pub const HEALTH_MESSAGE_BYTES_MAX: usize = 1024;

/// Resolves when the server begins to shut down.
pub type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// The service implementation.
#[derive(Clone)]
pub struct HealthApi {
    replica: Replica,
    shutdown: ShutdownSignal,
}

impl HealthApi {
    pub fn new(replica: Replica, shutdown: ShutdownSignal) -> HealthApi {
        HealthApi { replica, shutdown }
    }

    fn status_now(&self) -> ServingStatus {
        if self.shutdown.peek().is_some() {
            return ServingStatus::NotServing;
        }
        match crate::admin::readiness(&self.replica) {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        }
    }
}

fn known(service: &str) -> bool {
    SERVICES.contains(&service)
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !known(&service) {
            return Err(Status::not_found(format!(
                "service: this server reports no service `{service}` (known: \"\" and \
                 \"hyperion.v1.CacheService\")"
            )));
        }
        Ok(Response::new(answer(self.status_now())))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let known = known(&service);
        // State: the service, the last status sent (None before the first), and whether the
        // stream is over.
        let state = (self.clone(), None::<ServingStatus>, false);
        let stream = futures::stream::unfold(state, move |(api, last, done)| async move {
            if done {
                return None;
            }
            loop {
                let now = if known {
                    api.status_now()
                } else {
                    ServingStatus::ServiceUnknown
                };
                let stopping = api.shutdown.peek().is_some();
                if last != Some(now) || stopping {
                    let now = if stopping {
                        ServingStatus::NotServing
                    } else {
                        now
                    };
                    return Some((Ok(answer(now)), (api, Some(now), stopping)));
                }
                let shutdown = api.shutdown.clone();
                tokio::select! {
                    () = shutdown => {}
                    () = crate::runtime::sleep(WATCH_POLL_INTERVAL) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
