//! The runtime seam: the one module that knows whether Hyperion runs on tokio (production) or on
//! madsim (seeded deterministic simulation, `RUSTFLAGS="--cfg madsim"`).
//!
//! Everything else takes time, timers, tasks, entropy and the gRPC listener from here. Clippy's
//! `disallowed-methods` list (`clippy.toml`) bans the direct calls elsewhere, so a stray
//! `Instant::now()` or `thread::spawn` cannot slip past review.
//!
//! Architecture invariant: `cfg(madsim)` appears in this file only.
//!
//! Time has two layers:
//! - *runtime time* (`Instant`, `sleep`): tokio's clock in production, madsim's virtual clock in
//!   simulation (one global clock for all simulated nodes);
//! - *node time* ([`NodeClock`]): what one node believes the time is, in milliseconds since the Unix
//!   epoch. It is runtime time plus an offset, running at a rate, with optional jumps. Production
//!   nodes use offset 0 and rate 1; the simulator skews them to replay clock incidents. Leases and
//!   TTLs read node time, so they are only as safe as this model says.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use tokio::time::{timeout, Instant};

pub mod buggify;
pub mod coverage;
#[cfg(not(madsim))]
mod http_server;
#[cfg(not(madsim))]
mod otel;
#[cfg(madsim)]
#[path = "runtime/otel_off.rs"]
mod otel;
pub use otel::{trace_export_layer, TraceExporter};
#[cfg(not(madsim))]
mod reflection;
#[cfg(not(madsim))]
mod tls;
mod transport;
pub use transport::{
    connection_peer, remote_addr, ChannelSecurity, ConnectionInfo, ConnectionLimits, HttpHandler,
    HttpRequest, HttpResponse, HttpsAnswer, HttpsGet, ListenerSecurity, PeerClassifier,
};

/// Whether this is the simulation build.
const SIMULATION: bool = cfg!(madsim);

/// Whether the network is madsim's simulated one (the simulator's nodes use addresses that no
/// real network routes, so the rules for real listeners do not apply to them).
pub const NETWORK_IS_SIMULATED: bool = SIMULATION;

/// Sleeps for `duration` of runtime time (virtual time in simulation).
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Runtime time now (virtual in simulation).
pub fn now() -> Instant {
    Instant::now()
}

/// A point inside a unit of work where the process may be preempted: in simulation the task
/// yields for a seeded sliver of simulated time (up to [`PREEMPTION_MAX`]), so a pause, a crash or
/// a stall scheduled by the fault model can land in the middle of the work, as a SIGSTOP or a VM
/// stall can in production; in production it costs nothing. A node the simulator asked to pause
/// inside a turn ([`sim::pause_at_next_preemption_point`]) is paused right here.
pub async fn preemption_point() {
    #[cfg(madsim)]
    {
        if sim::pause_here_if_asked() {
            // Returns once the node is resumed (a paused node's tasks are not polled).
            tokio::time::sleep(Duration::from_micros(1)).await;
            // After SIGCONT the process's other threads run too: the rest of this turn starts
            // after a seeded lag, while requests that queued during the pause come in.
            let micros = madsim::rand::random::<u64>() % (RESUME_LAG_MAX.as_micros() as u64 + 1);
            tokio::time::sleep(Duration::from_micros(micros)).await;
            return;
        }
        let micros = madsim::rand::random::<u64>() % (PREEMPTION_MAX.as_micros() as u64 + 1);
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }
}

/// The CPU a unit of work cost: in production the work itself took it, so this is nothing; in
/// simulation, where computing takes no simulated time, a node whose CPU the simulator slowed
/// (`sim::set_cpu_cost`) spends `requests` times its cost here, while requests keep arriving.
pub async fn spend_cpu(requests: usize) {
    #[cfg(madsim)]
    {
        let busy = sim::cpu_time(requests);
        if !busy.is_zero() {
            tokio::time::sleep(busy).await;
        }
    }
    #[cfg(not(madsim))]
    let _ = requests;
}

/// In simulation, the longest a resumed node's paused turn waits for the process's other work
/// (see [`preemption_point`]).
pub const RESUME_LAG_MAX: Duration = Duration::from_millis(50);

/// Simulation only: faults that must land at a given point of the product's code.
#[cfg(madsim)]
pub mod sim;

/// The longest simulated preemption at a [`preemption_point`].
pub const PREEMPTION_MAX: Duration = Duration::from_micros(500);

/// Spawns a task on the current runtime (in simulation: on the current simulated node, so the task
/// dies with the node).
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}

/// Why a node process ends on its own: it cannot go on (a task it cannot live without panicked, or
/// its storage failed and its durable state is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalExit {
    /// The process exit status (see [`EXIT_TASK_PANICKED`], [`EXIT_STORAGE_FAILED`]).
    pub code: i32,
    /// One line for the operator: what failed and what it means.
    pub reason: String,
}

/// Exit status when a task the node cannot live without panicked (EX_SOFTWARE).
pub const EXIT_TASK_PANICKED: i32 = 70;
/// Exit status when the node's storage failed (EX_IOERR): an fsync error is never retried.
pub const EXIT_STORAGE_FAILED: i32 = 74;
/// Exit status when the node's configuration cannot work with its cluster's (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// The message with which a simulated node "exits": the simulator restarts a node whose task
/// panics with it (madsim's restart on panic), as a supervisor restarts a process that exited.
pub const SIMULATED_EXIT_MARKER: &str = "hyperion: simulated process exit";

/// What a node does when it cannot go on; passed explicitly to what may need it. The default
/// ([`FatalHandler::exit_process`]) ends the process; the simulator's records the exit first.
#[derive(Clone)]
pub struct FatalHandler(Arc<dyn Fn(&FatalExit) + Send + Sync>);

impl FatalHandler {
    /// Ends the process: one clear log line, then exit with the status. In simulation the node
    /// is killed and later restarted instead.
    pub fn exit_process() -> FatalHandler {
        FatalHandler(Arc::new(|_| {}))
    }

    /// Calls `record` with the exit, then ends the process as [`FatalHandler::exit_process`].
    pub fn recording(record: impl Fn(&FatalExit) + Send + Sync + 'static) -> FatalHandler {
        FatalHandler(Arc::new(record))
    }

    /// The node cannot go on.
    pub fn exit(&self, exit: FatalExit) -> ! {
        (self.0)(&exit);
        tracing::error!(code = exit.code, "fatal: {}; the node exits", exit.reason);
        #[cfg(not(madsim))]
        {
            std::process::exit(exit.code)
        }
        #[cfg(madsim)]
        {
            panic!(
                "{SIMULATED_EXIT_MARKER} (status {}): {}",
                exit.code, exit.reason
            )
        }
    }
}

impl std::fmt::Debug for FatalHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FatalHandler")
    }
}

/// Spawns a task the node cannot live without (the node loop, a peer's sender, the flush loop).
/// If it panics, the node does not live on as a zombie serving frozen state: `fatal` ends it with
/// one clear line. `zombie_on_panic` is fault injection (the pre-fix behaviour: the panic ends the
/// task alone, as it would in a plain task, and the process lives on).
pub fn spawn_critical<F>(name: &'static str, fatal: FatalHandler, zombie_on_panic: bool, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    use futures::FutureExt;
    spawn(async move {
        // Boxed: the node loop's future is large, and holding it inline in this wrapper (which
        // the simulator polls on a test thread's stack) overflowed a 2 MiB stack.
        let Err(panic) = std::panic::AssertUnwindSafe(Box::pin(future))
            .catch_unwind()
            .await
        else {
            return;
        };
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)")
            .to_string();
        if message.starts_with(SIMULATED_EXIT_MARKER) {
            // A simulated exit from inside the task: pass it on to the simulator.
            std::panic::resume_unwind(panic);
        }
        if zombie_on_panic {
            tracing::error!(
                task = name,
                "task panicked: {message}; the node lives on without it"
            );
            return;
        }
        fatal.exit(FatalExit {
            code: EXIT_TASK_PANICKED,
            reason: format!("the {name} task panicked: {message}"),
        });
    });
}

/// 64 bits of entropy to seed one RNG: from the OS in production (once per component at start), from
/// the simulation seed in simulation, so a seed replays every random choice.
pub fn entropy_seed() -> u64 {
    #[cfg(madsim)]
    {
        madsim::rand::random::<u64>()
    }
    #[cfg(not(madsim))]
    {
        // A machine without an OS entropy source cannot run a secure cache: fail loudly.
        getrandom::u64().expect("the OS entropy source (getrandom) is unavailable")
    }
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`), reported beside the
/// cache's own accounting. `None` in simulation (every node shares one process) and where `/proc`
/// is missing.
pub fn resident_bytes() -> Option<u64> {
    let status = (!SIMULATION).then(|| std::fs::read_to_string("/proc/self/status").ok())??;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A bounded channel's receiving end as a `Stream` (tokio-stream's wrapper is for real tokio's
/// channel; this one works in both builds): the items in order, until every sender is gone.
pub fn receiver_stream<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// A seeded RNG for one component. Every random choice in Hyperion comes from one of these.
pub fn seeded_rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(entropy_seed())
}

/// Wall-clock milliseconds since the Unix epoch, read once to anchor a [`NodeClock`]. In simulation
/// madsim virtualises the system clock as well, so this is deterministic there too.
fn unix_epoch_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Bounds on the clock model, so that a scenario cannot make time meaningless.
pub const CLOCK_RATE_MIN: f64 = 0.5;
/// See [`CLOCK_RATE_MIN`].
pub const CLOCK_RATE_MAX: f64 = 2.0;

#[derive(Debug)]
struct ClockModel {
    /// Runtime instant at which `anchor_node_ms` was the node's time.
    anchor: Instant,
    /// Node wall time (ms since the Unix epoch) at `anchor`.
    anchor_node_ms: f64,
    /// Node monotonic time at `anchor`: like wall time but never stepped by jumps.
    anchor_mono_ms: f64,
    /// Node milliseconds per runtime millisecond.
    rate: f64,
}

impl ClockModel {
    fn elapsed_node_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.anchor).as_secs_f64() * 1000.0 * self.rate
    }

    fn now_ms(&self, at: Instant) -> f64 {
        self.anchor_node_ms + self.elapsed_node_ms(at)
    }

    fn monotonic_ms(&self, at: Instant) -> f64 {
        self.anchor_mono_ms + self.elapsed_node_ms(at)
    }

    /// Moves the anchor to `at` so a change of rate does not rewrite past readings.
    fn reanchor(&mut self, at: Instant) {
        self.anchor_node_ms = self.now_ms(at);
        self.anchor_mono_ms = self.monotonic_ms(at);
        self.anchor = at;
    }
}

/// One node's clock: runtime time plus an offset, at a rate, with jumps. Cheap to clone; clones
/// share the model, so the simulator can skew a node's clock while the node runs.
#[derive(Clone, Debug)]
pub struct NodeClock {
    model: Arc<Mutex<ClockModel>>,
}

impl NodeClock {
    /// The clock of a production node: the system's wall clock at start, advanced by the monotonic
    /// runtime clock (so it never jumps backwards while the process runs).
    pub fn system() -> NodeClock {
        NodeClock::starting_at_ms(unix_epoch_ms())
    }

    /// A clock that reads `start_ms` now and advances at rate 1.
    pub fn starting_at_ms(start_ms: u64) -> NodeClock {
        NodeClock {
            model: Arc::new(Mutex::new(ClockModel {
                anchor: now(),
                anchor_node_ms: start_ms as f64,
                anchor_mono_ms: 0.0,
                rate: 1.0,
            })),
        }
    }

    fn with_model<T>(&self, f: impl FnOnce(&mut ClockModel) -> T) -> T {
        // The model holds plain numbers; a panic elsewhere cannot leave it half-written.
        let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut model)
    }

    /// The node's wall time, in milliseconds since the Unix epoch (subject to jumps).
    pub fn now_ms(&self) -> u64 {
        self.with_model(|m| m.now_ms(now()).max(0.0) as u64)
    }

    /// The node's monotonic time in milliseconds since the clock was made: it runs at the
    /// clock's rate but is never stepped by jumps (CLOCK_MONOTONIC). Raft timers and leases use
    /// this; TTLs use [`NodeClock::now_ms`].
    pub fn monotonic_ms(&self) -> u64 {
        self.with_model(|m| m.monotonic_ms(now()).max(0.0) as u64)
    }

    /// The node's clock rate (node ms per real ms).
    pub fn rate(&self) -> f64 {
        self.with_model(|m| m.rate)
    }

    /// Sets the clock rate from now on (drift). Panics outside
    /// [`CLOCK_RATE_MIN`]..=[`CLOCK_RATE_MAX`]: a scenario asking for that is a bug.
    pub fn set_rate(&self, rate: f64) {
        assert!(
            (CLOCK_RATE_MIN..=CLOCK_RATE_MAX).contains(&rate),
            "clock rate {rate} outside [{CLOCK_RATE_MIN}, {CLOCK_RATE_MAX}]"
        );
        self.with_model(|m| {
            m.reanchor(now());
            m.rate = rate;
        });
    }

    /// Jumps the clock by `delta_ms` (negative: backwards), as an NTP step would.
    pub fn jump_ms(&self, delta_ms: i64) {
        self.with_model(|m| {
            m.reanchor(now());
            m.anchor_node_ms = (m.anchor_node_ms + delta_ms as f64).max(0.0);
        });
    }

    /// How long to sleep in runtime time for `node_duration` to pass on this node's clock.
    pub fn runtime_duration(&self, node_duration: Duration) -> Duration {
        let rate = self.rate();
        Duration::from_secs_f64(node_duration.as_secs_f64() / rate)
    }

    /// Sleeps until `node_duration` has passed on this node's clock (at the current rate).
    pub async fn sleep(&self, node_duration: Duration) {
        sleep(self.runtime_duration(node_duration)).await;
    }
}

/// Why a gRPC listener could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server on {addr} failed: {source}")]
    Transport {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("gRPC reflection: {problem}")]
    Reflection { problem: String },
}

/// The metadata key through which a simulated caller states the identity its certificate would
/// prove in production (the simulator has no TLS). Ignored by the production build.
pub const SIMULATED_IDENTITY_METADATA: &str = "x-hyperion-sim-identity";

/// The identity a simulated caller states ([`SIMULATED_IDENTITY_METADATA`]); always `None` in
/// the production build, where only a verified certificate names a caller.
pub fn simulated_identity(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    #[cfg(madsim)]
    {
        metadata
            .get(SIMULATED_IDENTITY_METADATA)
            .and_then(|value| value.to_str().ok())
    }
    #[cfg(not(madsim))]
    {
        let _ = metadata;
        None
    }
}

/// States `identity` on an outgoing request in simulation (what the caller's certificate
/// would prove); does nothing in the production build, where the TLS channel proves it.
pub fn state_simulated_identity(metadata: &mut tonic::metadata::MetadataMap, identity: &str) {
    #[cfg(madsim)]
    {
        if let Ok(value) = identity.parse() {
            metadata.insert(SIMULATED_IDENTITY_METADATA, value);
        }
    }
    #[cfg(not(madsim))]
    {
        let _ = (metadata, identity);
    }
}

/// A lazily connecting channel to `endpoint`: over TLS when `security` is given (production),
/// plaintext otherwise (and always in simulation). The endpoint's connect timeout bounds the TCP
/// connection and the handshake together.
pub fn channel(
    endpoint: tonic::transport::Endpoint,
    security: Option<ChannelSecurity>,
    connect_timeout: Duration,
) -> tonic::transport::Channel {
    #[cfg(not(madsim))]
    {
        match security {
            Some(security) => endpoint.connect_with_connector_lazy(tls::TlsConnector {
                security,
                connect_timeout,
            }),
            None => endpoint.connect_timeout(connect_timeout).connect_lazy(),
        }
    }
    #[cfg(madsim)]
    {
        let _ = security;
        endpoint.connect_timeout(connect_timeout).connect_lazy()
    }
}

/// Whether a failed call never reached the server because its connection could not be made
/// (so a write in it cannot have applied). A connection lost after sending is not one: that
/// write may have applied. The simulator's channels say "transport error" only when connecting
/// to the node failed (a killed or absent node).
pub fn is_connect_failure(status: &tonic::Status) -> bool {
    let message = status.message().to_ascii_lowercase();
    if cfg!(madsim) && message == "transport error" {
        return true;
    }
    message.contains("connection refused")
        || message.contains("tcp connect error")
        || message.contains("dns error")
}

/// A bound gRPC listener: the address is known (port 0 resolved) before serving starts, so a
/// caller can log or publish it first.
pub struct GrpcListener {
    local_addr: SocketAddr,
    #[cfg(not(madsim))]
    incoming: Incoming,
}

#[cfg(not(madsim))]
enum Incoming {
    Plain(tonic::transport::server::TcpIncoming),
    Secure {
        listener: tokio::net::TcpListener,
        security: ListenerSecurity,
        limits: ConnectionLimits,
    },
}

impl GrpcListener {
    /// Binds `addr` for plaintext (in simulation the bind happens when serving starts; port 0 is
    /// not resolved).
    pub fn bind(addr: SocketAddr) -> Result<GrpcListener, ServeError> {
        #[cfg(not(madsim))]
        {
            let incoming = tonic::transport::server::TcpIncoming::bind(addr)
                .map_err(|source| ServeError::Bind { addr, source })?
                .with_nodelay(Some(true));
            let local_addr = incoming
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            Ok(GrpcListener {
                local_addr,
                incoming: Incoming::Plain(incoming),
            })
        }
        #[cfg(madsim)]
        {
            Ok(GrpcListener { local_addr: addr })
        }
    }

    /// Binds `addr` for TLS with `security` (in simulation: plaintext, as [`GrpcListener::bind`]).
    pub fn bind_secure(
        addr: SocketAddr,
        security: ListenerSecurity,
        limits: ConnectionLimits,
    ) -> Result<GrpcListener, ServeError> {
        #[cfg(not(madsim))]
        {
            let (listener, local_addr) =
                tls::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
            Ok(GrpcListener {
                local_addr,
                incoming: Incoming::Secure {
                    listener,
                    security,
                    limits,
                },
            })
        }
        #[cfg(madsim)]
        {
            let _ = (security, limits);
            GrpcListener::bind(addr)
        }
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `router` (the services and layers a caller added to it) until `shutdown`
    /// resolves; in-flight RPCs finish first. The seam knows no service: callers build the
    /// router. (The simulator's transport ignores layers.)
    #[cfg(not(madsim))]
    pub async fn serve<L, ResBody>(
        self,
        router: tonic::transport::server::Router<L>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError>
    where
        L: tower_layer::Layer<tonic::service::Routes>,
        L::Service: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<ResBody>,
            > + Clone
            + Send
            + 'static,
        <L::Service as tower_service::Service<http::Request<tonic::body::Body>>>::Future: Send,
        <L::Service as tower_service::Service<http::Request<tonic::body::Body>>>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve_router(router, shutdown).await
    }

    /// See the production build's `serve`.
    #[cfg(madsim)]
    pub async fn serve<L>(
        self,
        router: tonic::transport::server::Router<L>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.serve_router(router, shutdown).await
    }

    #[cfg(not(madsim))]
    async fn serve_router<L, ResBody>(
        self,
        router: tonic::transport::server::Router<L>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError>
    where
        L: tower_layer::Layer<tonic::service::Routes>,
        L::Service: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<ResBody>,
            > + Clone
            + Send
            + 'static,
        <L::Service as tower_service::Service<http::Request<tonic::body::Body>>>::Future: Send,
        <L::Service as tower_service::Service<http::Request<tonic::body::Body>>>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let addr = self.local_addr;
        let served = match self.incoming {
            Incoming::Plain(incoming) => {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            Incoming::Secure {
                listener,
                security,
                limits,
            } => {
                router
                    .serve_with_incoming_shutdown(
                        tls::incoming(listener, security, limits),
                        shutdown,
                    )
                    .await
            }
        };
        served.map_err(|source| ServeError::Transport { addr, source })
    }

    #[cfg(madsim)]
    async fn serve_router<L>(
        self,
        router: tonic::transport::server::Router<L>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.local_addr;
        let served = router.serve_with_shutdown(addr, shutdown).await;
        served.map_err(|source| ServeError::Transport { addr, source })
    }
}

/// `router` with gRPC server reflection over `file_descriptor_set` (encoded
/// `FileDescriptorSet`); the simulator has no reflection and gets `router` back as it was.
pub fn with_reflection<L>(
    router: tonic::transport::server::Router<L>,
    file_descriptor_set: &'static [u8],
) -> Result<tonic::transport::server::Router<L>, String> {
    #[cfg(not(madsim))]
    {
        reflection::add(router, file_descriptor_set)
    }
    #[cfg(madsim)]
    {
        let _ = file_descriptor_set;
        Ok(router)
    }
}

/// A bound HTTP listener for plain handlers (the admin port). The simulator has no HTTP: there
/// serving only waits for shutdown, and tests call the handlers directly.
pub struct HttpListener {
    local_addr: SocketAddr,
    #[cfg(not(madsim))]
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl HttpListener {
    /// Binds `addr`; with `tls`, connections are TLS (HTTP/1.1 over the given configuration).
    pub fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<HttpListener, ServeError> {
        #[cfg(not(madsim))]
        {
            let (listener, local_addr) =
                http_server::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
            Ok(HttpListener {
                local_addr,
                listener,
                tls,
            })
        }
        #[cfg(madsim)]
        {
            Ok(HttpListener {
                local_addr: addr,
                tls,
            })
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `handler` until `shutdown` resolves.
    pub async fn serve(self, handler: HttpHandler, shutdown: impl Future<Output = ()> + Send) {
        #[cfg(not(madsim))]
        {
            http_server::serve(self.listener, self.tls, handler, shutdown).await;
        }
        #[cfg(madsim)]
        {
            let _ = handler;
            shutdown.await;
        }
    }
}

/// Performs an [`HttpsGet`]. The simulator has no HTTPS servers: there it always fails.
pub async fn https_get(request: HttpsGet) -> std::io::Result<HttpsAnswer> {
    #[cfg(not(madsim))]
    {
        tls::https_get(request).await
    }
    #[cfg(madsim)]
    {
        let _ = request;
        Err(std::io::Error::other(
            "the simulated network has no HTTPS servers",
        ))
    }
}

/// SIGHUP, the operator's "reload your files" (certificates, keys, the ACL, the JWKS). Never
/// fires in simulation.
pub struct Hangups {
    #[cfg(all(unix, not(madsim)))]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Starts listening for SIGHUP (from now on it no longer ends the process).
    pub fn listen() -> Hangups {
        #[cfg(all(unix, not(madsim)))]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Hangups {
                signal: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(any(madsim, not(unix)))]
        {
            Hangups {}
        }
    }

    /// The next SIGHUP.
    pub async fn recv(&mut self) {
        #[cfg(all(unix, not(madsim)))]
        {
            if let Some(signal) = &mut self.signal {
                if signal.recv().await.is_some() {
                    return;
                }
            }
        }
        std::future::pending::<()>().await
    }
}

/// Resolves on SIGINT or SIGTERM (in simulation: on madsim's ctrl-c for the node).
pub async fn shutdown_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(any(madsim, not(unix)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;
