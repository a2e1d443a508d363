//! The office's counters, served as `GET /metrics` in the Prometheus text
//! exposition format (version 0.0.4), and the one-line request log.
//!
//! Nothing here names a card, a customer or a key: routes, statuses,
//! byte counts, durations and terminal ids only.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the upload duration histogram's buckets.
const UPLOAD_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

/// Counters of one server.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Requests answered, by route and status.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Requests refused before authentication (`401`), by route.
    unauthenticated: Mutex<BTreeMap<&'static str, u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Cumulative counts per bucket of [`UPLOAD_BUCKETS`] (and +Inf last).
    upload_buckets: [AtomicU64; UPLOAD_BUCKETS.len() + 1],
    upload_micros: AtomicU64,
    uploads: AtomicU64,
    uploads_in_flight: AtomicI64,
    uploads_busy: AtomicU64,
    uploads_timed_out: AtomicU64,
    /// Batches acknowledged, by status (posted, duplicate, held).
    batches: Mutex<BTreeMap<&'static str, u64>>,
    records: AtomicU64,
    card_transactions_posted: AtomicU64,
    sync_acks: AtomicU64,
    /// Online authorizations answered: approved, declined.
    online_approved: AtomicU64,
    online_declined: AtomicU64,
    /// Commits of posted uploads, and the uploads they carried.
    group_commits: AtomicU64,
    group_uploads: AtomicU64,
}

/// Marks one upload in flight for as long as it lives.
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Counts an answered request.
    pub(crate) fn request(&self, route: &'static str, status: u16, bytes_in: u64, bytes_out: u64) {
        *lock(&self.requests).entry((route, status)).or_default() += 1;
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// Counts a request refused for want of authentication.
    pub(crate) fn unauthenticated(&self, route: &'static str) {
        *lock(&self.unauthenticated).entry(route).or_default() += 1;
    }

    /// An upload starts (authenticated, holding an upload slot).
    pub(crate) fn upload_started(&self) -> InFlight<'_> {
        self.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// An authenticated upload refused `503` for want of a slot.
    pub(crate) fn upload_busy(&self) {
        self.uploads_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload abandoned at its deadline.
    pub(crate) fn upload_timed_out(&self) {
        self.uploads_timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload's whole duration (spooling and ingestion).
    pub(crate) fn upload_finished(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in UPLOAD_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.upload_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.upload_buckets[UPLOAD_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.upload_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.uploads.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch acknowledged.
    pub(crate) fn batch(&self, status: &'static str, records: u32, posted: u32) {
        *lock(&self.batches).entry(status).or_default() += 1;
        self.records.fetch_add(u64::from(records), Ordering::Relaxed);
        self.card_transactions_posted
            .fetch_add(u64::from(posted), Ordering::Relaxed);
    }

    /// Uploads posted together with one commit.
    pub(crate) fn group_posted(&self, uploads: usize) {
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        self.group_uploads
            .fetch_add(u64::try_from(uploads).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A sync acknowledgement recorded.
    pub(crate) fn sync_ack(&self) {
        self.sync_acks.fetch_add(1, Ordering::Relaxed);
    }

    /// An online authorization answered.
    pub(crate) fn authorization(&self, approved: bool) {
        if approved {
            self.online_approved.fetch_add(1, Ordering::Relaxed);
        } else {
            self.online_declined.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every counter.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tessera_http_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE tessera_http_requests_total counter");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "tessera_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_http_unauthenticated_total Requests refused before authentication, by route."
        );
        let _ = writeln!(out, "# TYPE tessera_http_unauthenticated_total counter");
        for (route, n) in lock(&self.unauthenticated).iter() {
            let _ = writeln!(out, "tessera_http_unauthenticated_total{{route=\"{route}\"}} {n}");
        }
        let simple: [(&str, &str, &str, u64); 12] = [
            (
                "tessera_http_received_bytes_total",
                "counter",
                "Request body bytes received.",
                self.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "tessera_http_sent_bytes_total",
                "counter",
                "Response body bytes sent.",
                self.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "tessera_uploads_busy_total",
                "counter",
                "Authenticated uploads refused 503: every upload slot taken.",
                self.uploads_busy.load(Ordering::Relaxed),
            ),
            (
                "tessera_uploads_timed_out_total",
                "counter",
                "Uploads abandoned at their deadline.",
                self.uploads_timed_out.load(Ordering::Relaxed),
            ),
            (
                "tessera_batch_records_total",
                "counter",
                "Journal records in acknowledged batches.",
                self.records.load(Ordering::Relaxed),
            ),
            (
                "tessera_card_transactions_posted_total",
                "counter",
                "Card transactions posted to their card.",
                self.card_transactions_posted.load(Ordering::Relaxed),
            ),
            (
                "tessera_sync_acks_total",
                "counter",
                "Sync acknowledgements recorded.",
                self.sync_acks.load(Ordering::Relaxed),
            ),
            (
                "tessera_online_approved_total",
                "counter",
                "Online authorizations the office approved.",
                self.online_approved.load(Ordering::Relaxed),
            ),
            (
                "tessera_online_declined_total",
                "counter",
                "Online authorizations the office declined.",
                self.online_declined.load(Ordering::Relaxed),
            ),
            (
                "tessera_ledger_commits_total",
                "counter",
                "Ledger commits that posted uploads (several uploads waiting share one).",
                self.group_commits.load(Ordering::Relaxed),
            ),
            (
                "tessera_ledger_committed_uploads_total",
                "counter",
                "Uploads posted by those commits.",
                self.group_uploads.load(Ordering::Relaxed),
            ),
            (
                "tessera_uploads_in_flight",
                "gauge",
                "Authenticated uploads being spooled or ingested now.",
                u64::try_from(self.uploads_in_flight.load(Ordering::Relaxed)).unwrap_or(0),
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
        let _ = writeln!(out, "# HELP tessera_batches_total Batches acknowledged, by status.");
        let _ = writeln!(out, "# TYPE tessera_batches_total counter");
        for (status, n) in lock(&self.batches).iter() {
            let _ = writeln!(out, "tessera_batches_total{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tessera_upload_duration_seconds Authenticated uploads, from the header to the answer."
        );
        let _ = writeln!(out, "# TYPE tessera_upload_duration_seconds histogram");
        for (i, bound) in UPLOAD_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tessera_upload_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                self.upload_buckets[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "tessera_upload_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.upload_buckets[UPLOAD_BUCKETS.len()].load(Ordering::Relaxed)
        );
        let micros = self.upload_micros.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "tessera_upload_duration_seconds_sum {}.{:06}",
            micros / 1_000_000,
            micros % 1_000_000
        );
        let _ = writeln!(
            out,
            "tessera_upload_duration_seconds_count {}",
            self.uploads.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_are_comments_or_samples() {
        let m = Metrics::default();
        m.request("/v1/batches", 200, 10, 20);
        m.unauthenticated("/v1/sync");
        m.upload_finished(Duration::from_millis(70));
        m.batch("posted", 3, 2);
        let text = m.render();
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(line.starts_with("# HELP ") || line.starts_with("# TYPE "), "{line}");
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(name.starts_with("tessera_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.contains("tessera_http_requests_total{route=\"/v1/batches\",status=\"200\"} 1"));
        assert!(text.contains("tessera_upload_duration_seconds_bucket{le=\"0.1\"} 1"));
        assert!(text.contains("tessera_upload_duration_seconds_bucket{le=\"0.05\"} 0"));
        assert!(text.contains("tessera_batch_records_total 3"));
    }
}
