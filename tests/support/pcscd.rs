//! Support for tests through the real PC/SC stack (placeholder).
