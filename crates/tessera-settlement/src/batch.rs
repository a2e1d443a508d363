//! Settlement batches: a sealed range of a terminal's journal, as it travels
//! to the back office (over HTTP or as a file), and the back office's
//! acknowledgement.
//!
//! # Format (JSON Lines, version 1)
//! 1. a header object: `{"type":"header","format":"tessera-batch","version":1,
//!    "terminal_id","batch_no","seq_from","seq_to","record_count",
//!    "prev_head","head","totals","sealed_at"}`;
//! 2. one line per journal record: `{"type":"record","seq","body","prev_hash","hash"}`
//!    where `body` is the exact text the journal hashed;
//! 3. a trailer `{"type":"mac","mac"}`: AES-CMAC under the terminal's batch
//!    key of `"TB" 01 ‖ SHA-256(canonical header)`.
//!
//! The header commits to every record through the hash chain (`prev_head`
//! → … → `head`), and the MAC commits to the header, so the MAC proves the
//! terminal's key and the chain proves the records. Readers stream: a
//! million-record batch is checked record by record in constant memory.
//!
//! The acknowledgement ([`Ack`]) is MAC'd with the same key, so a terminal
//! marks its records settled only on a genuine answer.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tessera_crypto::{cmac, ct_eq, Key};

use crate::record::{Entry, RawRecord};

/// Name of the format in the header.
pub const FORMAT: &str = "tessera-batch";
/// Version of the format.
pub const VERSION: u32 = 1;
/// The HTTP content type of a batch upload.
pub const BATCH_CONTENT_TYPE: &str = "application/x-ndjson";
/// The HTTP header that authenticates a batch upload before any work: the
/// batch header's MAC under the terminal's batch key, hex (the same MAC as
/// the batch's last line, docs/settlement.md).
pub const BATCH_MAC_HEADER: &str = "tessera-batch-mac";
/// Longest line a reader accepts (a record body is well under 4 KiB).
pub const MAX_LINE: usize = 64 * 1024;

/// Errors reading or checking a batch. A batch with any of them is not
/// posted: the office refuses it whole (and the till keeps its records to
/// send again). [`BatchError::BadMac`] and [`BatchError::BrokenChain`] mean
/// the bytes are not what the till sealed (wrong key, edited, forged);
/// [`BatchError::UnsupportedVersion`] needs the office upgraded;
/// [`BatchError::Io`] a cut-off transfer, to be sent again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The bytes are not a batch (malformed JSON, wrong format or order).
    #[error("malformed batch: {0}")]
    Malformed(String),
    /// The batch was written by a newer version.
    #[error("batch format version {0} is not supported")]
    UnsupportedVersion(u32),
    /// The MAC does not verify: wrong key or altered header.
    #[error("batch MAC does not verify")]
    BadMac,
    /// The records do not chain from `prev_head` to `head`.
    #[error("batch chain broken at record {seq}: {why}")]
    BrokenChain {
        /// The record.
        seq: u32,
        /// What is wrong.
        why: String,
    },
    /// Reading failed.
    #[error("reading the batch: {0}")]
    Io(#[from] std::io::Error),
    /// A record to write does not parse as a journal record body.
    #[error("record {seq} cannot be written into a batch: {why}")]
    CorruptRecord {
        /// The record.
        seq: u32,
        /// What is wrong.
        why: String,
    },
}

/// Count and points of one transaction type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Total {
    /// Number of card transactions.
    pub count: u64,
    /// Points moved.
    pub points: u64,
}

/// The batch header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always `"header"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The terminal.
    pub terminal_id: u32,
    /// Batch number: from 1, gapless per terminal.
    pub batch_no: u32,
    /// First journal record.
    pub seq_from: u32,
    /// Last journal record.
    pub seq_to: u32,
    /// Number of records (`seq_to - seq_from + 1`).
    pub record_count: u32,
    /// Hash of the journal record before `seq_from`, hex (zeros for the first).
    pub prev_head: String,
    /// Hash of `seq_to`, hex: the chain head.
    pub head: String,
    /// Card transactions (completion and recovered records) per type.
    pub totals: BTreeMap<String, Total>,
    /// When the batch was sealed.
    pub sealed_at: u32,
}

impl Header {
    fn canonical(&self) -> Vec<u8> {
        // Struct fields serialize in declaration order and totals is a
        // BTreeMap: one encoding per header.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The MAC of this header under a batch key.
    pub fn mac(&self, key: &Key) -> [u8; 16] {
        let digest: [u8; 32] = Sha256::digest(self.canonical()).into();
        let mut input = b"TB\x01".to_vec();
        input.extend_from_slice(&digest);
        cmac(key, &input)
    }
}

/// One record line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLine {
    /// Always `"record"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Sequence number.
    pub seq: u32,
    /// The exact text the journal hashed: `{"seq","terminal_id","entry"}`.
    pub body: String,
    /// Previous record's hash, hex.
    pub prev_hash: String,
    /// This record's hash, hex.
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MacLine {
    #[serde(rename = "type")]
    kind: String,
    mac: String,
}

/// A sealed range of a terminal's journal: what one batch carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRange {
    /// Batch number, from 1, gapless.
    pub batch_no: u32,
    /// First record.
    pub seq_from: u32,
    /// Last record.
    pub seq_to: u32,
    /// Hash of the record before `seq_from` (zeros for the first).
    pub prev_head: [u8; 32],
    /// Hash of `seq_to`.
    pub head: [u8; 32],
    /// When it was sealed.
    pub sealed_at: u32,
    /// When the back office acknowledged it.
    pub acked_at: Option<u32>,
}

/// Writes the records of a sealed range as a batch of `terminal_id`,
/// MAC'd with its batch key: the header (with the per-type totals computed
/// from the records), one line per record, the MAC trailer.
///
/// `rows` are the range's records as the journal stored them, in order.
///
/// # Errors
/// [`BatchError::CorruptRecord`] for a body that is not a journal record,
/// [`BatchError::Io`] when writing fails.
pub fn write_records(
    terminal_id: u32,
    key: &Key,
    range: &SealedRange,
    rows: &[RawRecord],
    out: &mut impl Write,
) -> Result<(), BatchError> {
    let mut totals: BTreeMap<String, Total> = BTreeMap::new();
    for (seq, body, _, _) in rows {
        let b: Body = serde_json::from_str(body).map_err(|e| BatchError::CorruptRecord {
            seq: *seq,
            why: e.to_string(),
        })?;
        if let (Some(delta), Some(t)) = (b.entry.delta(), b.entry.tx_type.as_ref()) {
            let x = totals.entry(t.clone()).or_default();
            x.count += 1;
            x.points += delta.unsigned_abs();
        }
    }
    let header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        version: VERSION,
        terminal_id,
        batch_no: range.batch_no,
        seq_from: range.seq_from,
        seq_to: range.seq_to,
        record_count: range.seq_to - range.seq_from + 1,
        prev_head: hex::encode(range.prev_head),
        head: hex::encode(range.head),
        totals,
        sealed_at: range.sealed_at,
    };
    out.write_all(&header.canonical())?;
    out.write_all(b"\n")?;
    for (seq, body, prev, hash) in rows {
        let (seq, body, prev, hash) = (*seq, body.clone(), prev, hash);
        let line = RecordLine {
            kind: "record".into(),
            seq,
            body,
            prev_hash: hex::encode(prev),
            hash: hex::encode(hash),
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    let mac = MacLine {
        kind: "mac".into(),
        mac: hex::encode(header.mac(key)),
    };
    serde_json::to_writer(&mut *out, &mac).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

#[derive(Deserialize)]
struct Body {
    seq: u32,
    terminal_id: u32,
    entry: Entry,
}

/// A verified record, as the reader hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Sequence number.
    pub seq: u32,
    /// The journal entry.
    pub entry: Entry,
    /// Its hash.
    pub hash: [u8; 32],
}

/// Streams a batch: the header first ([`BatchReader::open`]), then the
/// records one by one, each checked against the chain, and finally the MAC
/// ([`BatchReader::finish`]). Nothing read may be acted on before `finish`
/// succeeds.
pub struct BatchReader<R: BufRead> {
    input: R,
    header: Header,
    prev: [u8; 32],
    next_seq: u32,
    line: Vec<u8>,
}

fn unhex32(s: &str, what: &str) -> Result<[u8; 32], BatchError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| BatchError::Malformed(format!("{what} is not 32 hex bytes")))?;
    Ok(out)
}

impl<R: BufRead> BatchReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    /// [`BatchError::Malformed`], [`BatchError::UnsupportedVersion`],
    /// [`BatchError::Io`].
    pub fn open(mut input: R) -> Result<Self, BatchError> {
        let mut line = Vec::new();
        if !read_line(&mut input, &mut line)? {
            return Err(BatchError::Malformed("empty".into()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&line).map_err(|e| BatchError::Malformed(format!("header: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT)
            || v.get("type").and_then(|t| t.as_str()) != Some("header")
        {
            return Err(BatchError::Malformed("not a Tessera batch".into()));
        }
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(1) => {}
            Some(n) => return Err(BatchError::UnsupportedVersion(u32::try_from(n).unwrap_or(u32::MAX))),
            None => return Err(BatchError::Malformed("no version".into())),
        }
        let header: Header = serde_json::from_value(v).map_err(|e| BatchError::Malformed(format!("header: {e}")))?;
        if header.seq_from == 0
            || header.seq_to < header.seq_from
            || header.record_count != header.seq_to - header.seq_from + 1
            || header.batch_no == 0
        {
            return Err(BatchError::Malformed("inconsistent header ranges".into()));
        }
        let prev = unhex32(&header.prev_head, "prev_head")?;
        unhex32(&header.head, "head")?;
        let next_seq = header.seq_from;
        Ok(Self {
            input,
            header,
            prev,
            next_seq,
            line,
        })
    }

    /// The header (not yet authenticated: see [`BatchReader::finish`]).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next record, checked against the chain; `None` after the last.
    ///
    /// # Errors
    /// [`BatchError::Malformed`] or [`BatchError::BrokenChain`].
    pub fn next_record(&mut self) -> Result<Option<BatchRecord>, BatchError> {
        if self.next_seq > self.header.seq_to {
            return Ok(None);
        }
        let seq = self.next_seq;
        if !read_line(&mut self.input, &mut self.line)? {
            return Err(BatchError::Malformed(format!("ends before record {seq}")));
        }
        let r: RecordLine =
            serde_json::from_slice(&self.line).map_err(|e| BatchError::Malformed(format!("record {seq}: {e}")))?;
        let broken = |why: &str| BatchError::BrokenChain { seq, why: why.into() };
        if r.kind != "record" || r.seq != seq {
            return Err(broken("out of order"));
        }
        let prev_hash = unhex32(&r.prev_hash, "prev_hash")?;
        let hash = unhex32(&r.hash, "hash")?;
        if prev_hash != self.prev {
            return Err(broken("does not link to the previous record"));
        }
        let mut h = Sha256::new();
        h.update(self.prev);
        h.update(r.body.as_bytes());
        let computed: [u8; 32] = h.finalize().into();
        if computed != hash {
            return Err(broken("content does not match its hash"));
        }
        let body: Body =
            serde_json::from_str(&r.body).map_err(|e| BatchError::Malformed(format!("record {seq}: {e}")))?;
        if body.seq != seq || body.terminal_id != self.header.terminal_id {
            return Err(broken("record of another place"));
        }
        self.prev = hash;
        self.next_seq += 1;
        Ok(Some(BatchRecord {
            seq,
            entry: body.entry,
            hash,
        }))
    }

    /// After the last record: checks the chain head and the MAC, and that
    /// nothing follows.
    ///
    /// # Errors
    /// [`BatchError::BrokenChain`], [`BatchError::BadMac`],
    /// [`BatchError::Malformed`].
    pub fn finish(mut self, key: &Key) -> Result<Header, BatchError> {
        if self.next_seq <= self.header.seq_to {
            return Err(BatchError::Malformed("records left unread".into()));
        }
        if hex::encode(self.prev) != self.header.head.to_lowercase() {
            return Err(BatchError::BrokenChain {
                seq: self.header.seq_to,
                why: "chain does not end at the head".into(),
            });
        }
        if !read_line(&mut self.input, &mut self.line)? {
            return Err(BatchError::Malformed("no MAC".into()));
        }
        let m: MacLine =
            serde_json::from_slice(&self.line).map_err(|e| BatchError::Malformed(format!("MAC line: {e}")))?;
        let mut mac = [0u8; 16];
        hex::decode_to_slice(&m.mac, &mut mac).map_err(|_| BatchError::Malformed("MAC is not 16 hex bytes".into()))?;
        if m.kind != "mac" || !ct_eq(&mac, &self.header.mac(key)) {
            return Err(BatchError::BadMac);
        }
        if read_line(&mut self.input, &mut self.line)? {
            return Err(BatchError::Malformed("data after the MAC".into()));
        }
        Ok(self.header)
    }
}

/// Reads one line (without the newline) into `buf`; `false` at end of
/// input. Lines longer than [`MAX_LINE`] are refused.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<bool, BatchError> {
    buf.clear();
    let mut limited = std::io::Read::take(&mut *input, MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(BatchError::Malformed("line too long".into()));
    }
    Ok(true)
}

/// What the back office did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckStatus {
    /// Verified and posted.
    Posted,
    /// Already posted earlier: nothing changed.
    Duplicate,
    /// Verified and stored, waiting for an earlier batch of the terminal.
    Held,
}

/// The back office's acknowledgement of a batch, MAC'd with the terminal's
/// batch key over `"TA" 01 ‖ terminal id ‖ batch no ‖ head ‖ status`, and,
/// when `missing_from` is given, `‖ missing_from` (4 bytes, big-endian).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The terminal.
    pub terminal_id: u32,
    /// The batch.
    pub batch_no: u32,
    /// Its chain head, hex.
    pub head: String,
    /// What happened.
    pub status: AckStatus,
    /// Held because the office lacks batches from this number on (lost in
    /// transit or in a storage rollback): the till re-sends them from its
    /// journal (`tessera_terminal::batch::resend_ranges`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_from: Option<u32>,
    /// The MAC, hex.
    pub mac: String,
}

impl Ack {
    fn input(terminal_id: u32, batch_no: u32, head: &str, status: AckStatus, missing_from: Option<u32>) -> Vec<u8> {
        let mut v = b"TA\x01".to_vec();
        v.extend_from_slice(&terminal_id.to_be_bytes());
        v.extend_from_slice(&batch_no.to_be_bytes());
        v.extend_from_slice(head.to_lowercase().as_bytes());
        v.push(match status {
            AckStatus::Posted => 1,
            AckStatus::Duplicate => 2,
            AckStatus::Held => 3,
        });
        if let Some(n) = missing_from {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v
    }

    /// A signed acknowledgement (back office side).
    pub fn new(key: &Key, terminal_id: u32, batch_no: u32, head: &str, status: AckStatus) -> Self {
        Self::with_missing(key, terminal_id, batch_no, head, status, None)
    }

    /// A signed acknowledgement that also names the first batch the office
    /// lacks (back office side).
    pub fn with_missing(
        key: &Key,
        terminal_id: u32,
        batch_no: u32,
        head: &str,
        status: AckStatus,
        missing_from: Option<u32>,
    ) -> Self {
        let mac = hex::encode(cmac(
            key,
            &Self::input(terminal_id, batch_no, head, status, missing_from),
        ));
        Self {
            terminal_id,
            batch_no,
            head: head.to_lowercase(),
            status,
            missing_from,
            mac,
        }
    }

    /// Checks the MAC (terminal side).
    pub fn verify(&self, key: &Key) -> bool {
        let expected = cmac(
            key,
            &Self::input(
                self.terminal_id,
                self.batch_no,
                &self.head,
                self.status,
                self.missing_from,
            ),
        );
        hex::decode(&self.mac).is_ok_and(|m| ct_eq(&m, &expected))
    }
}
