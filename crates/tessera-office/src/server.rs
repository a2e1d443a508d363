//! The back-office HTTP server (`tessera office serve`).
//!
//! * `POST /v1/batches` streams the request body into
//!   [`Ledger::ingest_send`] on a blocking thread while the body arrives: a
//!   batch is never held in memory whole. The ledger is behind a mutex, so
//!   batches are ingested one at a time; a body that stalls for longer than
//!   [`ServerConfig::idle_timeout`] is abandoned (nothing is posted).
//!   Refusals: `415` unless `Content-Type: application/x-ndjson`; `413`
//!   above [`ServerConfig::max_batch_bytes`] (announced or counted); the
//!   ledger's own refusals with [`LedgerError::http_status`].
//! * `GET /v1/sync?terminal=N[&nonce=HEX]` answers the [`SyncData`] for
//!   terminal N, MAC'd with its batch key (see the crate documentation).
//!
//! Every refusal is `{"error": "one line"}`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerError};
use tokio::sync::mpsc;

use crate::sync::{
    SyncCampaigns, SyncData, SyncHotlist, SyncKeyUpdate, SyncProfile, SyncSettled, SyncUnblock, SYNC_FORMAT,
};
use tessera_crypto::keys::IssuerDecision;

/// Where the server listens unless told otherwise: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8420";
/// Largest batch accepted by default: 256 MiB.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;
/// The content type of a batch.
pub const BATCH_CONTENT_TYPE: &str = "application/x-ndjson";
/// The HTTP header that authenticates a batch upload before any work: the
/// batch header's MAC under the terminal's batch key, hex (the same MAC as
/// the batch's last line, docs/settlement.md).
pub const BATCH_MAC_HEADER: &str = "tessera-batch-mac";
/// Longest first line (the batch header) read before authentication.
const MAX_HEADER_LINE: usize = 64 * 1024;

/// How the server speaks to terminals: there is no default.
#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTPS with the office's certificate (`office-cert.pem`).
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP, on a loopback address only (`office serve --plain-http`):
    /// [`serve`] refuses any other address.
    PlainLoopback,
}

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TLS or, on loopback only, plain HTTP.
    pub transport: Transport,
    /// Largest batch body in bytes (`413` above).
    pub max_batch_bytes: u64,
    /// The office directory: `campaigns.toml` and `campaigns.toml.sig`
    /// there are published through sync.
    pub office_dir: Option<PathBuf>,
    /// A fixed clock (Unix seconds) instead of the system clock.
    pub fixed_now: Option<u32>,
    /// Longest pause inside a request body before it is abandoned.
    pub idle_timeout: Duration,
}

impl ServerConfig {
    /// The default limits with the given transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            max_batch_bytes: MAX_BATCH_BYTES,
            office_dir: None,
            fixed_now: None,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or the listener failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// Plain HTTP was asked for on an address that is not loopback.
    #[error("plain HTTP is served on loopback only, not on {0}: serve HTTPS")]
    PlainNotLoopback(SocketAddr),
}

struct Office {
    ledger: Mutex<Ledger>,
    keys: IssuerKeys,
    config: ServerConfig,
    /// Sync nonces answered recently (terminal, nonce) → request time.
    seen_nonces: Mutex<std::collections::HashMap<(u32, Vec<u8>), u32>>,
}

/// The system clock, whatever the ledger's clock (requests' freshness).
fn system_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

impl Office {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock rolled its database transaction
        // back: the ledger itself is consistent.
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> u32 {
        self.config.fixed_now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                .unwrap_or(0)
        })
    }
}

/// Runs the server on `addr` until SIGINT or SIGTERM, on its own runtime.
/// `on_bound` is called with the bound address (port 0 picks a free port)
/// before the first request is accepted. Requests in flight are finished
/// on shutdown.
///
/// # Errors
/// [`ServerError::Bind`] if the address cannot be bound, [`ServerError::Io`]
/// if the runtime cannot start.
pub fn serve(
    ledger: Ledger,
    keys: IssuerKeys,
    addr: SocketAddr,
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    if matches!(config.transport, Transport::PlainLoopback) && !addr.ip().is_loopback() {
        return Err(ServerError::PlainNotLoopback(addr));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        on_bound(listener.local_addr()?);
        serve_on(listener, ledger, keys, config, shutdown_signal()).await
    })
}

/// Serves on an already bound listener until `shutdown` completes.
///
/// # Errors
/// [`ServerError::PlainNotLoopback`] for plain HTTP on a listener that is
/// not on loopback; [`ServerError::Io`] if the listener fails.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    ledger: Ledger,
    keys: IssuerKeys,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let local = listener.local_addr()?;
    if matches!(config.transport, Transport::PlainLoopback) && !local.ip().is_loopback() {
        return Err(ServerError::PlainNotLoopback(local));
    }
    let tls = match &config.transport {
        Transport::Tls(c) => Some(tokio_rustls::TlsAcceptor::from(Arc::clone(c))),
        Transport::PlainLoopback => None,
    };
    let office = Arc::new(Office {
        ledger: Mutex::new(ledger),
        keys,
        config,
        seen_nonces: Mutex::new(std::collections::HashMap::new()),
    });
    // Gaps age into exceptions even on a day without settlement.
    let ager = {
        let office = Arc::clone(&office);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(GAP_AGING_INTERVAL);
            loop {
                tick.tick().await;
                let office = Arc::clone(&office);
                let _ = tokio::task::spawn_blocking(move || {
                    let now = office.now();
                    office.ledger().age_gaps(now, tessera_ledger::GAP_AGE_SECS)
                })
                .await;
            }
        })
    };
    let result = accept_loop(listener, routes(office), tls, shutdown).await;
    ager.abort();
    result
}

/// Most connections open at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Longest TLS handshake, and longest wait for a request's head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The peer of a connection, as a request extension.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // read by the /metrics route (next step)
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Accepts connections (TLS or plain), each served by hyper's HTTP/1.1 on
/// its own task, at most [`MAX_CONNECTIONS`] at once, until `shutdown`;
/// then waits up to 30 s for the connections in flight.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors or a connection reset before
                    // accept: wait a little, keep serving.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, request.map(Body::new)).await }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HANDSHAKE_TIMEOUT)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
                None => {
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    let _ = watcher.watch(conn).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {},
    }
    Ok(())
}

/// How often the server ages held gaps into exceptions.
pub const GAP_AGING_INTERVAL: Duration = Duration::from_secs(3600);

/// The routes, for embedding the office in another server.
pub fn router(ledger: Ledger, keys: IssuerKeys, config: ServerConfig) -> Router {
    routes(Arc::new(Office {
        ledger: Mutex::new(ledger),
        keys,
        config,
        seen_nonces: Mutex::new(std::collections::HashMap::new()),
    }))
}

fn routes(office: Arc<Office>) -> Router {
    Router::new()
        .route("/v1/batches", post(post_batch))
        .route("/v1/sync", get(get_sync))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such resource: see docs/settlement.md") })
        .layer(DefaultBodyLimit::disable())
        .with_state(office)
}

async fn shutdown_signal() {
    let int = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = int => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = int.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = int.await;
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let line: String = message.lines().collect::<Vec<_>>().join(" ");
    json_response(status, serde_json::json!({ "error": line }).to_string())
}

/// The body, as the blocking ingest reads it: chunks arrive through a
/// channel from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

async fn post_batch(State(office): State<Arc<Office>>, request: Request) -> Response {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case(BATCH_CONTENT_TYPE) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("a batch is sent as {BATCH_CONTENT_TYPE}, not {content_type:?}"),
        );
    }
    let limit = office.config.max_batch_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a batch is at most {limit} bytes"),
        );
    }
    let claimed_mac = headers
        .get(BATCH_MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut m = [0u8; 16];
            hex::decode_to_slice(v.trim(), &mut m).ok().map(|()| m)
        });
    let mut body: Body = request.into_body();
    // Authenticate before any work: the batch header (the first line) and
    // its MAC, checked with the terminal's batch key, before the ledger is
    // touched or its lock taken. Refusals here write nothing.
    let Some(claimed_mac) = claimed_mac else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("a batch upload carries its header MAC in {BATCH_MAC_HEADER}"),
        );
    };
    let mut first = Vec::new();
    loop {
        if first.contains(&b'\n') {
            break;
        }
        if first.len() > MAX_HEADER_LINE {
            return refuse(StatusCode::BAD_REQUEST, "the batch header line is too long");
        }
        match tokio::time::timeout(office.config.idle_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    first.extend_from_slice(&data);
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                return refuse(StatusCode::BAD_REQUEST, "the batch body broke off before its header")
            }
        }
    }
    let line = first.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(batch_header) = serde_json::from_slice::<tessera_terminal::batch::Header>(line) else {
        return refuse(StatusCode::BAD_REQUEST, "the first line is not a batch header");
    };
    let key = office.keys.terminal_batch_key(batch_header.terminal_id);
    if !tessera_crypto::ct_eq(&batch_header.mac(&key), &claimed_mac) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the batch header's MAC does not verify: nothing was done",
        );
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let too_large = Arc::new(AtomicBool::new(false));
    let now = office.now();
    let worker = {
        let office = Arc::clone(&office);
        tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(
                64 * 1024,
                ChannelReader {
                    rx,
                    current: Bytes::new(),
                },
            );
            let mut ledger = office.ledger();
            ledger.ingest_send(reader, now)
        })
    };
    let mut received: u64 = first.len() as u64;
    if received > limit {
        too_large.store(true, Ordering::SeqCst);
    }
    if tx.send(Ok(Bytes::from(first))).await.is_err() {
        drain(&mut body, limit.saturating_sub(received), office.config.idle_timeout).await;
    }
    loop {
        let frame = match tokio::time::timeout(office.config.idle_timeout, body.frame()).await {
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the batch body stalled",
            )),
            Ok(None) => break,
            Ok(Some(Err(e))) => Err(std::io::Error::other(format!("the batch body broke off: {e}"))),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    received += data.len() as u64;
                    if received > limit {
                        too_large.store(true, Ordering::SeqCst);
                        Err(std::io::Error::other(format!("the batch is larger than {limit} bytes")))
                    } else {
                        Ok(data)
                    }
                }
                Err(_) => continue, // trailers
            },
        };
        let failed = frame.is_err();
        if failed {
            // The body is unusable: the outcome is the worker's.
            let _ = tx.send(frame).await;
            break;
        }
        if tx.send(frame).await.is_err() {
            // The ledger stopped reading: it refused the batch. Read the
            // rest of the body (within the size limit and the idle timeout)
            // without keeping it, so that the client, still sending, gets
            // the refusal instead of a broken connection.
            drain(&mut body, limit.saturating_sub(received), office.config.idle_timeout).await;
            break;
        }
    }
    drop(tx);
    let result = match worker.await {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("ingest failed: {e}")),
    };
    match result {
        Ok(outcome) => match serde_json::to_string(&outcome.ack) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Err(e) if too_large.load(Ordering::SeqCst) => {
            let _ = e;
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a batch is at most {limit} bytes"),
            )
        }
        Err(e) => refuse(ledger_status(&e), &e.to_string()),
    }
}

/// Reads and discards up to `budget` more bytes of a request body, each
/// frame within `idle`; stops at the end, an error, the budget or a stall.
async fn drain(body: &mut Body, budget: u64, idle: Duration) {
    let mut left = budget;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(idle, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            let n = data.len() as u64;
            if n > left {
                return;
            }
            left -= n;
        }
    }
}

fn ledger_status(e: &LedgerError) -> StatusCode {
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

async fn get_sync(State(office): State<Arc<Office>>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(terminal_id) = query_param(&query, "terminal").and_then(|t| t.parse::<u32>().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "give the terminal: /v1/sync?terminal=N");
    };
    let nonce = query_param(&query, "nonce").unwrap_or("").to_ascii_lowercase();
    let raw_nonce = match hex::decode(&nonce) {
        Ok(n) if !n.is_empty() && n.len() <= 32 => n,
        _ => return refuse(StatusCode::BAD_REQUEST, "the nonce is 1 to 32 bytes in hex"),
    };
    // Authenticated before any work: the terminal's MAC over terminal,
    // time and nonce, a fresh time, a nonce not seen before. Unknown and
    // known terminals get the same refusal.
    let time = query_param(&query, "time").and_then(|t| t.parse::<u32>().ok());
    let mac = query_param(&query, "mac").and_then(|m| {
        let mut out = [0u8; 16];
        hex::decode_to_slice(m, &mut out).ok().map(|()| out)
    });
    let (Some(time), Some(mac)) = (time, mac) else {
        return refuse(StatusCode::UNAUTHORIZED, "a sync request carries its time and MAC");
    };
    let key = office.keys.terminal_batch_key(terminal_id);
    if !tessera_crypto::ct_eq(&crate::sync::request_mac(&key, terminal_id, time, &raw_nonce), &mac) {
        return refuse(StatusCode::UNAUTHORIZED, "the sync request's MAC does not verify");
    }
    let wall = system_now();
    if wall.abs_diff(time) > crate::sync::SYNC_REQUEST_WINDOW_SECS {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the sync request's time is too far from the office's clock",
        );
    }
    {
        let mut seen = office
            .seen_nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| wall.abs_diff(*at) <= 2 * crate::sync::SYNC_REQUEST_WINDOW_SECS);
        if seen.insert((terminal_id, raw_nonce), time).is_some() {
            return refuse(StatusCode::UNAUTHORIZED, "this sync request was answered already");
        }
    }
    let worker = tokio::task::spawn_blocking(move || build_sync(&office, terminal_id, nonce));
    match worker.await {
        Ok(Ok(data)) => match serde_json::to_string(&data) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Ok(Err((status, message))) => refuse(status, &message),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("sync failed: {e}")),
    }
}

fn build_sync(office: &Office, terminal_id: u32, nonce: String) -> Result<SyncData, (StatusCode, String)> {
    let ledger_err = |e: LedgerError| (ledger_status(&e), e.to_string());
    let campaigns = published_campaigns(office).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let ledger = office.ledger();
    if !terminal_known(&ledger, terminal_id).map_err(ledger_err)? {
        return Err((
            StatusCode::FORBIDDEN,
            format!("unknown or revoked terminal {terminal_id}"),
        ));
    }
    let hotlist = ledger.hotlist().map_err(ledger_err)?;
    let updates = ledger.profile_updates().map_err(ledger_err)?;
    let settled = ledger.settled_counters().map_err(ledger_err)?;
    let unblocks = ledger.unblocks().map_err(ledger_err)?;
    let versions = ledger.card_key_versions().map_err(ledger_err)?;
    let behind = ledger
        .cards_below_key_version(office.keys.key_version)
        .map_err(ledger_err)?;
    drop(ledger);
    // Issuer decisions carry the issuer MAC (applet-spec §5.9) under the
    // card's issuer key of its own key version: the till relays them, the
    // card checks them.
    let keys = &office.keys;
    // One MAC per key version the card may hold: from the one the ledger
    // last saw (a card that moved at a KEY UPDATE is seen at its new version
    // only once a certificate of it arrives) to the office's current one.
    let mac = |card: &[u8; 8], decision: IssuerDecision<'_>| -> std::collections::BTreeMap<u8, String> {
        let from = versions.get(card).copied().unwrap_or(keys.key_version);
        keys.key_versions()
            .into_iter()
            .filter(|v| *v >= from)
            .filter_map(|v| keys.issuer_mac_of(card, v, decision).map(|m| (v, hex::encode(m))))
            .collect()
    };
    let mut data = SyncData {
        format: SYNC_FORMAT.into(),
        terminal_id,
        issued_at: office.now(),
        nonce,
        hotlist: SyncHotlist {
            version: hotlist.version,
            cards: hotlist.cards.iter().map(hex::encode_upper).collect(),
        },
        campaigns,
        profile_updates: updates
            .into_iter()
            .map(|(card, version, blob)| SyncProfile {
                card_id: hex::encode_upper(card),
                version,
                issuer_macs: mac(&card, IssuerDecision::Profile(&blob)),
                profile: hex::encode(blob),
            })
            .collect(),
        settled: settled
            .into_iter()
            .map(|(card, counter)| SyncSettled {
                card_id: hex::encode_upper(card),
                counter,
                issuer_macs: mac(&card, IssuerDecision::Settled(counter)),
            })
            .collect(),
        unblocks: unblocks
            .into_iter()
            .map(|(card, seq)| SyncUnblock {
                card_id: hex::encode_upper(card),
                seq,
                issuer_macs: mac(&card, IssuerDecision::Unblock(seq)),
            })
            .collect(),
        key_updates: behind
            .into_iter()
            .filter_map(|(card, from)| keys.key_update(&card, from))
            .map(|ku| SyncKeyUpdate {
                card_id: hex::encode_upper(ku.card_id),
                key_version: ku.command.key_version,
                ciphertext: hex::encode(&ku.command.ciphertext),
                issuer_mac: hex::encode(ku.command.issuer_mac),
            })
            .collect(),
        mac: String::new(),
    };
    data.seal(&office.keys.terminal_batch_key(terminal_id));
    Ok(data)
}

/// Whether the ledger knows `terminal_id` as an active terminal.
fn terminal_known(ledger: &Ledger, terminal_id: u32) -> Result<bool, LedgerError> {
    Ok(ledger.terminal_active(terminal_id)? == Some(true))
}

/// The campaign file the office publishes: `campaigns.toml` and its
/// signature in the office directory, both or neither.
fn published_campaigns(office: &Office) -> Result<Option<SyncCampaigns>, String> {
    let Some(dir) = &office.config.office_dir else {
        return Ok(None);
    };
    let toml_path = dir.join("campaigns.toml");
    let sig_path = dir.join("campaigns.toml.sig");
    let toml = match std::fs::read_to_string(&toml_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", toml_path.display())),
    };
    let signature = std::fs::read_to_string(&sig_path).map_err(|e| {
        format!(
            "{} (publish the campaign file with its signature): {e}",
            sig_path.display()
        )
    })?;
    Ok(Some(SyncCampaigns {
        toml,
        signature: signature.trim().to_owned(),
    }))
}
