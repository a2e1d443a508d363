//! Office referral approvals (`docs/settlement.md`, "The ledger", step
//! 7): the codes the office issues for one till, card, kind and
//! amount ([`Ledger::issue_approval`]), and the reconciliation of every
//! approved decision that went ahead on one (at posting).

use serde::Serialize;
use serde_json::{json, Value};
use tessera_crypto::referral::{Referral, ReferralKey, ReferralKind, MAX_VALIDITY_SECS, SERIAL_MODULUS};
use tessera_protocol::messages::CardId;
use tessera_settlement::record::Entry;

use crate::db::{SqlRow, WarehouseDb};
use crate::{card_of, ExceptionClass, Ledger, LedgerError};

/// Shortest validity of a code, in seconds.
pub const MIN_VALIDITY_SECS: u32 = 60;

/// An approval the office issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedApproval {
    /// Id in the ledger.
    pub id: u64,
    /// The till.
    pub terminal_id: u32,
    /// Serial at that till (modulo 4096, as the code carries it).
    pub serial: u16,
    /// The card (hex in JSON).
    #[serde(serialize_with = "ser_card")]
    pub card_id: CardId,
    /// `earn`, `redeem` or `refund`.
    pub kind: &'static str,
    /// Minor units (earn) or points (redeem, refund).
    pub amount: u64,
    /// Expiry, Unix seconds (a whole minute).
    pub expires_at: u32,
    /// The code to read to the clerk.
    pub code: String,
    /// The office person who issued it.
    pub issued_by: String,
    /// When, Unix seconds.
    pub issued_at: u32,
}

fn ser_card<S: serde::Serializer>(c: &CardId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode_upper(c))
}

/// A decision of a till's verified chain that went ahead on a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalUse {
    /// The till whose chain holds it.
    pub terminal_id: u32,
    /// Its journal sequence.
    pub seq: u32,
    /// The batch that carried it.
    pub batch_no: u32,
    /// The card counter the decision gave the transaction.
    pub card_counter: Option<u32>,
    /// Decision time, Unix seconds.
    pub time: u32,
}

/// Where an issued approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    /// Not used yet and not expired.
    Issued,
    /// Used by a settled decision (more than once: an `approval-reused`
    /// exception names it).
    Used,
    /// Expired unused.
    Expired,
}

impl ApprovalState {
    /// `issued`, `used`, `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Used => "used",
            Self::Expired => "expired",
        }
    }
}

/// An issued approval with its settled uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalStatus {
    /// The approval.
    #[serde(flatten)]
    pub approval: IssuedApproval,
    /// Its state now.
    pub state: ApprovalState,
    /// The settled decisions that used it (not voided).
    pub uses: Vec<ApprovalUse>,
}

fn kind_of(tx_type: &str) -> Option<ReferralKind> {
    match tx_type {
        "earn" => Some(ReferralKind::Earn),
        "redeem" => Some(ReferralKind::Redeem),
        "refund-earn" | "refund-redeem" => Some(ReferralKind::Refund),
        _ => None,
    }
}

type Row = (u64, u32, u16, Vec<u8>, String, u64, u32, String, String, u32);

fn from_row(r: Row) -> Result<IssuedApproval, LedgerError> {
    let (id, terminal_id, serial, card, kind, amount, expires_at, code, issued_by, issued_at) = r;
    let kind = ReferralKind::parse(&kind)
        .ok_or_else(|| LedgerError::Storage(format!("approval {id}: kind {kind:?}")))?
        .name();
    Ok(IssuedApproval {
        id,
        terminal_id,
        serial,
        card_id: card_of(card)?,
        kind,
        amount,
        expires_at,
        code,
        issued_by,
        issued_at,
    })
}

const COLUMNS: &str = "id, terminal_id, serial, card_id, kind, amount, expires_at, code, issued_by, issued_at";

/// The settled, not voided, uses of a code.
fn uses(db: &dyn WarehouseDb, code: &str) -> Result<Vec<ApprovalUse>, LedgerError> {
    db.rows(
        "SELECT u.terminal_id, u.seq, u.batch_no, u.card_counter, u.time FROM approval_uses u
         WHERE u.code = ?1 AND NOT EXISTS (SELECT 1 FROM terminal_records v
             WHERE v.kind = 'void' AND v.terminal_id = u.terminal_id AND v.origin_seq = u.seq)
         ORDER BY u.time, u.terminal_id, u.seq",
        &[code.into()],
        |r| {
            Ok(ApprovalUse {
                terminal_id: r.int(0)?,
                seq: r.int(1)?,
                batch_no: r.int(2)?,
                card_counter: r.opt_int(3)?,
                time: r.int(4)?,
            })
        },
    )
}

/// What a decision claims of its code, as evidence.
fn claim(terminal_id: u32, batch_no: u32, seq: u32, e: &Entry) -> Value {
    json!({
        "terminal_id": terminal_id,
        "batch_no": batch_no,
        "seq": seq,
        "card_id": e.card_id,
        "card_counter": e.card_counter,
        "type": e.tx_type,
        "points": e.points,
        "purchase_minor": e.purchase_minor,
        "time": e.time,
    })
}

/// Reconciles one approve decision that names an approval code with the
/// issued approvals, and records the use: the exceptions it raises
/// (`approval-unknown`, `approval-mismatch`, `approval-reused`), with
/// their evidence. Idempotent for the same decision. The SQL both backends
/// speak; a backend that several servers share serializes the decisions
/// of one code (so that two uses of it are never both first).
///
/// # Errors
/// A storage error.
pub fn check_use(
    db: &dyn WarehouseDb,
    terminal_id: u32,
    batch_no: u32,
    seq: u32,
    e: &Entry,
) -> Result<Vec<(ExceptionClass, Value)>, LedgerError> {
    let Some(code) = e.approval.as_deref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let used = claim(terminal_id, batch_no, seq, e);
    let issued = db.first(
        &format!("SELECT {COLUMNS} FROM approvals WHERE code = ?1"),
        &[code.into()],
        issued_row,
    )?;
    match &issued {
        None => out.push((
            ExceptionClass::ApprovalUnknown,
            json!({"code": code, "why": "the office never issued this approval code", "used": used}),
        )),
        Some(a) => {
            let kind = e.tx_type.as_deref().and_then(kind_of);
            let amount = match kind {
                Some(ReferralKind::Earn) => e.purchase_minor,
                _ => e.points.map(u64::from),
            };
            let card = e.card_id.as_deref().and_then(|c| hex::decode(c).ok());
            let mut wrong = Vec::new();
            if a.terminal_id != terminal_id {
                wrong.push("terminal");
            }
            if card.as_deref() != Some(&a.card_id[..]) {
                wrong.push("card");
            }
            if kind.map(ReferralKind::name) != Some(a.kind) {
                wrong.push("kind");
            }
            if amount != Some(a.amount) {
                wrong.push("amount");
            }
            if e.time > a.expires_at {
                wrong.push("expired");
            }
            if !wrong.is_empty() {
                out.push((
                    ExceptionClass::ApprovalMismatch,
                    json!({
                        "code": code,
                        "why": format!("the decision does not fit the approval: {}", wrong.join(", ")),
                        "issued": a,
                        "used": used,
                    }),
                ));
            }
        }
    }
    let earlier: Vec<ApprovalUse> = uses(db, code)?
        .into_iter()
        .filter(|u| (u.terminal_id, u.seq) != (terminal_id, seq))
        .collect();
    if !earlier.is_empty() {
        out.push((
            ExceptionClass::ApprovalReused,
            json!({
                "code": code,
                "why": "the approval code was used by another decision already (single use)",
                "earlier": earlier,
                "used": used,
            }),
        ));
    }
    let card = e.card_id.as_deref().and_then(|c| hex::decode(c).ok());
    db.run(
        "INSERT INTO approval_uses (terminal_id, seq, code, batch_no, card_id, card_counter, tx_type,
             amount, time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        &[
            terminal_id.into(),
            seq.into(),
            code.into(),
            batch_no.into(),
            card.as_deref().into(),
            e.card_counter.into(),
            e.tx_type.as_deref().into(),
            e.purchase_minor.or(e.points.map(u64::from)).into(),
            e.time.into(),
        ],
    )?;
    Ok(out)
}

/// For a batch the ledger refused (a conflicting or discontinuous batch
/// whose MAC verified: a copy of the till's directory): each of its
/// decisions that uses a code a settled decision used already, as another
/// decision (another sequence, card counter or time) → `approval-reused`.
/// The SQL both backends speak.
///
/// # Errors
/// A storage error.
pub fn reused_in_refused(
    db: &dyn WarehouseDb,
    terminal_id: u32,
    batch_no: u32,
    decisions: &[(u32, Entry)],
) -> Result<Vec<(ExceptionClass, Value)>, LedgerError> {
    let mut out = Vec::new();
    for (seq, e) in decisions {
        let Some(code) = e.approval.as_deref() else { continue };
        let earlier: Vec<ApprovalUse> = uses(db, code)?
            .into_iter()
            .filter(|u| {
                !(u.terminal_id == terminal_id && u.seq == *seq && u.card_counter == e.card_counter && u.time == e.time)
            })
            .collect();
        if earlier.is_empty() {
            continue;
        }
        let ev = json!({
            "code": code,
            "why": "a refused batch of this till (a copy of its directory) used the approval code again",
            "earlier": earlier,
            "used": claim(terminal_id, batch_no, *seq, e),
        });
        // The same refused batch sent again names nothing new.
        let known = db
            .first(
                "SELECT 1 FROM exceptions WHERE class = ?1 AND terminal_id = ?2 AND batch_no = ?3 AND evidence = ?4",
                &[
                    ExceptionClass::ApprovalReused.as_str().into(),
                    terminal_id.into(),
                    batch_no.into(),
                    ev.to_string().as_str().into(),
                ],
                |_| Ok(()),
            )?
            .is_some();
        if !known {
            out.push((ExceptionClass::ApprovalReused, ev));
        }
    }
    Ok(out)
}

/// Every issued approval, newest first, with its state at `now` and the
/// settled decisions that used it (as [`Ledger::approvals`]), on either
/// backend.
///
/// # Errors
/// A storage error.
pub fn approvals_in(db: &dyn WarehouseDb, now: u32) -> Result<Vec<ApprovalStatus>, LedgerError> {
    let issued = db.rows(
        &format!("SELECT {COLUMNS} FROM approvals ORDER BY id DESC"),
        &[],
        issued_row,
    )?;
    issued
        .into_iter()
        .map(|approval| {
            let uses = uses(db, &approval.code)?;
            let state = if !uses.is_empty() {
                ApprovalState::Used
            } else if now > approval.expires_at {
                ApprovalState::Expired
            } else {
                ApprovalState::Issued
            };
            Ok(ApprovalStatus { approval, state, uses })
        })
        .collect()
}

/// An issued approval from the `COLUMNS` of `approvals`.
fn issued_row(r: SqlRow<'_>) -> Result<IssuedApproval, LedgerError> {
    from_row((
        r.int(0)?,
        r.int(1)?,
        r.int(2)?,
        r.blob(3)?,
        r.text(4)?,
        r.int(5)?,
        r.int(6)?,
        r.text(7)?,
        r.text(8)?,
        r.int(9)?,
    ))
}

/// What an approval is for ([`issue_in`]).
#[derive(Debug, Clone, Copy)]
pub struct ApprovalRequest<'a> {
    /// The till that will use it.
    pub terminal_id: u32,
    /// The card.
    pub card_id: CardId,
    /// Earn, redeem or refund.
    pub kind: ReferralKind,
    /// Minor units (earn) or points (redeem, refund).
    pub amount: u64,
    /// How long it is valid, in seconds.
    pub valid_for_secs: u32,
    /// Who approves.
    pub issued_by: &'a str,
}

/// [`Ledger::issue_approval`] in the caller's transaction, on either
/// backend (the SQL both speak), under the till's referral `key`. A
/// backend several servers share locks the till's row first, so that two
/// codes issued at once take two serials.
///
/// # Errors
/// As [`Ledger::issue_approval`].
pub fn issue_in(
    db: &dyn WarehouseDb,
    key: &ReferralKey,
    a: &ApprovalRequest<'_>,
    now: u32,
) -> Result<IssuedApproval, LedgerError> {
    let ApprovalRequest {
        terminal_id,
        card_id,
        kind,
        amount,
        valid_for_secs,
        issued_by,
    } = *a;
    let bad = |m: String| Err(LedgerError::Malformed(m));
    let revoked = db.first(
        "SELECT CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END FROM terminals WHERE terminal_id = ?1",
        &[terminal_id.into()],
        |r| Ok(r.i64(0)? != 0),
    )?;
    match revoked {
        None => {
            return bad(format!(
                "terminal {terminal_id} is not registered (office export-terminal)"
            ))
        }
        Some(true) => return bad(format!("terminal {terminal_id} is revoked")),
        Some(false) => {}
    }
    let issued = db
        .first(
            "SELECT 1 FROM cards WHERE card_id = ?1 AND registered_at IS NOT NULL",
            &[card_id[..].into()],
            |_| Ok(()),
        )?
        .is_some();
    if !issued {
        return bad(format!(
            "card {} was never issued by this office",
            hex::encode_upper(card_id)
        ));
    }
    if amount == 0 {
        return bad("the amount must be more than zero".into());
    }
    if !(MIN_VALIDITY_SECS..=MAX_VALIDITY_SECS).contains(&valid_for_secs) {
        return bad("a code is valid from 1 minute to 3 days".into());
    }
    let issued_by = issued_by.trim();
    if issued_by.is_empty() {
        return bad("name the person who approves (--operator)".into());
    }
    let expires_min = now.saturating_add(valid_for_secs).div_ceil(60);
    let count: u32 = db
        .first(
            "SELECT COUNT(*) FROM approvals WHERE terminal_id = ?1",
            &[terminal_id.into()],
            |r| r.int(0),
        )?
        .unwrap_or(0);
    // The serial goes round modulo 4096; the code differs by its expiry
    // and MAC. A code equal to one issued before (about 2⁻³²) takes the
    // next serial.
    for step in 0..16u32 {
        let serial = ((count + 1 + step) % SERIAL_MODULUS) as u16;
        let r = Referral {
            terminal_id,
            card_id,
            kind,
            amount,
            expires_min,
            serial,
        };
        let code = r.code(key).to_string();
        let taken = db
            .first(
                "SELECT 1 FROM approvals WHERE code = ?1",
                &[code.as_str().into()],
                |_| Ok(()),
            )?
            .is_some();
        if taken {
            continue;
        }
        let id: u64 = db
            .first(
                "INSERT INTO approvals (terminal_id, serial, card_id, kind, amount, expires_at, code, issued_by,
                     issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
                &[
                    terminal_id.into(),
                    u32::from(serial).into(),
                    card_id[..].into(),
                    kind.name().into(),
                    amount.into(),
                    (expires_min * 60).into(),
                    code.as_str().into(),
                    issued_by.into(),
                    now.into(),
                ],
                |r| r.int(0),
            )?
            .ok_or_else(|| LedgerError::Storage("approval id".into()))?;
        return Ok(IssuedApproval {
            id,
            terminal_id,
            serial,
            card_id,
            kind: kind.name(),
            amount,
            expires_at: expires_min * 60,
            code,
            issued_by: issued_by.to_owned(),
            issued_at: now,
        });
    }
    Err(LedgerError::Storage("no free approval serial".into()))
}

impl Ledger {
    /// Issues a referral approval for one till, card, kind and amount
    /// (minor units for an earn, points otherwise), valid `valid_for_secs`
    /// from `now` (rounded up to a whole minute), issued by `issued_by`:
    /// the code to read to the clerk, stored with the serial it carries.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`]: an unknown or revoked terminal, a card
    /// the office never issued, a zero amount, a validity outside one
    /// minute to three days, no name; a storage error.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_approval(
        &mut self,
        terminal_id: u32,
        card_id: CardId,
        kind: ReferralKind,
        amount: u64,
        valid_for_secs: u32,
        issued_by: &str,
        now: u32,
    ) -> Result<IssuedApproval, LedgerError> {
        let key = ReferralKey::derive(&self.keys.batch_key(terminal_id), terminal_id);
        let tx = self.conn.transaction()?;
        let issued = issue_in(
            &tx,
            &key,
            &ApprovalRequest {
                terminal_id,
                card_id,
                kind,
                amount,
                valid_for_secs,
                issued_by,
            },
            now,
        )?;
        tx.commit()?;
        Ok(issued)
    }

    /// Every issued approval, newest first, with its state at `now` and
    /// the settled decisions that used it.
    ///
    /// # Errors
    /// A storage error.
    pub fn approvals(&self, now: u32) -> Result<Vec<ApprovalStatus>, LedgerError> {
        approvals_in(&self.conn, now)
    }
}
