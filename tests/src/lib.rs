//! Shared helpers for the integration tests: see `cluster`.
