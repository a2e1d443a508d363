//! The back-office HTTP server (`tessera office serve`).
//!
//! HTTPS (rustls) with the office's certificate, or plain HTTP on loopback
//! only ([`Transport`]); hyper's HTTP/1.1 per connection, at most
//! [`MAX_CONNECTIONS`] at once, [`HANDSHAKE_TIMEOUT`] for the TLS handshake
//! and for a request's head.
//!
//! * `POST /v1/batches` authenticates the batch header (its MAC in
//!   `Tessera-Batch-Mac`) before any work, then takes one of
//!   [`ServerConfig::max_concurrent_uploads`] upload slots (`503` with
//!   `Retry-After` when none is free), spools the body into a private,
//!   exclusively created temporary file within
//!   [`ServerConfig::max_batch_bytes`] (`413`) and one overall
//!   [`ServerConfig::upload_deadline`] (`408`). A spooled batch of up to
//!   1 MiB is then read and verified on its own thread, beside the other
//!   uploads and without the ledger's lock ([`BatchVerifier`]); only
//!   posting takes the lock, and every upload waiting for it by then is
//!   posted with the same commit ([`Ledger::ingest_group`]: each batch all
//!   or nothing on its own). Larger batches are streamed under the lock
//!   ([`Ledger::ingest_send`]). A slow client delays nobody else, and
//!   memory stays bounded whatever clients do. Refusals: `415` unless `Content-Type:
//!   application/x-ndjson`; the ledger's own with
//!   [`LedgerError::http_status`].
//! * `GET /v1/sync?terminal=N&nonce=HEX&time=T&mac=HEX` answers the
//!   [`SyncData`] for terminal N, MAC'd with its batch key (see the crate
//!   documentation), once the request's MAC, time and nonce check out.
//! * `POST /v1/authorize?terminal=N&nonce=HEX&time=T&mac=HEX`: a card's
//!   online authorization request, authenticated like a sync
//!   acknowledgement (the MAC binds the body); decided by the ledger
//!   ([`Ledger::authorize_online`]) within
//!   [`tessera_settlement::authorize::AUTHORIZE_DEADLINE_MS`] (`503` with
//!   `Retry-After` when the books are too busy to decide in time), answered
//!   with the card's answer under the issuer key and a MAC for the till.
//! * `GET /metrics`: the counters in the Prometheus text format, to
//!   loopback peers only.
//! * `/dashboard/…`: the staff dashboard ([`crate::dashboard`]): `GET` and
//!   `POST /dashboard/login` (the staff token for a session cookie), `POST
//!   /dashboard/logout`, and the pages, each only with a valid session
//!   (`GET` without one is redirected to the login page, anything else is
//!   `401`). Every answer carries the dashboard's content security policy
//!   and `X-Content-Type-Options: nosniff`.
//!
//! **The books** ([`Books`]) are the embedded SQLite ledger — one writer,
//! uploads posted in groups under its lock, as above — or a PostgreSQL
//! database (`tessera_ledger_pg`), which several servers share: there each
//! upload is verified and posted in a transaction of its own on a
//! connection of its own (the database's row locks order batches of one
//! terminal and the records of one card, whichever server posts them), and
//! a database that is unreachable or restarting is answered `503` with
//! `Retry-After` (nothing posted that was not acknowledged). On PostgreSQL
//! the sync feed, its acknowledgements and online authorization are served
//! as on SQLite (a card's decisions take turns on its row lock, whichever
//! server takes them), and so are the dashboard (from a connection of the
//! pool) and the aging of gaps. The nonce of a
//! sync, acknowledgement or authorization request is claimed by the server
//! that answers it, and on PostgreSQL in the books too: a request replayed
//! to another server of the same books is refused there.
//!
//! Every request is counted and logged in one line on standard error
//! (route, terminal when authenticated, status, bytes, duration). Every
//! refusal is `{"error": "one line"}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use rand_core::RngCore;
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{BatchVerifier, IngestOutcome, Ledger, LedgerError, LedgerStore, Upload};

use tessera_crypto::keys::IssuerDecision;
use tessera_ledger::SyncDelivery;
use tessera_settlement::sync::{
    SyncAck, SyncAdjustment, SyncCampaigns, SyncData, SyncHotlist, SyncKeyUpdate, SyncProfile, SyncSettled,
    SyncUnblock, SYNC_ACK_FORMAT, SYNC_FORMAT,
};

/// Where the server listens unless told otherwise: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8420";
/// Largest batch accepted by default: 256 MiB.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;
pub use tessera_settlement::batch::{BATCH_CONTENT_TYPE, BATCH_MAC_HEADER};
/// Default overall deadline of one upload.
pub const DEFAULT_UPLOAD_DEADLINE: Duration = Duration::from_secs(120);
/// Default number of uploads in flight at once.
pub const DEFAULT_MAX_UPLOADS: usize = 32;
/// Default longest wait of an authenticated upload for a free slot.
pub const DEFAULT_UPLOAD_SLOT_WAIT: Duration = Duration::from_secs(2);
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
    /// Longest an upload may take from its request head to its last byte:
    /// one deadline for the whole body, not an idle timeout that a client
    /// trickling bytes could keep restarting (`408` after it).
    pub upload_deadline: Duration,
    /// Uploads spooled or ingested at once; an authenticated upload beyond
    /// them waits up to [`ServerConfig::upload_slot_wait`] for one, then is
    /// answered `503` with `Retry-After`.
    pub max_concurrent_uploads: usize,
    /// Longest an authenticated upload waits for an upload slot (holding
    /// only its connection and its header line) before `503`.
    pub upload_slot_wait: Duration,
    /// One line per request on standard error (route, terminal, status,
    /// bytes, duration; never personal data or keys).
    pub request_log: bool,
    /// The time zone the dashboard shows times in.
    pub zone: tessera_rules::display::Zone,
    /// The currency the dashboard shows money in.
    pub currency: crate::dashboard::Currency,
    /// The office's own limits on online authorizations
    /// (`POST /v1/authorize`).
    pub online_policy: tessera_ledger::OnlinePolicy,
}

impl ServerConfig {
    /// The default limits with the given transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            max_batch_bytes: MAX_BATCH_BYTES,
            office_dir: None,
            fixed_now: None,
            upload_deadline: DEFAULT_UPLOAD_DEADLINE,
            max_concurrent_uploads: DEFAULT_MAX_UPLOADS,
            upload_slot_wait: DEFAULT_UPLOAD_SLOT_WAIT,
            request_log: true,
            zone: tessera_rules::display::Zone::system(),
            currency: crate::dashboard::Currency::office(),
            online_policy: tessera_ledger::OnlinePolicy::default(),
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

/// Where the office's books are.
pub enum Books {
    /// The embedded SQLite ledger (one writer: uploads waiting for it are
    /// posted together, with one commit).
    Sqlite(Ledger),
    /// A PostgreSQL database (`tessera_ledger_pg`): every upload posts on
    /// a connection of its own, and several servers may share the
    /// database. Connections are opened when needed and kept for reuse;
    /// one the database closed (a restart) is opened again.
    Postgres {
        /// `postgres://user@host:port/db`.
        url: String,
        /// The keys batches and certificates are verified with.
        keys: tessera_ledger::LedgerKeys,
        /// Most connections open at once ([`DEFAULT_PG_CONNECTIONS`]);
        /// requests beyond wait for one.
        connections: usize,
    },
}

/// Connections a server opens to PostgreSQL at most, by default.
pub const DEFAULT_PG_CONNECTIONS: usize = 8;

impl From<Ledger> for Books {
    fn from(ledger: Ledger) -> Self {
        Self::Sqlite(ledger)
    }
}

impl std::fmt::Debug for Books {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(l) => f.debug_tuple("Sqlite").field(l).finish(),
            Self::Postgres { .. } => f.write_str("Postgres"),
        }
    }
}

/// The books as the running server holds them.
enum Store {
    Sqlite {
        ledger: Mutex<Ledger>,
        /// Verifies uploads without the ledger's lock.
        verifier: BatchVerifier,
        /// Uploads verified (or not) and waiting for the ledger: whoever
        /// takes the ledger's lock next posts all of them with one commit.
        posting: Mutex<Vec<Posting>>,
    },
    Postgres {
        url: String,
        keys: tessera_ledger::LedgerKeys,
        pool: Mutex<PgPool>,
        /// Signalled when a connection is given back or closed.
        freed: std::sync::Condvar,
        max: usize,
    },
}

/// A server's PostgreSQL connections.
#[derive(Default)]
struct PgPool {
    idle: Vec<tessera_ledger_pg::posting::PgLedger>,
    /// Open, idle or in use.
    open: usize,
}

/// An upload waiting for the ledger, and where its outcome goes.
type Posting = (
    Upload<std::io::BufReader<std::fs::File>>,
    std::sync::mpsc::Sender<Result<IngestOutcome, LedgerError>>,
);

/// Uploads of at most this many bytes are read and verified ahead, in
/// memory and outside the ledger's lock, on the upload's own thread; larger
/// ones are streamed under the lock. With the upload slots this bounds
/// what verifying ahead holds in memory (a few times this per slot).
const VERIFY_AHEAD_BYTES: u64 = 1024 * 1024;
/// The most records verified ahead in one upload.
const VERIFY_AHEAD_RECORDS: usize = 8_192;

struct Office {
    store: Store,
    keys: IssuerKeys,
    config: ServerConfig,
    /// Sync nonces answered recently (terminal, nonce) → request time.
    seen_nonces: Mutex<std::collections::HashMap<(u32, Vec<u8>), u32>>,
    /// Upload slots ([`ServerConfig::max_concurrent_uploads`]).
    uploads: Arc<tokio::sync::Semaphore>,
    /// Sync acknowledgement slots.
    acks: Arc<tokio::sync::Semaphore>,
    /// Where uploads are spooled: `spool/` in the office directory (0700),
    /// else the system's temporary directory.
    spool_dir: PathBuf,
    metrics: crate::metrics::Metrics,
    /// Wrong staff tokens lately.
    logins: Mutex<crate::dashboard::auth::LoginLimiter>,
    /// The dashboard's figures (without drill-downs), the ledger's change
    /// stamp they were taken at, and when: reused while the ledger has not
    /// changed, for at most [`DASHBOARD_FRESH_SECS`].
    dashboard: Mutex<Option<DashboardSnapshot>>,
    /// A second connection to the office's ledger for the dashboard's
    /// reads, so that computing its figures never holds up posting (WAL:
    /// readers and the writer do not wait for each other); `None` without
    /// an office directory, then the dashboard reads through `ledger`.
    dashboard_ledger: Option<Mutex<Ledger>>,
}

/// How long the dashboard's figures are reused while the ledger does not
/// change (recency and "active in the last 90 days" move with the clock).
pub const DASHBOARD_FRESH_SECS: u32 = 300;

struct DashboardSnapshot {
    stamp: (i64, u64),
    taken_at: u32,
    data: Arc<crate::dashboard::DashboardData>,
}

impl Office {
    fn new(books: Books, keys: IssuerKeys, config: ServerConfig) -> Result<Arc<Self>, ServerError> {
        let spool_dir = match &config.office_dir {
            Some(dir) => {
                let spool = dir.join("spool");
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                    builder.mode(0o700);
                    builder.create(&spool)?;
                    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700))?;
                }
                #[cfg(not(unix))]
                builder.create(&spool)?;
                spool
            }
            None => std::env::temp_dir(),
        };
        let (store, dashboard_ledger) = match books {
            Books::Sqlite(ledger) => (
                Store::Sqlite {
                    verifier: ledger.verifier(),
                    posting: Mutex::new(Vec::new()),
                    ledger: Mutex::new(ledger),
                },
                config
                    .office_dir
                    .as_ref()
                    .and_then(|d| crate::dir::OfficeDir::new(d).open().ok())
                    .map(|(_, l)| Mutex::new(l)),
            ),
            // The office directory's SQLite ledger is not the books then:
            // the dashboard is not served from it.
            Books::Postgres { url, keys, connections } => (
                Store::Postgres {
                    url,
                    keys,
                    pool: Mutex::new(PgPool::default()),
                    freed: std::sync::Condvar::new(),
                    max: connections.max(1),
                },
                None,
            ),
        };
        Ok(Arc::new(Self {
            store,
            keys,
            uploads: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_uploads.max(1))),
            acks: Arc::new(tokio::sync::Semaphore::new(MAX_SYNC_ACKS)),
            config,
            seen_nonces: Mutex::new(std::collections::HashMap::new()),
            spool_dir,
            metrics: crate::metrics::Metrics::default(),
            logins: Mutex::new(crate::dashboard::auth::LoginLimiter::default()),
            dashboard: Mutex::new(None),
            dashboard_ledger,
        }))
    }
}

/// The system clock, whatever the ledger's clock (requests' freshness).
fn system_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock rolled its database transaction back:
    // the ledger itself is consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Office {
    /// Runs `f` on the books: the SQLite ledger under its lock, or a
    /// PostgreSQL connection of its own — an idle one, a new one while
    /// fewer than the most are open, else the next one given back. A
    /// connection the database closed is not kept.
    fn with_store<T>(&self, f: impl FnOnce(&mut dyn LedgerStore) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        match &self.store {
            Store::Sqlite { ledger, .. } => f(&mut *locked(ledger)),
            Store::Postgres { .. } => self.with_pg(|c| f(c)),
        }
    }

    /// Runs `f` on a connection of the pool (on SQLite books:
    /// [`LedgerError::Unsupported`]).
    fn with_pg<T>(
        &self,
        f: impl FnOnce(&mut tessera_ledger_pg::posting::PgLedger) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let Store::Postgres {
            url,
            keys,
            pool,
            freed,
            max,
        } = &self.store
        else {
            return Err(LedgerError::Unsupported(
                "PostgreSQL connections on SQLite books".into(),
            ));
        };
        let max = *max;
        let mut p = locked(pool);
        let mut conn = loop {
            if let Some(c) = p.idle.pop() {
                // The pool is never held while the books are worked on.
                drop(p);
                break c;
            }
            if p.open < max {
                p.open += 1;
                drop(p);
                match tessera_ledger_pg::posting::PgLedger::open_current(url, keys.clone()) {
                    Ok(c) => break c,
                    Err(e) => {
                        locked(pool).open -= 1;
                        freed.notify_one();
                        return Err(e.into());
                    }
                }
            }
            p = freed.wait(p).unwrap_or_else(std::sync::PoisonError::into_inner);
        };
        let result = f(&mut conn);
        let mut p = locked(pool);
        if conn.is_closed() {
            p.open -= 1;
        } else {
            p.idle.push(conn);
        }
        drop(p);
        freed.notify_one();
        result
    }

    /// Posts one spooled upload of `received` bytes.
    ///
    /// On SQLite: read and verified here when small, beside the other
    /// uploads (what fails to verify is streamed again under the lock,
    /// where it is refused and its exception recorded); then queued and
    /// posted by whichever upload takes the ledger's lock next, together
    /// with every other upload queued by then (one commit to disk for all;
    /// each batch all or nothing on its own). An upload queued before the
    /// lock is taken is posted before it is released, so the outcome is
    /// there once this thread has had the lock.
    ///
    /// On PostgreSQL: verified and posted on a connection of its own, in
    /// one transaction (`tessera_ledger_pg::posting`).
    fn post(&self, mut file: std::fs::File, received: u64, now: u32) -> Result<IngestOutcome, LedgerError> {
        let (ledger, verifier, posting) = match &self.store {
            Store::Sqlite {
                ledger,
                verifier,
                posting,
            } => (ledger, verifier, posting),
            Store::Postgres { .. } => {
                return self.with_store(|s| s.ingest_dyn(&mut std::io::BufReader::new(file), now));
            }
        };
        let ahead = (received <= VERIFY_AHEAD_BYTES)
            .then(|| {
                verifier
                    .verify(
                        std::io::BufReader::with_capacity(64 * 1024, &file),
                        VERIFY_AHEAD_RECORDS,
                    )
                    .ok()
            })
            .flatten();
        let upload = match ahead {
            Some(batch) => Upload::Verified(Box::new(batch)),
            None => {
                use std::io::Seek;
                if let Err(e) = file.rewind() {
                    return Err(LedgerError::Storage(format!("rereading the spooled batch: {e}")));
                }
                Upload::Stream(std::io::BufReader::with_capacity(64 * 1024, file))
            }
        };
        let (sender, outcome) = std::sync::mpsc::channel();
        locked(posting).push((upload, sender));
        {
            let mut ledger = locked(ledger);
            let queued = std::mem::take(&mut *locked(posting));
            if !queued.is_empty() {
                let (uploads, senders): (Vec<_>, Vec<_>) = queued.into_iter().unzip();
                self.metrics.group_posted(uploads.len());
                for (to, result) in senders.into_iter().zip(ledger.ingest_group(uploads, now)) {
                    let _ = to.send(result);
                }
            }
        }
        outcome
            .recv()
            .unwrap_or_else(|_| Err(LedgerError::Storage("the posting of this upload stopped".into())))
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
    books: impl Into<Books>,
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
        serve_on(listener, books, keys, config, shutdown_signal()).await
    })
}

/// A server running on its own thread (benchmarks, embedding in a
/// synchronous program); stopped by [`Running::stop`] or when dropped.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes the requests in flight, and waits.
    ///
    /// # Errors
    /// What the server failed with, if it did.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServerError::Io(std::io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Starts the server on `addr` on a thread of its own and returns once it
/// listens.
///
/// # Errors
/// As [`serve`].
pub fn spawn(
    books: impl Into<Books>,
    keys: IssuerKeys,
    addr: SocketAddr,
    config: ServerConfig,
) -> Result<Running, ServerError> {
    let books = books.into();
    if matches!(config.transport, Transport::PlainLoopback) && !addr.ip().is_loopback() {
        return Err(ServerError::PlainNotLoopback(addr));
    }
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || -> Result<(), ServerError> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    let _ = bound_tx.send(Err(ServerError::Bind { addr, source }));
                    return Ok(());
                }
            };
            let _ = bound_tx.send(listener.local_addr().map_err(ServerError::Io));
            serve_on(listener, books, keys, config, async move {
                let _ = stop_rx.await;
            })
            .await
        })
    });
    match bound_rx.recv() {
        Ok(Ok(addr)) => Ok(Running {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            _ => Err(ServerError::Io(std::io::Error::other("the server did not start"))),
        },
    }
}

/// Serves on an already bound listener until `shutdown` completes.
///
/// # Errors
/// [`ServerError::PlainNotLoopback`] for plain HTTP on a listener that is
/// not on loopback; [`ServerError::Io`] if the listener fails.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    books: impl Into<Books>,
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
    let office = Office::new(books.into(), keys, config)?;
    // Gaps age into exceptions even on a day without settlement (on
    // PostgreSQL each server ages; the aging's lock names each gap once).
    let ager = {
        let office = Arc::clone(&office);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(GAP_AGING_INTERVAL);
            loop {
                tick.tick().await;
                let office = Arc::clone(&office);
                let _ = tokio::task::spawn_blocking(move || {
                    let now = office.now();
                    office.with_store(|s| s.age_gaps(now, tessera_ledger::GAP_AGE_SECS))
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
/// Largest read buffer of one connection.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The peer of a connection, as a request extension.
#[derive(Debug, Clone, Copy)]
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
        // A connection's read buffer is at most 64 KiB (request heads
        // included): memory per connection is bounded whatever the client
        // sends.
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HANDSHAKE_TIMEOUT)
            .max_buf_size(MAX_CONNECTION_BUFFER)
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

/// The routes, for embedding the office in another server (whose
/// transport is then its own; `/metrics` answers only requests that carry
/// a loopback peer, which only this crate's accept loop records).
///
/// # Errors
/// [`ServerError::Io`] if the spool directory cannot be made.
pub fn router(books: impl Into<Books>, keys: IssuerKeys, config: ServerConfig) -> Result<Router, ServerError> {
    Ok(routes(Office::new(books.into(), keys, config)?))
}

fn routes(office: Arc<Office>) -> Router {
    Router::new()
        .route("/v1/batches", post(post_batch))
        .route("/v1/sync", get(get_sync))
        .route("/v1/sync/ack", post(post_sync_ack))
        .route("/v1/authorize", post(post_authorize))
        .route("/metrics", get(get_metrics))
        .route("/dashboard", get(|| async { dashboard_redirect("/dashboard/") }))
        .route("/dashboard/", get(dashboard_page))
        .route("/dashboard/login", get(dashboard_login_form).post(dashboard_login))
        .route("/dashboard/logout", post(dashboard_logout))
        .route("/dashboard/{name}", get(dashboard_page))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such resource: see docs/settlement.md") })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&office), observe))
        .with_state(office)
}

/// The route's name for metrics and logs (a fixed set: no unbounded labels).
fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/batches" => "/v1/batches",
        "/v1/sync" => "/v1/sync",
        "/v1/sync/ack" => "/v1/sync/ack",
        "/v1/authorize" => "/v1/authorize",
        "/metrics" => "/metrics",
        p if p == "/dashboard" || p.starts_with("/dashboard/") => "/dashboard",
        _ => "other",
    }
}

/// Counts every request and writes its log line: method, route, status,
/// terminal (when authenticated), bytes in and out, duration.
async fn observe(State(office): State<Arc<Office>>, request: Request, next: axum::middleware::Next) -> Response {
    let start = std::time::Instant::now();
    let route = route_name(request.uri().path());
    let method = request.method().clone();
    let announced: u64 = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let terminal = response.extensions().get::<Authenticated>().map(|a| a.0);
    let bytes_in = response.extensions().get::<BodyBytes>().map_or(announced, |b| b.0);
    let bytes_out = axum::body::HttpBody::size_hint(response.body()).exact().unwrap_or(0);
    office.metrics.request(route, status, bytes_in, bytes_out);
    if status == 401 {
        office.metrics.unauthenticated(route);
    }
    if office.config.request_log {
        let ms = start.elapsed().as_millis();
        let terminal = terminal.map_or_else(|| "-".to_owned(), |t| t.to_string());
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!(
            "ts={}.{:03} method={method} route={route} status={status} terminal={terminal} bytes_in={bytes_in} bytes_out={bytes_out} ms={ms}",
            wall.as_secs(),
            wall.subsec_millis()
        );
    }
    response
}

/// `GET /metrics`: the counters in the Prometheus text format, to loopback
/// peers only (an exporter or agent on the office machine); `403` to
/// anyone else. They name no card, customer or key.
async fn get_metrics(State(office): State<Arc<Office>>, request: Request) -> Response {
    let loopback = request
        .extensions()
        .get::<Peer>()
        .is_some_and(|p| p.0.ip().is_loopback());
    if !loopback {
        return refuse(StatusCode::FORBIDDEN, "metrics are served to loopback only");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        office.metrics.render(),
    )
        .into_response()
}

/// Adds the dashboard's security headers to an answer.
fn dashboard_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        ("content-security-policy", crate::dashboard::CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(value) {
            h.insert(header::HeaderName::from_static(name), v);
        }
    }
    r
}

fn dashboard_redirect(to: &'static str) -> Response {
    dashboard_headers((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

fn dashboard_html(status: StatusCode, body: String) -> Response {
    dashboard_headers((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

/// The office's staff credentials, read afresh (a new token takes effect
/// at once); `None` when none was made or the file cannot be read.
fn dashboard_staff(office: &Office) -> Option<crate::dashboard::auth::Staff> {
    let dir = office.config.office_dir.as_ref()?;
    match crate::dashboard::auth::Staff::load(dir) {
        Ok(staff) => staff,
        Err(e) => {
            if office.config.request_log {
                eprintln!("dashboard: {e}");
            }
            None
        }
    }
}

/// Whether the request carries a valid dashboard session.
fn dashboard_session(office: &Office, request: &Request) -> bool {
    let Some(staff) = dashboard_staff(office) else {
        return false;
    };
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(crate::dashboard::auth::session_from_cookies)
        .any(|value| staff.session_valid(value, system_now()))
}

async fn dashboard_login_form() -> Response {
    dashboard_html(StatusCode::OK, crate::dashboard::login_page(None))
}

/// The largest login form read.
const MAX_LOGIN_BYTES: usize = 4096;

async fn dashboard_login(State(office): State<Arc<Office>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    if let Err(wait) = office
        .logins
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(started)
    {
        let mut r = dashboard_html(
            StatusCode::TOO_MANY_REQUESTS,
            crate::dashboard::login_page(Some(&format!("Too many wrong tokens: try again in {wait} s."))),
        );
        if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_LOGIN_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return dashboard_html(
                StatusCode::PAYLOAD_TOO_LARGE,
                crate::dashboard::login_page(Some("The login form is too large.")),
            )
        }
    };
    let token = std::str::from_utf8(&body)
        .ok()
        .and_then(|form| form.split('&').find_map(|pair| pair.strip_prefix("token=")))
        .unwrap_or("");
    let staff = dashboard_staff(&office);
    match staff {
        Some(staff) if staff.token_matches(token) => {
            let cookie = crate::dashboard::auth::session_cookie(&staff.new_session(system_now()));
            let mut r = dashboard_redirect("/dashboard/");
            if let Ok(v) = header::HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        staff => {
            office
                .logins
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .failed(started);
            let message = if staff.is_none() {
                "No staff token is set for this office: make one with `tessera office dashboard-token`."
            } else {
                "Wrong staff token."
            };
            dashboard_html(StatusCode::UNAUTHORIZED, crate::dashboard::login_page(Some(message)))
        }
    }
}

async fn dashboard_logout() -> Response {
    let mut r = dashboard_redirect("/dashboard/login");
    if let Ok(v) = header::HeaderValue::from_str(&crate::dashboard::auth::cleared_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn dashboard_page(State(office): State<Arc<Office>>, request: Request) -> Response {
    let name = request
        .uri()
        .path()
        .strip_prefix("/dashboard/")
        .unwrap_or("")
        .to_owned();
    // The stylesheet and the icon carry no data: the login page needs them.
    match name.as_str() {
        "dashboard.css" => {
            return dashboard_headers(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    crate::dashboard::STYLESHEET,
                )
                    .into_response(),
            )
        }
        "favicon.svg" => {
            return dashboard_headers(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "image/svg+xml")],
                    crate::dashboard::FAVICON,
                )
                    .into_response(),
            )
        }
        _ => {}
    }
    if !dashboard_session(&office, &request) {
        return dashboard_redirect("/dashboard/login");
    }
    let name = if name.is_empty() { "index.html".to_owned() } else { name };
    let worker = Arc::clone(&office);
    let page = tokio::task::spawn_blocking(move || match (&worker.dashboard_ledger, &worker.store) {
        (Some(l), _) => dashboard_render(&worker, &*locked(l), &name),
        (None, Store::Sqlite { ledger, .. }) => dashboard_render(&worker, &*locked(ledger), &name),
        (None, Store::Postgres { .. }) => worker.with_pg(|pg| dashboard_render(&worker, pg, &name)),
    })
    .await;
    match page {
        Ok(Ok(Some(page))) => dashboard_html(StatusCode::OK, page.body),
        Ok(Ok(None)) => dashboard_headers(refuse(StatusCode::NOT_FOUND, "no such dashboard page")),
        Ok(Err(e)) => dashboard_headers(ledger_refusal(&e)),
        Err(_) => dashboard_headers(refuse(StatusCode::INTERNAL_SERVER_ERROR, "the dashboard page failed")),
    }
}

/// The dashboard page `name` from `books`: the figures taken once per
/// change of the books (the server's cache, good while their change stamp
/// holds and for [`DASHBOARD_FRESH_SECS`]), a customer's page with its
/// transactions.
fn dashboard_render(
    worker: &Office,
    ledger: &dyn tessera_ledger::Warehouse,
    name: &str,
) -> Result<Option<crate::dashboard::Page>, LedgerError> {
    let now = worker.now();
    let zone = &worker.config.zone;
    let stamp = ledger.change_stamp()?;
    let mut cache = worker
        .dashboard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let data = match cache.as_ref() {
        Some(c) if c.stamp == stamp && now.saturating_sub(c.taken_at) < DASHBOARD_FRESH_SECS => Arc::clone(&c.data),
        _ => {
            // Every figure but the drill-downs, once per change.
            let data = Arc::new(crate::dashboard::collect_for(
                ledger,
                now,
                zone,
                &worker.config.currency,
                Some("index.html"),
            )?);
            *cache = Some(DashboardSnapshot {
                stamp: ledger.change_stamp()?,
                taken_at: now,
                data: Arc::clone(&data),
            });
            data
        }
    };
    drop(cache);
    let key = name.strip_prefix("customer-").and_then(|k| k.strip_suffix(".html"));
    let page = match key {
        Some(key) => match data.customers.iter().find(|c| c.key == key) {
            Some(c) => {
                let mut c = c.clone();
                if let Some(id) = c.customer_id {
                    c.transactions = crate::dashboard::customer_transactions(ledger, zone, id)?;
                }
                Some(crate::dashboard::customer_page_of(&data, zone, &c))
            }
            None => None,
        },
        None => crate::dashboard::page(&data, zone, name),
    };
    Ok(page)
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

/// The `413` answer: it announces the limit, so the till can re-seal its
/// batch to fit (`Journal::split_unacknowledged`).
fn refuse_too_large(limit: u64) -> Response {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        serde_json::json!({ "error": format!("a batch is at most {limit} bytes"), "max_batch_bytes": limit })
            .to_string(),
    )
}

/// An error answer: `{"error": "<one line>"}`.
///
/// A `503` says when to come back (`Retry-After: 5` unless the caller sets
/// its own): the office is busy or its books cannot be reached for now.
fn refuse(status: StatusCode, message: &str) -> Response {
    let line: String = message.lines().collect::<Vec<_>>().join(" ");
    let mut r = json_response(status, serde_json::json!({ "error": line }).to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    r
}

/// Longest wait for the first line (the batch header) of an upload, within
/// its overall deadline: the part a client without keys can make us wait.
const HEADER_DEADLINE: Duration = Duration::from_secs(30);

/// The terminal a request authenticated as (a response extension, for the
/// request log).
#[derive(Debug, Clone, Copy)]
struct Authenticated(u32);

/// Request body bytes the handler read (a response extension).
#[derive(Debug, Clone, Copy)]
struct BodyBytes(u64);

/// Why spooling an upload stopped.
enum SpoolError {
    /// More than the size limit.
    TooLarge,
    /// The overall deadline passed.
    TimedOut,
    /// The body broke off.
    Broken,
    /// The spool file could not be written.
    Io(std::io::Error),
}

/// Spools an authenticated upload into a fresh private file: `first` (what
/// authentication read), then the rest of the body, within `limit` bytes
/// and before `deadline` (one deadline for the whole body: a client
/// trickling bytes does not extend it). The file is made by
/// [`tempfile::tempfile_in`] in `dir`: on Linux an unnamed `O_TMPFILE`,
/// elsewhere a random name created exclusively (`O_EXCL`, so never through
/// a planted symlink) and unlinked at once; mode `0600` either way, and
/// gone when closed, crash included. Returns the file, rewound, and the
/// bytes received.
async fn spool(
    dir: PathBuf,
    first: Vec<u8>,
    body: &mut Body,
    deadline: tokio::time::Instant,
    limit: u64,
) -> Result<(std::fs::File, u64), SpoolError> {
    use tokio::io::AsyncWriteExt;
    let mut received = first.len() as u64;
    if received > limit {
        return Err(SpoolError::TooLarge);
    }
    let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
        .await
        .map_err(|e| SpoolError::Io(std::io::Error::other(e)))?
        .map_err(SpoolError::Io)?;
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, tokio::fs::File::from_std(file));
    out.write_all(&first).await.map_err(SpoolError::Io)?;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(SpoolError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(SpoolError::Broken),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if received > limit {
                        return Err(SpoolError::TooLarge);
                    }
                    out.write_all(&data).await.map_err(SpoolError::Io)?;
                }
            }
        }
    }
    out.flush().await.map_err(SpoolError::Io)?;
    let mut file = out.into_inner().into_std().await;
    tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).map(|_| file)
    })
    .await
    .map_err(|e| SpoolError::Io(std::io::Error::other(e)))?
    .map_err(SpoolError::Io)
    .map(|f| (f, received))
}

async fn post_batch(State(office): State<Arc<Office>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + office.config.upload_deadline;
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
        return refuse_too_large(limit);
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
    // its MAC, checked with the terminal's batch key, before anything is
    // written or the ledger's lock taken. Refusals here write nothing; they
    // are counted (metrics, request log) and that is all.
    let Some(claimed_mac) = claimed_mac else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("a batch upload carries its header MAC in {BATCH_MAC_HEADER}"),
        );
    };
    let header_deadline = deadline.min(tokio::time::Instant::now() + HEADER_DEADLINE);
    let mut first = Vec::new();
    loop {
        if first.contains(&b'\n') {
            break;
        }
        if first.len() > MAX_HEADER_LINE {
            return refuse(StatusCode::BAD_REQUEST, "the batch header line is too long");
        }
        match tokio::time::timeout_at(header_deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    first.extend_from_slice(&data);
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => return refuse(StatusCode::BAD_REQUEST, "the batch body broke off before its header"),
            Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT, "the batch header did not arrive in time"),
        }
    }
    let line = first.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(batch_header) = serde_json::from_slice::<tessera_settlement::batch::Header>(line) else {
        return refuse(StatusCode::BAD_REQUEST, "the first line is not a batch header");
    };
    let terminal_id = batch_header.terminal_id;
    let key = office.keys.terminal_batch_key(terminal_id);
    if !tessera_crypto::ct_eq(&batch_header.mac(&key), &claimed_mac) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the batch header's MAC does not verify: nothing was done",
        );
    }
    let authenticated = |mut r: Response, bytes: u64| {
        r.extensions_mut().insert(Authenticated(terminal_id));
        r.extensions_mut().insert(BodyBytes(bytes));
        r
    };
    // Bounded work per authenticated terminal: an upload slot, waited for
    // a little (a busy minute is a queue, not a storm of retries), or 503.
    let slot_deadline = deadline.min(tokio::time::Instant::now() + office.config.upload_slot_wait);
    let slot = tokio::time::timeout_at(slot_deadline, Arc::clone(&office.uploads).acquire_owned()).await;
    let Ok(Ok(slot)) = slot else {
        office.metrics.upload_busy();
        let r = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the office is busy with other uploads: retry shortly",
        );
        return authenticated(r, first.len() as u64);
    };
    let in_flight = office.metrics.upload_started();
    // Spool first, then lock: a slow client delays nobody else.
    let spooled = spool(office.spool_dir.clone(), first, &mut body, deadline, limit).await;
    let (file, received) = match spooled {
        Ok(f) => f,
        Err(SpoolError::TooLarge) => return authenticated(refuse_too_large(limit), limit),
        Err(SpoolError::TimedOut) => {
            office.metrics.upload_timed_out();
            let secs = office.config.upload_deadline.as_secs();
            return authenticated(
                refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("the batch did not arrive within {secs} s: nothing was done"),
                ),
                0,
            );
        }
        Err(SpoolError::Broken) => {
            return authenticated(
                refuse(StatusCode::BAD_REQUEST, "the batch body broke off: nothing was done"),
                0,
            )
        }
        Err(SpoolError::Io(e)) => {
            return authenticated(
                refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("spooling the batch: {e}")),
                0,
            )
        }
    };
    let now = office.now();
    let worker = {
        let office = Arc::clone(&office);
        tokio::task::spawn_blocking(move || office.post(file, received, now))
    };
    let result = worker.await;
    drop(slot);
    drop(in_flight);
    office.metrics.upload_finished(started.elapsed());
    let response = match result {
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("ingest failed: {e}")),
        Ok(Ok(outcome)) => {
            let status = match outcome.ack.status {
                tessera_settlement::batch::AckStatus::Posted => "posted",
                tessera_settlement::batch::AckStatus::Duplicate => "duplicate",
                tessera_settlement::batch::AckStatus::Held => "held",
            };
            office
                .metrics
                .batch(status, outcome.report.records, outcome.report.posted);
            match serde_json::to_string(&outcome.ack) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Ok(Err(e)) => ledger_refusal(&e),
    };
    authenticated(response, received)
}

/// The refusal for a ledger error; a database that is unreachable or
/// restarting is `503` with `Retry-After: 5` (nothing was done: retry).
fn ledger_refusal(e: &LedgerError) -> Response {
    refuse(ledger_status(e), &e.to_string())
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

/// A refusal with a fixed message (small, unlike a response).
struct Refusal(StatusCode, &'static str);

impl Refusal {
    fn response(&self) -> Response {
        refuse(self.0, self.1)
    }
}

/// A sync or sync-ack request's query, authenticated: terminal, nonce
/// (hex as sent, and raw), time and MAC.
struct SignedQuery {
    terminal_id: u32,
    nonce_hex: String,
    nonce: Vec<u8>,
    time: u32,
    mac: [u8; 16],
}

/// Parses `terminal`, `nonce`, `time` and `mac` from a query. `400` for a
/// missing terminal or a malformed nonce; `401` without time or MAC.
fn signed_query(query: &str) -> Result<SignedQuery, Refusal> {
    let Some(terminal_id) = query_param(query, "terminal").and_then(|t| t.parse::<u32>().ok()) else {
        return Err(Refusal(StatusCode::BAD_REQUEST, "give the terminal: ?terminal=N"));
    };
    let nonce_hex = query_param(query, "nonce").unwrap_or("").to_ascii_lowercase();
    let nonce = match hex::decode(&nonce_hex) {
        Ok(n) if !n.is_empty() && n.len() <= 32 => n,
        _ => return Err(Refusal(StatusCode::BAD_REQUEST, "the nonce is 1 to 32 bytes in hex")),
    };
    let time = query_param(query, "time").and_then(|t| t.parse::<u32>().ok());
    let mac = query_param(query, "mac").and_then(|m| {
        let mut out = [0u8; 16];
        hex::decode_to_slice(m, &mut out).ok().map(|()| out)
    });
    let (Some(time), Some(mac)) = (time, mac) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "the request carries its time and MAC",
        ));
    };
    Ok(SignedQuery {
        terminal_id,
        nonce_hex,
        nonce,
        time,
        mac,
    })
}

impl Office {
    /// The freshness half of request authentication, after the MAC
    /// verified: a time within the window of the office's clock and a nonce
    /// not seen before (in its namespace: sync `b'Q'`, ack `b'A'`,
    /// authorization `b'Z'`) — by this server, and, on PostgreSQL, by any
    /// server of the same books (their shared `request_nonces`).
    async fn fresh(self: &Arc<Self>, q: &SignedQuery, namespace: u8) -> Result<(), Refusal> {
        self.fresh_here(q, namespace)?;
        if !matches!(self.store, Store::Postgres { .. }) {
            return Ok(());
        }
        let mut key = vec![namespace];
        key.extend_from_slice(&q.nonce);
        let (office, terminal_id, wall) = (Arc::clone(self), q.terminal_id, system_now());
        let forget = wall.saturating_sub(2 * tessera_settlement::sync::SYNC_REQUEST_WINDOW_SECS);
        let claimed =
            tokio::task::spawn_blocking(move || office.with_store(|s| s.claim_nonce(terminal_id, &key, wall, forget)))
                .await;
        match claimed {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Refusal(StatusCode::UNAUTHORIZED, "this request was answered already")),
            Ok(Err(_)) | Err(_) => Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the books cannot be reached to check the request: retry",
            )),
        }
    }

    /// [`Office::fresh`] in this server's memory.
    fn fresh_here(&self, q: &SignedQuery, namespace: u8) -> Result<(), Refusal> {
        let wall = system_now();
        if wall.abs_diff(q.time) > tessera_settlement::sync::SYNC_REQUEST_WINDOW_SECS {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "the request's time is too far from the office's clock",
            ));
        }
        let mut seen = self
            .seen_nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| wall.abs_diff(*at) <= 2 * tessera_settlement::sync::SYNC_REQUEST_WINDOW_SECS);
        let mut key = vec![namespace];
        key.extend_from_slice(&q.nonce);
        if seen.insert((q.terminal_id, key), q.time).is_some() {
            return Err(Refusal(StatusCode::UNAUTHORIZED, "this request was answered already"));
        }
        Ok(())
    }
}

async fn get_sync(State(office): State<Arc<Office>>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or("").to_owned();
    let q = match signed_query(&query) {
        Ok(q) => q,
        Err(r) => return r.response(),
    };
    // Authenticated before any work: the terminal's MAC over terminal,
    // time and nonce, a fresh time, a nonce not seen before. Unknown and
    // known terminals get the same refusal.
    let key = office.keys.terminal_batch_key(q.terminal_id);
    if !tessera_crypto::ct_eq(
        &tessera_settlement::sync::request_mac(&key, q.terminal_id, q.time, &q.nonce),
        &q.mac,
    ) {
        return refuse(StatusCode::UNAUTHORIZED, "the sync request's MAC does not verify");
    }
    if let Err(r) = office.fresh(&q, b'Q').await {
        return r.response();
    }
    let terminal_id = q.terminal_id;
    let nonce = q.nonce_hex;
    let worker = tokio::task::spawn_blocking(move || build_sync(&office, terminal_id, nonce));
    let mut response = match worker.await {
        Ok(Ok(data)) => {
            let mut iv = [0u8; 16];
            rand_core::OsRng.fill_bytes(&mut iv);
            let sealed = data.seal(&key, iv);
            match serde_json::to_string(&sealed) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Ok(Err((status, message))) => refuse(status, &message),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("sync failed: {e}")),
    };
    response.extensions_mut().insert(Authenticated(terminal_id));
    response
}

/// Largest sync acknowledgement body.
pub const MAX_SYNC_ACK_BYTES: usize = 4 * 1024 * 1024;
/// Sync acknowledgements read at once (their bodies are read before the
/// MAC over them can be checked).
const MAX_SYNC_ACKS: usize = 4;

fn card_hex(s: &str) -> Option<[u8; 8]> {
    let mut c = [0u8; 8];
    hex::decode_to_slice(s, &mut c).ok().map(|()| c)
}

/// `POST /v1/sync/ack?terminal=N&nonce=HEX&time=T&mac=HEX`: the till lists
/// what it wrote from its feed; the ledger records it for that terminal
/// and stops serving it to it.
async fn post_sync_ack(State(office): State<Arc<Office>>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or("").to_owned();
    let q = match signed_query(&query) {
        Ok(q) => q,
        Err(r) => return r.response(),
    };
    // Cheap refusals first (a stale time), then a bounded body read by a
    // bounded number of requests, then the MAC over it all.
    if system_now().abs_diff(q.time) > tessera_settlement::sync::SYNC_REQUEST_WINDOW_SECS {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the request's time is too far from the office's clock",
        );
    }
    let Ok(_slot) = Arc::clone(&office.acks).try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the office is busy: retry shortly");
    };
    let body = match tokio::time::timeout(
        HEADER_DEADLINE,
        axum::body::to_bytes(request.into_body(), MAX_SYNC_ACK_BYTES),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a sync acknowledgement is at most {MAX_SYNC_ACK_BYTES} bytes"),
            )
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the acknowledgement did not arrive in time",
            )
        }
    };
    let key = office.keys.terminal_batch_key(q.terminal_id);
    let expected = tessera_settlement::sync::ack_mac(&key, q.terminal_id, q.time, &q.nonce, &body);
    if !tessera_crypto::ct_eq(&expected, &q.mac) {
        return refuse(StatusCode::UNAUTHORIZED, "the acknowledgement's MAC does not verify");
    }
    if let Err(r) = office.fresh(&q, b'A').await {
        return r.response();
    }
    let terminal_id = q.terminal_id;
    let authenticated = |mut r: Response| {
        r.extensions_mut().insert(Authenticated(terminal_id));
        r.extensions_mut().insert(BodyBytes(body.len() as u64));
        r
    };
    let Ok(ack) = serde_json::from_slice::<SyncAck>(&body) else {
        return authenticated(refuse(StatusCode::BAD_REQUEST, "not a sync acknowledgement"));
    };
    if ack.format != SYNC_ACK_FORMAT {
        return authenticated(refuse(
            StatusCode::BAD_REQUEST,
            &format!("sync acknowledgement format {:?}", ack.format),
        ));
    }
    let mut deliveries = Vec::new();
    for p in &ack.profiles {
        deliveries.push(card_hex(&p.card_id).map(|c| SyncDelivery::Profile(c, p.version)));
    }
    for u in &ack.unblocks {
        deliveries.push(card_hex(&u.card_id).map(|c| SyncDelivery::Unblock(c, u.seq)));
    }
    for k in &ack.key_updates {
        deliveries.push(card_hex(&k.card_id).map(|c| SyncDelivery::KeyUpdate(c, k.key_version)));
    }
    let Some(deliveries) = deliveries.into_iter().collect::<Option<Vec<_>>>() else {
        return authenticated(refuse(StatusCode::BAD_REQUEST, "a card id is 16 hex digits"));
    };
    let now = office.now();
    let worker = {
        let office = Arc::clone(&office);
        tokio::task::spawn_blocking(move || {
            office.with_store(|ledger| {
                if !terminal_known(ledger, terminal_id)? {
                    return Err(LedgerError::UnknownTerminal(terminal_id));
                }
                ledger.record_sync_deliveries(terminal_id, &deliveries, now)
            })
        })
    };
    let response = match worker.await {
        Ok(Ok(n)) => {
            office.metrics.sync_ack();
            json_response(StatusCode::OK, serde_json::json!({ "recorded": n }).to_string())
        }
        Ok(Err(e @ LedgerError::UnknownTerminal(_))) => {
            refuse(StatusCode::FORBIDDEN, &format!("{e}: nothing recorded"))
        }
        Ok(Err(e)) => ledger_refusal(&e),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("sync ack failed: {e}")),
    };
    authenticated(response)
}

/// `POST /v1/authorize?terminal=N&nonce=HEX&time=T&mac=HEX`: the office
/// decides a card's online request (module docs).
async fn post_authorize(State(office): State<Arc<Office>>, request: Request) -> Response {
    use tessera_settlement::authorize::{
        AuthorizeAnswer, AuthorizeRequest, AUTHORIZE_DEADLINE_MS, MAX_AUTHORIZE_BYTES,
    };
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(AUTHORIZE_DEADLINE_MS);
    let query = request.uri().query().unwrap_or("").to_owned();
    let q = match signed_query(&query) {
        Ok(q) => q,
        Err(r) => return r.response(),
    };
    if system_now().abs_diff(q.time) > tessera_settlement::sync::SYNC_REQUEST_WINDOW_SECS {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the request's time is too far from the office's clock",
        );
    }
    let body =
        match tokio::time::timeout_at(deadline, axum::body::to_bytes(request.into_body(), MAX_AUTHORIZE_BYTES)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("an authorization request is at most {MAX_AUTHORIZE_BYTES} bytes"),
                )
            }
            Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT, "the request did not arrive in time"),
        };
    let key = office.keys.terminal_batch_key(q.terminal_id);
    let expected = tessera_settlement::authorize::request_mac(&key, q.terminal_id, q.time, &q.nonce, &body);
    if !tessera_crypto::ct_eq(&expected, &q.mac) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the authorization request's MAC does not verify",
        );
    }
    if let Err(r) = office.fresh(&q, b'Z').await {
        return r.response();
    }
    let terminal_id = q.terminal_id;
    let authenticated = |mut r: Response| {
        r.extensions_mut().insert(Authenticated(terminal_id));
        r.extensions_mut().insert(BodyBytes(body.len() as u64));
        r
    };
    let parsed = serde_json::from_slice::<AuthorizeRequest>(&body)
        .map_err(|_| "not an authorization request".to_owned())
        .and_then(|r| r.parse());
    let (card_id, key_version, card_request) = match parsed {
        Ok(p) => p,
        Err(e) => return authenticated(refuse(StatusCode::BAD_REQUEST, &e)),
    };
    if card_request.terminal_id != terminal_id {
        return authenticated(refuse(
            StatusCode::BAD_REQUEST,
            "the card's request names another terminal",
        ));
    }
    let now = office.now();
    let worker = {
        let office = Arc::clone(&office);
        let query = tessera_ledger::OnlineQuery {
            terminal_id,
            card_id,
            key_version,
            request: card_request.clone(),
        };
        tokio::task::spawn_blocking(move || {
            office.with_store(|ledger| {
                if !terminal_known(ledger, terminal_id)? {
                    return Err(LedgerError::UnknownTerminal(terminal_id));
                }
                ledger.authorize_online(&query, &office.config.online_policy, now)
            })
        })
    };
    let verdict = match tokio::time::timeout_at(deadline, worker).await {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(e @ LedgerError::UnknownTerminal(_)))) => {
            return authenticated(refuse(StatusCode::FORBIDDEN, &format!("{e}: nothing decided")))
        }
        Ok(Ok(Err(e))) => return authenticated(ledger_refusal(&e)),
        Ok(Err(e)) => {
            return authenticated(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("authorization failed: {e}"),
            ))
        }
        // The books are busy (a large posting): the decision, if it is
        // taken after all, is the one a retry gets.
        Err(_) => {
            let mut r = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the office could not decide in time: retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return authenticated(r);
        }
    };
    let Some(response) =
        crate::authorization::card_answer(&office.keys, &card_id, key_version, card_request.cryptogram, &verdict)
    else {
        return authenticated(refuse(
            StatusCode::BAD_REQUEST,
            &format!("key version {key_version} is not one of the office's"),
        ));
    };
    office.metrics.authorization(verdict.approved);
    let answer = AuthorizeAnswer::new(
        &key,
        terminal_id,
        &q.nonce,
        &card_id,
        &card_request.cryptogram,
        &verdict.code,
        &verdict.message,
        &response,
    );
    authenticated(match serde_json::to_string(&answer) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

fn build_sync(office: &Office, terminal_id: u32, nonce: String) -> Result<SyncData, (StatusCode, String)> {
    let ledger_err = |e: LedgerError| (ledger_status(&e), e.to_string());
    let campaigns = published_campaigns(office).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let read = office
        .with_store(|ledger| {
            if !terminal_known(ledger, terminal_id)? {
                return Ok(None);
            }
            Ok(Some((
                ledger.hotlist()?,
                ledger.profile_updates()?,
                ledger.settled_counters()?,
                ledger.unblocks()?,
                ledger.pending_adjustments()?,
                ledger.card_key_versions()?,
                ledger.cards_below_key_version(office.keys.key_version)?,
                // What this terminal acknowledged writing is not served to
                // it again.
                ledger.sync_delivered(terminal_id)?,
            )))
        })
        .map_err(ledger_err)?;
    let Some((hotlist, updates, settled, unblocks, adjustments, versions, behind, delivered)) = read else {
        return Err((
            StatusCode::FORBIDDEN,
            format!("unknown or revoked terminal {terminal_id}"),
        ));
    };
    let updates: Vec<_> = updates
        .into_iter()
        .filter(|(card, version, _)| !delivered.contains(&SyncDelivery::Profile(*card, *version)))
        .collect();
    let unblocks: Vec<_> = unblocks
        .into_iter()
        .filter(|(card, seq)| !delivered.contains(&SyncDelivery::Unblock(*card, *seq)))
        .collect();
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
    let data = SyncData {
        format: SYNC_FORMAT.into(),
        terminal_id,
        issued_at: office.now(),
        nonce,
        hotlist: SyncHotlist {
            version: hotlist.version,
            cards: hotlist.cards.iter().map(hex::encode_upper).collect(),
            // The issuer's signature, so that the till's local copy can be
            // checked whenever it is loaded (not only in transit).
            signature: tessera_rules::offers::sign_campaigns(&hotlist.signed_bytes(), &keys.issuer)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("signing the hotlist: {e}")))?,
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
        // Every adjustment whose record is not posted yet, to every till: the
        // card takes each once (its adjustment sequence), a till never sends
        // one its journal holds.
        adjustments: adjustments
            .into_iter()
            .map(|a| SyncAdjustment {
                card_id: hex::encode_upper(a.card_id),
                seq: a.seq,
                issuer_macs: mac(
                    &a.card_id,
                    IssuerDecision::Adjust {
                        seq: a.seq,
                        kind: if a.direction == "issuer-debit" { 0x06 } else { 0x05 },
                        points: a.points,
                    },
                ),
                kind: a.direction,
                points: a.points,
            })
            .collect(),
        key_updates: behind
            .into_iter()
            .filter_map(|(card, from)| keys.key_update(&card, from))
            .filter(|ku| !delivered.contains(&SyncDelivery::KeyUpdate(ku.card_id, ku.command.key_version)))
            .map(|ku| SyncKeyUpdate {
                card_id: hex::encode_upper(ku.card_id),
                key_version: ku.command.key_version,
                ciphertext: hex::encode(&ku.command.ciphertext),
                issuer_mac: hex::encode(ku.command.issuer_mac),
            })
            .collect(),
    };
    Ok(data)
}

/// Whether the ledger knows `terminal_id` as an active terminal.
fn terminal_known(ledger: &dyn LedgerStore, terminal_id: u32) -> Result<bool, LedgerError> {
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
