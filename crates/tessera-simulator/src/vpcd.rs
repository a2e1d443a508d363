//! Bridge to the vpcd virtual reader driver.

/// A card that can sit behind the vpcd driver.
pub trait VirtualCard {
    /// The answer to reset.
    fn atr(&self) -> Vec<u8>;
    /// Power on (card enters the field).
    fn power_on(&mut self);
    /// Power off (card leaves the field).
    fn power_off(&mut self);
    /// Warm reset.
    fn reset(&mut self);
    /// One APDU; returns data and status word, or nothing if the card is gone.
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8>;
}
