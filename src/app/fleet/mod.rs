//! Fleet mode (docs/fleet.md): many probes share a fleet's streams through the broker,
//! with no coordinator. Every member reads the same catalog and membership ([`view`])
//! and computes the same [`assign`]ment; `vqprobe fleet` ([`cli`]) manages the catalog.

pub mod assign;
pub mod cli;
pub mod view;
