//! Back-office HTTP server and settlement client (being written).
