//! Bridge to the vpcd virtual reader driver (placeholder, owned by the PC/SC work).
