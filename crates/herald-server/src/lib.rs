//! # herald-server: the edge
//!
//! The only crate that does I/O. One TCP port serves:
//!
//! - `/?Action=…` — the OpenAPI ([`api`]), signed like the vendor's;
//! - `/ws?appId=…` — the client gateway ([`gateway`]), on Herald's own WebSocket codec ([`ws`]);
//! - `/` (no query), `/demo`, `/sdk/herald.js`, `/admin/api/*` — the console, the demo, the
//!   browser SDK and the admin API behind them ([`admin`]);
//! - `/metrics` — Prometheus text ([`metrics`]); `/healthz` — liveness; `/readyz` — readiness
//!   (503 while a cluster node is not in sync with Redis).
//!
//! Every TCP connection is admitted by the connection limits ([`limits`]) in the accept loop
//! before anything is read from it.
//!
//! Out of the server go webhooks ([`webhook`]) and `sendServerMessage` posts ([`upstream`]).
//!
//! With `[tls]` the port speaks TLS only (`tls.rs`): the same routes as HTTPS and WSS.
//!
//! [`Server::start`] binds, spawns the accept loop and returns a handle; [`Server::shutdown`] stops
//! it gracefully. Configuration is parsed once into a [`config::Config`]. Time comes from
//! a [`clock::Clock`], so tests can stop it.

pub mod acks;
pub mod admin;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod report;
mod tls;
pub mod upstream;
pub mod webhook;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::apps::Registry;
use herald_core::hub::Hub;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// Everything a request handler needs, shared by all connections.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    pub(crate) hub: Arc<Hub>,
    /// Cluster mode: this node's membership of the cluster (`None`: a single node).
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) request_ids: api::RequestIds,
    pub(crate) signing_keys: api::SigningKeys,
    /// Set when the server stops: WebSocket connections close (1001) and the cluster tasks end.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Set first when the server stops: HTTP connections finish the request in flight and close.
    pub(crate) http_shutdown: watch::Receiver<bool>,
    /// Open WebSocket connections, so shutdown can wait for their close handshakes.
    pub(crate) live_connections: watch::Sender<usize>,
    /// HTTP connections not (yet) upgraded, so shutdown can wait for the calls in flight.
    pub(crate) live_http: watch::Sender<usize>,
    /// The HTTP client of `sendServerMessage`.
    pub(crate) upstream: Arc<upstream::Upstream>,
    /// Bounds the `sendServerMessage` posts in flight, server-wide.
    pub(crate) upstream_slots: Arc<tokio::sync::Semaphore>,
    /// Webhook delivery, for its counters.
    pub(crate) webhooks: Arc<webhook::Webhooks>,
    /// The connection limits of the listen port (`[limits]`).
    pub(crate) limits: Arc<limits::ConnectionLimits>,
    /// `[tls]`: the handshake every accepted connection goes through first.
    pub(crate) tls: Option<tls::Acceptor>,
    /// Wakes the API calls waiting for acks when a client acknowledges.
    pub(crate) acks: Arc<acks::AckSignal>,
}

impl Shared {
    /// Sends an admitted-to-parse OpenAPI message: on this node alone, or through the cluster
    /// (rate limit and `From` rule cluster-wide, recipients on any node).
    pub(crate) async fn send(
        &self,
        req: &herald_proto::openapi::SendRequest,
        now: herald_core::time::Timestamp,
        mut report: Option<&mut report::Report>,
    ) -> Result<herald_core::hub::Summary, cluster::RouteError> {
        use herald_core::hub::SendError;
        match &self.cluster {
            None => {
                let summary = self
                    .hub
                    .send(req, now, |u, o, receipt| {
                        if let Some(r) = report.as_deref_mut() {
                            report::record(r, u.as_str(), o, receipt);
                        }
                    })
                    .map_err(cluster::RouteError::Refused)?;
                if let Some(r) = report {
                    r.settle(&self.acks).await;
                    r.lists.sort();
                }
                Ok(summary)
            }
            Some(c) => {
                let limit = self
                    .registry
                    .app(req.app_id.as_str())
                    .map(|a| a.qps_limit)
                    .ok_or(cluster::RouteError::Refused(SendError::UnknownApp))?;
                c.send(&self.hub, &self.acks, req, limit, now, report).await
            }
        }
    }
}

/// How long the business server has to answer a `sendServerMessage` (DECISIONS.md: 5 s).
const SERVER_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// `sendServerMessage` posts in flight at most, server-wide.
const SERVER_MESSAGE_SLOTS: usize = 1024;

/// The longest each phase of a shutdown waits: for the API calls in flight to be answered, then
/// for the WebSocket connections to close. A shutdown takes at most twice this.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (in the message, so not also a `source`).
        error: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    stop_http: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Server {
    /// Validates `config`, binds its `listen` address and starts serving, with the system clock.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Server::start`], with a given clock (tests stop time with [`clock::ManualClock`]).
    pub async fn start_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, StartError> {
        config.validate()?;
        let registry = config.registry()?;
        let tls = config.tls.as_ref().map(tls::Acceptor::load).transpose()?;
        let webhooks = webhook::Webhooks::start(config.webhooks());
        let (hub, cluster) = match &config.cluster {
            None => (Hub::with_hooks(&registry, webhooks.clone()), None),
            Some(c) => {
                let (cluster, directory) = cluster::Cluster::new(c, config.recovery.window())
                    .map_err(|e| StartError::Config(ConfigError::Invalid(e)))?;
                let hub = Hub::clustered(&registry, webhooks.clone(), directory);
                (hub, Some(cluster))
            }
        };
        // Epochs of streams start at a random point below 2^52, so a restarted node's streams are
        // never mistaken for the ones it had (and stay exact as JSON numbers).
        let epoch_seed = rand::random::<u64>() >> 12;
        let hub = Arc::new(hub.with_recovery(config.recovery.window(), epoch_seed));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| StartError::Bind {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| StartError::Bind {
            addr: config.listen,
            error,
        })?;
        let (stop, shutdown) = watch::channel(false);
        let (stop_http, http_shutdown) = watch::channel(false);
        let limits = limits::ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
            &config.region,
        );
        let shared = Arc::new(Shared {
            config,
            registry,
            hub: hub.clone(),
            cluster: cluster.clone(),
            clock: clock.clone(),
            metrics: Metrics::default(),
            request_ids: api::RequestIds::new(),
            signing_keys: api::SigningKeys::default(),
            shutdown,
            http_shutdown,
            live_connections: watch::channel(0).0,
            live_http: watch::channel(0).0,
            upstream: Arc::new(upstream::Upstream::new(SERVER_MESSAGE_TIMEOUT)),
            upstream_slots: Arc::new(tokio::sync::Semaphore::new(SERVER_MESSAGE_SLOTS)),
            webhooks,
            limits,
            tls,
            acks: Arc::default(),
        });
        if let Some(c) = cluster {
            tokio::spawn(c.run(hub, clock, shared.acks.clone(), shared.shutdown.clone()));
        }
        if shared.config.recovery.window_messages > 0 {
            tokio::spawn(expire_streams(shared.clone()));
        }
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Server {
            addr,
            stop,
            stop_http,
            task,
            shared,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` with `[tls]`, `http` without: the scheme of the server's URLs.
    pub fn scheme(&self) -> &'static str {
        if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The server's metrics (the same numbers `/metrics` renders).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops gracefully, in bounded time (at most twice `SHUTDOWN_GRACE`):
    /// 1. stops accepting connections;
    /// 2. lets every API call in flight finish and be answered (its messages are delivered to
    ///    connected clients), and closes idle keep-alive connections;
    /// 3. tells every WebSocket client to reconnect elsewhere (close 1001, after what was
    ///    already queued for it), waits for the connections to end, and stops the cluster tasks.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(true);
        let _ = self.task.await;
        let mut http = self.shared.live_http.subscribe();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, http.wait_for(|n| *n == 0)).await;
        let _ = self.stop.send(true);
        let mut live = self.shared.live_connections.subscribe();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, live.wait_for(|n| *n == 0)).await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.http_shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        // Limits first, before a byte is read: a refused connection costs a fixed answer.
        let slot = match shared.limits.try_acquire(peer.ip()) {
            Ok(slot) => Arc::new(slot),
            Err(refusal) => {
                // With `[tls]` the port speaks TLS only: a plain 503 would be garbage to the
                // client, and a handshake per refusal would spend what the limit protects. The
                // refusal is counted and the connection closed.
                if shared.tls.is_none() {
                    shared.limits.refuse(stream, refusal);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        // Two kinds of task rather than one that could be either, so a plain connection's task
        // is no larger than before TLS existed.
        match shared.tls.clone() {
            None => tokio::spawn(serve_http(stream, shared, slot)),
            Some(tls) => tokio::spawn(async move {
                if let Some(stream) = tls.handshake(stream, peer, &shared.metrics).await {
                    serve_http(stream, shared, slot).await;
                }
            }),
        };
    }
}

/// Serves HTTP/1 on one connection, plain or TLS, with upgrades to the gateway.
async fn serve_http<IO>(io: IO, shared: Arc<Shared>, slot: Arc<limits::ConnectionSlot>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _live = gateway::Live::new(&shared.live_http);
    let mut stop = shared.http_shutdown.clone();
    let limits = &shared.config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_header_size(limits.max_header_bytes);
    let service = {
        let shared = shared.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let shared = shared.clone();
            // An upgrade takes the connection's slot along (the HTTP side ends at the
            // upgrade); other requests need not carry it.
            if req.uri().path() == herald_proto::client::GATEWAY_PATH {
                req.extensions_mut().insert(slot.clone());
            }
            async move { Ok::<_, std::convert::Infallible>(route(shared, req).await) }
        })
    };
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            // Answers the request in flight, if any, then closes; reads no other.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path.starts_with("/admin/api/") {
        return admin::api(&shared, req).await;
    }
    // `/` is the OpenAPI when it carries a query (`?Action=…`), the console page otherwise.
    if req.uri().query().is_none() || path != "/" {
        if let Some(page) = admin::page(req.method(), path) {
            return page;
        }
    }
    match (req.method(), path) {
        (_, "/") => api::serve(&shared, req).await,
        (_, herald_proto::client::GATEWAY_PATH) => gateway::upgrade(shared, req),
        (&Method::GET, "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", {
            let mut text = shared
                .metrics
                .render(shared.hub.stats(), shared.webhooks.stats());
            if let Some(c) = &shared.cluster {
                c.render_metrics(&mut text);
            }
            shared.limits.render_metrics(&mut text);
            text
        }),
        (&Method::GET, "/healthz") => text(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}".to_owned(),
        ),
        (&Method::GET, "/readyz") => {
            let (status, body) = if shared.cluster.as_ref().is_some_and(|c| !c.is_up()) {
                (StatusCode::SERVICE_UNAVAILABLE, "{\"status\":\"syncing\"}")
            } else {
                (StatusCode::OK, "{\"status\":\"ready\"}")
            };
            text(status, "application/json", body.to_owned())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Forgets held streams once their window has passed, every second until shutdown.
async fn expire_streams(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.hub.expire_streams(shared.clock.now()),
            _ = shutdown.changed() => return,
        }
    }
}
