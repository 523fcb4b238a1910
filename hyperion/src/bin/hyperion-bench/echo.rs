//! `hyperion-bench --serve-echo ADDR`: Hyperion's gRPC protocol with no cache behind it.
//!
//! A `Get` answers HIT with `--value-bytes` bytes, a `Set` and a `Delete` answer at once, a
//! `BatchGet` streams one HIT per key; `Watch` is unimplemented. It is served by the same listener
//! as a node (the product's `GrpcListener`, `TCP_NODELAY`), so what it costs per request is the
//! transport's floor: HTTP/2, protobuf and tonic, with no validation, Raft, lease or store. `ci/compare`
//! measures Hyperion's Get against it.

use std::net::SocketAddr;
use std::pin::Pin;

use futures::Stream;
use hyperion::proto::cache_service_server::{CacheService, CacheServiceServer};
use hyperion::proto::{
    BatchGetRequest, CacheStatus, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    SetRequest, SetResponse, WatchEvent, WatchRequest,
};
use hyperion::runtime::GrpcListener;
use tonic::{Request, Response, Status};

/// Messages the echo server decodes or encodes (a value of `VALUE_BYTES_MAX` plus headroom).
const MESSAGE_BYTES_MAX: usize = 8 << 20;

struct Echo {
    value: Vec<u8>,
}

impl Echo {
    fn hit(&self, key: Vec<u8>) -> GetResponse {
        GetResponse {
            value: self.value.clone(),
            version: 1,
            status: CacheStatus::Hit as i32,
            key,
            ..GetResponse::default()
        }
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CacheService for Echo {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Ok(Response::new(self.hit(request.into_inner().key)))
    }

    async fn set(&self, _request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        Ok(Response::new(SetResponse {
            version: 1,
            ttl_ms: 0,
        }))
    }

    async fn delete(
        &self,
        _request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(DeleteResponse::default()))
    }

    type BatchGetStream = Answers<GetResponse>;

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<Self::BatchGetStream>, Status> {
        let answers: Vec<Result<GetResponse, Status>> = request
            .into_inner()
            .keys
            .into_iter()
            .map(|key| Ok(self.hit(key)))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(answers))))
    }

    type WatchStream = Answers<WatchEvent>;

    async fn watch(
        &self,
        _request: Request<tonic::Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "the echo server has no cache: Watch is not served",
        ))
    }
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(addr: SocketAddr, value_bytes: usize) -> Result<(), String> {
    let listener = GrpcListener::bind(addr).map_err(|e| format!("--serve-echo {addr}: {e}"))?;
    let service = CacheServiceServer::new(Echo {
        value: vec![b'v'; value_bytes],
    })
    .max_decoding_message_size(MESSAGE_BYTES_MAX)
    .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let router = tonic::transport::Server::builder().add_service(service);
    eprintln!(
        "hyperion-bench: echo server on {} ({value_bytes} B values); Ctrl-C stops it",
        listener.local_addr()
    );
    listener
        .serve(router, hyperion::runtime::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
