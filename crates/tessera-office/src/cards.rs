//! Card replacement and issuer adjustments, the office's side
//! (applet-spec §4.16, `docs/settlement.md` "Issuer adjustments").
//!
//! A replacement card is issued to the customer of the lost one with the
//! same personal data (from the customer registry), registered to that
//! customer, and the lost card is hotlisted while its book balance is
//! issued to the new card as a `replacement` credit
//! ([`OfficeBooks::replace_card`], on either backend). The credit reaches the new
//! card at its first tap at a synced till, like any adjustment.

use tessera_ledger::books::OfficeBooks;
use tessera_ledger::{LedgerError, Replacement};
use tessera_protocol::profile::{Date, Profile, SignedProfile};

/// The profile of the card that replaces `old`: the old card's customer's
/// registered data on card `new_id`, profile version 1, valid from
/// `valid_from` to `valid_until`; and that customer's id.
///
/// # Errors
/// [`LedgerError::Refused`] when `old` was never issued, was replaced
/// already, or its customer's data was erased (issue a new card with
/// `office issue` and move the balance with an adjustment); a storage error.
pub fn replacement_profile(
    ledger: &dyn OfficeBooks,
    old: [u8; 8],
    new_id: [u8; 8],
    valid_from: Date,
    valid_until: Date,
) -> Result<(Profile, u64), LedgerError> {
    let oh = hex::encode_upper(old);
    let book = ledger
        .card(old)?
        .filter(|b| b.registered)
        .ok_or_else(|| LedgerError::Refused(format!("card {oh} was never issued by this office")))?;
    if ledger.replacement_of(old)?.is_some() {
        return Err(LedgerError::Refused(format!("card {oh} was replaced already")));
    }
    let customer_id = book
        .customer_id
        .ok_or_else(|| LedgerError::Refused(format!("card {oh} has no customer on record (erased)")))?;
    let c = ledger
        .customer(customer_id)?
        .ok_or_else(|| LedgerError::Refused(format!("card {oh} has no customer on record (erased)")))?;
    let bad = |what: &str| LedgerError::Storage(format!("customer {customer_id}: stored {what} unreadable"));
    let mut household = [0u8; 8];
    hex::decode_to_slice(&c.household, &mut household).map_err(|_| bad("household"))?;
    let profile = Profile {
        card_id: new_id,
        version: 1,
        name: c.name,
        birth_date: Date::parse_iso(&c.birth_date).map_err(|_| bad("birth date"))?,
        home_city: c.home_city,
        household,
        preferences: c.preferences,
        tier: c.tier,
        valid_from,
        valid_until,
    };
    Ok((profile, customer_id))
}

/// Registers the personalized replacement card to `customer_id` and
/// replaces `old` with it ([`OfficeBooks::replace_card`]).
///
/// # Errors
/// The ledger's; [`LedgerError::Refused`] when the signed profile is not
/// for a fresh card.
#[allow(clippy::too_many_arguments)]
pub fn register_replacement(
    ledger: &mut dyn OfficeBooks,
    key_version: u8,
    signed: &SignedProfile,
    customer_id: u64,
    old: [u8; 8],
    reason: &str,
    operator: &str,
    now: u32,
) -> Result<Replacement, LedgerError> {
    let new = signed.profile.card_id;
    if ledger.card(new)?.is_some() {
        return Err(LedgerError::Refused(format!(
            "card {} is known to the ledger already",
            hex::encode_upper(new)
        )));
    }
    ledger.register_card(new, customer_id, key_version, now)?;
    ledger.replace_card(old, new, reason, operator, now)
}
