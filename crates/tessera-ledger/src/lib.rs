//! The central ledger (API contract; bodies being written).
//!
//! See `docs/settlement.md`.
