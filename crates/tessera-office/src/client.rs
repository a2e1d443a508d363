//! The terminal's side: upload a sealed batch ([`upload_batch`]) and fetch
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
use tessera_crypto::keys::TerminalBundle;
use tessera_terminal::batch::{Ack, Header};

use crate::server::BATCH_CONTENT_TYPE;
use crate::sync::{SyncData, SYNC_FORMAT};

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
    #[error("invalid office URL {0:?}: give http://HOST:PORT")]
    BadUrl(String),
}

fn endpoint(base_url: &str, path: &str) -> Result<String, ClientError> {
    let base = base_url.trim().trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() <= "https://".len() {
        return Err(ClientError::BadUrl(base_url.to_owned()));
    }
    Ok(format!("{base}{path}"))
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .build()
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
        Err(ureq::Error::Transport(t)) => Attempt::Retry(t.to_string()),
    }
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
        std::thread::sleep(delay);
        delay = (delay * 2).min(retry.max_delay);
    }
}

/// Uploads a batch (as written by `tessera_terminal::batch::write_batch`)
/// to the office at `base_url` (`http://HOST:PORT`) and returns its
/// acknowledgement once the MAC verifies with the bundle's batch key and it
/// names this batch (terminal, number, head).
///
/// # Errors
/// [`ClientError::BadBatch`] if the bytes do not start with a batch header
/// of this terminal; [`ClientError::Refused`] on a `4xx`;
/// [`ClientError::Unavailable`] when the retries are exhausted;
/// [`ClientError::BadAnswer`] for an acknowledgement that is malformed, not
/// genuine or for another batch.
pub fn upload_batch(
    base_url: &str,
    batch: &[u8],
    bundle: &TerminalBundle,
    retry: &RetryPolicy,
) -> Result<Ack, ClientError> {
    let url = endpoint(base_url, "/v1/batches")?;
    let first = batch.split(|b| *b == b'\n').next().unwrap_or_default();
    let header: Header = serde_json::from_slice(first).map_err(|e| ClientError::BadBatch(format!("header: {e}")))?;
    if header.terminal_id != bundle.terminal_id {
        return Err(ClientError::BadBatch(format!(
            "the batch is terminal {}'s, the keys are terminal {}'s",
            header.terminal_id, bundle.terminal_id
        )));
    }
    let agent = agent(retry.request_timeout);
    // The header's MAC up front: the office authenticates the upload before
    // doing any work for it.
    let header_mac = hex::encode(header.mac(&bundle.batch_key));
    let body = with_retry(retry, || {
        classify(
            agent
                .post(&url)
                .set("Content-Type", BATCH_CONTENT_TYPE)
                .set(crate::server::BATCH_MAC_HEADER, &header_mac)
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

/// Fetches the sync document for the bundle's terminal, with a fresh nonce,
/// and checks its MAC, terminal and nonce. Retried like uploads.
///
/// # Errors
/// As [`upload_batch`].
pub fn fetch_sync(base_url: &str, bundle: &TerminalBundle, retry: &RetryPolicy) -> Result<SyncData, ClientError> {
    let mut nonce = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let raw_nonce = nonce;
    let nonce = hex::encode(nonce);
    let agent = agent(retry.request_timeout);
    // Each attempt is a fresh, authenticated request (time and MAC).
    let body = with_retry(retry, || {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let mac = hex::encode(crate::sync::request_mac(
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
        ) {
            Ok(u) => u,
            Err(e) => return Attempt::Fatal(e),
        };
        classify(agent.get(&url).call())
    })?;
    let data: SyncData = serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer(format!("sync: {e}")))?;
    if data.format != SYNC_FORMAT {
        return Err(ClientError::BadAnswer(format!("sync format {:?}", data.format)));
    }
    if !data.verify(&bundle.batch_key) {
        return Err(ClientError::BadAnswer("the sync MAC does not verify".into()));
    }
    if data.terminal_id != bundle.terminal_id || data.nonce != nonce {
        return Err(ClientError::BadAnswer("the sync answer is for another request".into()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            endpoint("http://127.0.0.1:8420/", "/v1/batches").unwrap(),
            "http://127.0.0.1:8420/v1/batches"
        );
        assert!(endpoint("127.0.0.1:8420", "/x").is_err());
        assert!(endpoint("http://", "/x").is_err());
    }

    #[test]
    fn retry_gives_up_after_max_attempts_and_never_retries_refusals() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let mut n = 0;
        let r = with_retry(&policy, || {
            n += 1;
            Attempt::Retry("down".into())
        });
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
