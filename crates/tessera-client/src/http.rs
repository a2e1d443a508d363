//! The HTTP client of the till: upload a sealed batch ([`upload_batch`]) and fetch
//! the back office's news ([`fetch_sync`]), both checked with the
//! terminal's batch key from its [`TerminalBundle`].
//!
//! Uploads are retried with exponential backoff ([`RetryPolicy`]) when the
//! office cannot be reached or answers `5xx`, never on a `4xx` refusal:
//! a batch is sealed once and re-sent unchanged, so a retry after a lost
//! answer is acknowledged `duplicate` and changes nothing.

use std::io::Read;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use tessera_crypto::keys::{OfficeLink, TerminalBundle};
use tessera_settlement::batch::{Ack, Header, BATCH_CONTENT_TYPE, BATCH_MAC_HEADER};

use tessera_settlement::sync::{SyncAck, SyncData, SyncEnvelope};

/// Largest answer read from the office (a sync with a large hotlist).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// When and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Wait before the second attempt; doubled after each failure.
    pub initial_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// No new attempt starts after this much time.
    pub deadline: Duration,
    /// Timeout of one request (connect, send and answer).
    pub request_timeout: Duration,
    /// Told before each wait for another attempt (for a progress line:
    /// "office unreachable, retry 2 of 5 in 4 s"); `None`: nothing told.
    pub on_retry: Option<fn(&RetryNotice)>,
}

/// A failed attempt that will be retried ([`RetryPolicy::on_retry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    /// The number of the coming attempt (2 for the first retry).
    pub next_attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// The wait before it.
    pub delay: Duration,
    /// Why the last attempt failed.
    pub reason: String,
}

impl Default for RetryPolicy {
    /// 100 ms doubling to 5 s, at most 10 attempts within 2 minutes.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: 10,
            deadline: Duration::from_secs(120),
            request_timeout: Duration::from_secs(300),
            on_retry: None,
        }
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub fn once() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The office refused the batch as larger than its limit (`413`), which
    /// it announced: re-seal the batch smaller and send again.
    #[error("the office takes batches of at most {max_batch_bytes} bytes")]
    TooLarge {
        /// The office's limit.
        max_batch_bytes: u64,
    },
    /// The office refused the request (`4xx`): retrying will not help.
    #[error("the office refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The office's one-line reason.
        message: String,
    },
    /// The office could not be reached or kept failing (`5xx`).
    #[error("the office is unavailable after {attempts} attempt(s): {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The answer is not what the contract says, or its MAC does not
    /// verify: it is not acted upon.
    #[error("the office's answer is not genuine or malformed: {0}")]
    BadAnswer(String),
    /// The batch to upload is unreadable.
    #[error("the batch to upload is malformed: {0}")]
    BadBatch(String),
    /// The base URL is unusable.
    #[error("invalid office URL {0:?}: give https://HOST:PORT")]
    BadUrl(String),
    /// The URL and the bundle disagree on how to reach the office: a
    /// pinned bundle speaks HTTPS only; plain HTTP needs a bundle made for
    /// it and a loopback host.
    #[error("{0}")]
    Insecure(String),
    /// The server is not the office: its certificate is not the one the
    /// bundle pins. Nothing was sent.
    #[error("the server's certificate is not the office's pinned certificate: {0}")]
    Untrusted(String),
    /// The TLS configuration could not be made.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Whether `host` (from a URL, IPv6 in brackets) is a loopback address.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `scheme://HOST[:PORT][/...]`.
fn url_host(rest: &str) -> &str {
    let authority = rest.split('/').next().unwrap_or("");
    if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    }
}

/// The URL of `path` at the office, checked against how the bundle
/// reaches it: `https://` with a pinned bundle; `http://` only with a
/// bundle made for plain loopback HTTP and a loopback host.
fn endpoint(base_url: &str, path: &str, office: OfficeLink) -> Result<String, ClientError> {
    let base = base_url.trim().trim_end_matches('/');
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| ClientError::BadUrl(base_url.to_owned()))?;
    let host = url_host(rest);
    if host.is_empty() || host == "[]" {
        return Err(ClientError::BadUrl(base_url.to_owned()));
    }
    match (scheme, office) {
        ("https", OfficeLink::Pinned { .. }) => {}
        ("http", OfficeLink::PlainLoopback) if is_loopback_host(host) => {}
        ("http", OfficeLink::PlainLoopback) => {
            return Err(ClientError::Insecure(format!(
                "plain HTTP goes to a loopback address only, not {host}: use https:// with a pinned bundle"
            )))
        }
        ("http", OfficeLink::Pinned { .. }) => {
            return Err(ClientError::Insecure(
                "this bundle pins the office's certificate: use https://".into(),
            ))
        }
        ("https", OfficeLink::PlainLoopback) => {
            return Err(ClientError::Insecure(
                "this bundle pins no office certificate (it is for plain HTTP on loopback): export a pinned one".into(),
            ))
        }
        _ => return Err(ClientError::BadUrl(base_url.to_owned())),
    }
    Ok(format!("{base}{path}"))
}

fn agent(timeout: Duration, office: OfficeLink) -> Result<ureq::Agent, ClientError> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10).min(timeout))
        .timeout(timeout);
    if let OfficeLink::Pinned { cert_sha256 } = office {
        let config = crate::tls::pinned_client_config(cert_sha256).map_err(|e| ClientError::Tls(e.to_string()))?;
        builder = builder.tls_config(config);
    }
    Ok(builder.build())
}

fn read_answer(resp: ureq::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    resp.into_reader()
        .take(MAX_ANSWER)
        .read_to_end(&mut out)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(out)
}

fn refusal_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect()
        })
}

enum Attempt {
    Done(Vec<u8>),
    Retry(String),
    Fatal(ClientError),
}

fn classify(result: Result<ureq::Response, ureq::Error>) -> Attempt {
    match result {
        Ok(resp) => match read_answer(resp) {
            Ok(body) => Attempt::Done(body),
            Err(e) => Attempt::Retry(e),
        },
        Err(ureq::Error::Status(status, resp)) => {
            let body = read_answer(resp).unwrap_or_default();
            let message = refusal_message(&body);
            let limit = (status == 413)
                .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v.get("max_batch_bytes").and_then(serde_json::Value::as_u64));
            if let Some(max_batch_bytes) = limit {
                return Attempt::Fatal(ClientError::TooLarge { max_batch_bytes });
            }
            if status >= 500 {
                Attempt::Retry(format!("{status}: {message}"))
            } else {
                Attempt::Fatal(ClientError::Refused { status, message })
            }
        }
        Err(ureq::Error::Transport(t)) if untrusted_certificate(&t) => {
            Attempt::Fatal(ClientError::Untrusted(t.to_string()))
        }
        Err(ureq::Error::Transport(t)) => Attempt::Retry(t.to_string()),
    }
}

/// Whether a transport failure is the pinned-certificate check refusing the
/// server (retrying would not help: it is not the office).
fn untrusted_certificate(t: &ureq::Transport) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = cause {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map_or(e, |i| i as &(dyn std::error::Error + 'static));
        if matches!(
            inner.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        cause = e.source();
    }
    false
}

fn with_retry(retry: &RetryPolicy, mut attempt: impl FnMut() -> Attempt) -> Result<Vec<u8>, ClientError> {
    let start = Instant::now();
    let mut delay = retry.initial_delay;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match attempt() {
            Attempt::Done(body) => return Ok(body),
            Attempt::Fatal(e) => return Err(e),
            Attempt::Retry(why) => why,
        };
        if attempts >= retry.max_attempts.max(1) || start.elapsed() + delay > retry.deadline {
            return Err(ClientError::Unavailable { attempts, last });
        }
        if let Some(tell) = retry.on_retry {
            tell(&RetryNotice {
                next_attempt: attempts + 1,
                max_attempts: retry.max_attempts.max(1),
                delay,
                reason: last.clone(),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(retry.max_delay);
    }
}

/// Uploads a batch (as written by `tessera_settlement::batch::write_batch`)
/// to the office at `base_url` (`https://HOST:PORT`, accepting only the
/// certificate the bundle pins; `http://` only to a loopback host with a
/// bundle made for plain HTTP) and returns its
/// acknowledgement once the MAC verifies with the bundle's batch key and it
/// names this batch (terminal, number, head).
///
/// # Errors
/// [`ClientError::BadUrl`] or [`ClientError::Insecure`] for a URL the
/// bundle does not allow; [`ClientError::BadBatch`] if the bytes do not
/// start with a batch header of this terminal; [`ClientError::Refused`] on a `4xx`;
/// [`ClientError::Unavailable`] when the retries are exhausted;
/// [`ClientError::BadAnswer`] for an acknowledgement that is malformed, not
/// genuine or for another batch.
pub fn upload_batch(
    base_url: &str,
    batch: &[u8],
    bundle: &TerminalBundle,
    retry: &RetryPolicy,
) -> Result<Ack, ClientError> {
    let url = endpoint(base_url, "/v1/batches", bundle.office)?;
    let first = batch.split(|b| *b == b'\n').next().unwrap_or_default();
    let header: Header = serde_json::from_slice(first).map_err(|e| ClientError::BadBatch(format!("header: {e}")))?;
    if header.terminal_id != bundle.terminal_id {
        return Err(ClientError::BadBatch(format!(
            "the batch is terminal {}'s, the keys are terminal {}'s",
            header.terminal_id, bundle.terminal_id
        )));
    }
    let agent = agent(retry.request_timeout, bundle.office)?;
    // The header's MAC up front: the office authenticates the upload before
    // doing any work for it.
    let header_mac = hex::encode(header.mac(&bundle.batch_key));
    let body = with_retry(retry, || {
        classify(
            agent
                .post(&url)
                .set("Content-Type", BATCH_CONTENT_TYPE)
                .set(BATCH_MAC_HEADER, &header_mac)
                .send_bytes(batch),
        )
    })?;
    let ack: Ack =
        serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer(format!("acknowledgement: {e}")))?;
    if !ack.verify(&bundle.batch_key) {
        return Err(ClientError::BadAnswer(
            "the acknowledgement's MAC does not verify".into(),
        ));
    }
    if ack.terminal_id != header.terminal_id
        || ack.batch_no != header.batch_no
        || !ack.head.eq_ignore_ascii_case(&header.head)
    {
        return Err(ClientError::BadAnswer(format!(
            "the acknowledgement is for terminal {} batch {}, not terminal {} batch {}",
            ack.terminal_id, ack.batch_no, header.terminal_id, header.batch_no
        )));
    }
    Ok(ack)
}

/// Fetches the sync feed for the bundle's terminal, with a fresh nonce,
/// checks its MAC, terminal and nonce, and decrypts it. Retried like
/// uploads.
///
/// # Errors
/// As [`upload_batch`].
pub fn fetch_sync(base_url: &str, bundle: &TerminalBundle, retry: &RetryPolicy) -> Result<SyncData, ClientError> {
    let mut nonce = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let raw_nonce = nonce;
    let nonce = hex::encode(nonce);
    endpoint(base_url, "/v1/sync", bundle.office)?;
    let agent = agent(retry.request_timeout, bundle.office)?;
    // Each attempt is a fresh, authenticated request (time and MAC).
    let body = with_retry(retry, || {
        let time = unix_now();
        let mac = hex::encode(tessera_settlement::sync::request_mac(
            &bundle.batch_key,
            bundle.terminal_id,
            time,
            &raw_nonce,
        ));
        let url = match endpoint(
            base_url,
            &format!(
                "/v1/sync?terminal={}&nonce={nonce}&time={time}&mac={mac}",
                bundle.terminal_id
            ),
            bundle.office,
        ) {
            Ok(u) => u,
            Err(e) => return Attempt::Fatal(e),
        };
        classify(agent.get(&url).call())
    })?;
    let sealed: SyncEnvelope =
        serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer(format!("sync: {e}")))?;
    sealed
        .open(&bundle.batch_key, bundle.terminal_id, &nonce)
        .map_err(|e| ClientError::BadAnswer(e.to_string()))
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// The URL of a request to `path` authenticated as sync acknowledgements
/// and authorization requests are: the query `terminal`, a fresh 16-byte
/// `nonce`, `time` and `mac` = `mac(time, nonce)` under the bundle's batch
/// key; and the nonce, to check the answer against.
fn signed_url(
    base_url: &str,
    bundle: &TerminalBundle,
    path: &str,
    mac: impl FnOnce(u32, &[u8]) -> [u8; 16],
) -> Result<(String, [u8; 16]), ClientError> {
    let mut nonce = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let time = unix_now();
    let mac = hex::encode(mac(time, &nonce));
    let url = endpoint(
        base_url,
        &format!(
            "{path}?terminal={}&nonce={}&time={time}&mac={mac}",
            bundle.terminal_id,
            hex::encode(nonce)
        ),
        bundle.office,
    )?;
    Ok((url, nonce))
}

/// Tells the office what the till wrote from a sync feed
/// (`POST /v1/sync/ack`, MAC'd like the sync request with the body bound
/// in), so it stops serving those items to this terminal. Returns how many
/// deliveries were new to the office. Retried like uploads; each attempt
/// is a fresh request (time, nonce, MAC).
///
/// # Errors
/// As [`upload_batch`]; [`ClientError::BadAnswer`] for an answer that is
/// not the contract's.
pub fn ack_sync(
    base_url: &str,
    bundle: &TerminalBundle,
    ack: &SyncAck,
    retry: &RetryPolicy,
) -> Result<u64, ClientError> {
    endpoint(base_url, "/v1/sync/ack", bundle.office)?;
    let body = serde_json::to_vec(ack).map_err(|e| ClientError::BadBatch(e.to_string()))?;
    let agent = agent(retry.request_timeout, bundle.office)?;
    let answer = with_retry(retry, || {
        let (url, _) = match signed_url(base_url, bundle, "/v1/sync/ack", |time, nonce| {
            tessera_settlement::sync::ack_mac(&bundle.batch_key, bundle.terminal_id, time, nonce, &body)
        }) {
            Ok(u) => u,
            Err(e) => return Attempt::Fatal(e),
        };
        classify(
            agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_bytes(&body),
        )
    })?;
    serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("recorded").and_then(serde_json::Value::as_u64))
        .ok_or_else(|| ClientError::BadAnswer("the sync acknowledgement's answer".into()))
}

/// Asks the office for its decision on a card's online request
/// (`POST /v1/authorize`, MAC'd with the bundle's batch key, the body bound
/// in) and returns its answer once its MAC verifies and it answers this
/// request. Attempts until `timeout` has passed (a `503` or a lost
/// connection is tried again while time remains); each attempt is a fresh
/// request, and the office gives a request it decided before the same
/// decision.
///
/// # Errors
/// As [`upload_batch`]; [`ClientError::Unavailable`] when no answer came
/// in time; [`ClientError::BadAnswer`] for an answer that is not genuine
/// or for another request.
pub fn authorize(
    base_url: &str,
    bundle: &TerminalBundle,
    card_id: &tessera_protocol::messages::CardId,
    key_version: u8,
    request: &tessera_protocol::messages::AuthorizationRequest,
    timeout: Duration,
) -> Result<tessera_terminal::till::OnlineAnswer, ClientError> {
    use tessera_settlement::authorize::{AuthorizeAnswer, AuthorizeRequest};
    endpoint(base_url, "/v1/authorize", bundle.office)?;
    let body = serde_json::to_vec(&AuthorizeRequest::new(card_id, key_version, request))
        .map_err(|e| ClientError::BadBatch(e.to_string()))?;
    let agent = agent(timeout, bundle.office)?;
    let retry = RetryPolicy {
        max_attempts: u32::MAX,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        deadline: timeout,
        request_timeout: timeout,
        on_retry: None,
    };
    let mut last_nonce = [0u8; 16];
    let answer = with_retry(&retry, || {
        let (url, nonce) = match signed_url(base_url, bundle, "/v1/authorize", |time, nonce| {
            tessera_settlement::authorize::request_mac(&bundle.batch_key, bundle.terminal_id, time, nonce, &body)
        }) {
            Ok(u) => u,
            Err(e) => return Attempt::Fatal(e),
        };
        last_nonce = nonce;
        classify(
            agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_bytes(&body),
        )
    })?;
    let a: AuthorizeAnswer =
        serde_json::from_slice(&answer).map_err(|_| ClientError::BadAnswer("not an authorization answer".into()))?;
    let response = a
        .check(&bundle.batch_key, bundle.terminal_id, &last_nonce, card_id, request)
        .map_err(ClientError::BadAnswer)?;
    Ok(tessera_terminal::till::OnlineAnswer {
        code: a.code,
        message: a.message,
        response,
    })
}

/// The office over HTTPS as a till's [`OnlineAuthorizer`]
/// (`tessera_terminal::till::TillTap::use_online`).
///
/// [`OnlineAuthorizer`]: tessera_terminal::till::OnlineAuthorizer
pub struct OfficeAuthorizer {
    /// The office's base URL.
    pub base_url: String,
    /// The till's bundle (its batch key authenticates the request).
    pub bundle: TerminalBundle,
}

impl tessera_terminal::till::OnlineAuthorizer for OfficeAuthorizer {
    fn authorize(
        &mut self,
        card_id: &tessera_protocol::messages::CardId,
        key_version: u8,
        request: &tessera_protocol::messages::AuthorizationRequest,
        timeout: Duration,
    ) -> Result<tessera_terminal::till::OnlineAnswer, String> {
        authorize(&self.base_url, &self.bundle, card_id, key_version, request, timeout).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_bundle_and_plain_http_stays_on_loopback() {
        let plain = OfficeLink::PlainLoopback;
        let pinned = OfficeLink::Pinned { cert_sha256: [1; 32] };
        assert_eq!(
            endpoint("http://127.0.0.1:8420/", "/v1/batches", plain).unwrap(),
            "http://127.0.0.1:8420/v1/batches"
        );
        assert!(endpoint("http://localhost:8420", "/x", plain).is_ok());
        assert!(endpoint("http://[::1]:8420", "/x", plain).is_ok());
        assert!(endpoint("http://127.9.9.9", "/x", plain).is_ok());
        assert!(matches!(
            endpoint("http://10.0.0.1:8420", "/x", plain),
            Err(ClientError::Insecure(_))
        ));
        assert!(matches!(
            endpoint("http://office.example:8420", "/x", plain),
            Err(ClientError::Insecure(_))
        ));
        assert!(matches!(
            endpoint("http://127.0.0.1:8420", "/x", pinned),
            Err(ClientError::Insecure(_))
        ));
        assert!(matches!(
            endpoint("https://office.example:8420", "/x", plain),
            Err(ClientError::Insecure(_))
        ));
        assert!(endpoint("https://office.example:8420", "/x", pinned).is_ok());
        assert!(endpoint("https://[2001:db8::1]:8420", "/x", pinned).is_ok());
        assert!(endpoint("127.0.0.1:8420", "/x", pinned).is_err());
        assert!(endpoint("https://", "/x", pinned).is_err());
        assert!(endpoint("ftp://127.0.0.1", "/x", plain).is_err());
    }

    #[test]
    fn retry_gives_up_after_max_attempts_and_never_retries_refusals() {
        static TOLD: std::sync::Mutex<Vec<(u32, u32)>> = std::sync::Mutex::new(Vec::new());
        fn tell(n: &RetryNotice) {
            if let Ok(mut t) = TOLD.lock() {
                t.push((n.next_attempt, n.max_attempts));
            }
        }
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_attempts: 3,
            on_retry: Some(tell),
            ..RetryPolicy::default()
        };
        let mut n = 0;
        let r = with_retry(&policy, || {
            n += 1;
            Attempt::Retry("down".into())
        });
        // Each retry is told before its wait, counted: 2 of 3, 3 of 3.
        assert_eq!(*TOLD.lock().unwrap(), vec![(2, 3), (3, 3)]);
        assert!(matches!(r, Err(ClientError::Unavailable { attempts: 3, .. })));
        assert_eq!(n, 3);
        let mut n = 0;
        let r = with_retry(&policy, || {
            n += 1;
            Attempt::Fatal(ClientError::Refused {
                status: 401,
                message: "bad".into(),
            })
        });
        assert!(matches!(r, Err(ClientError::Refused { status: 401, .. })));
        assert_eq!(n, 1);
    }
}
