//! Software Tessera card.
pub mod vpcd;
