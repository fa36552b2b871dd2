//! Fleet mode: probes sharing a fleet's streams compute the same [`assign`]ment locally.

pub mod assign;
