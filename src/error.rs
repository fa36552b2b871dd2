//! One error type for the whole crate, carrying the context a user needs to act on it.
//!
//! Boundaries: a leaf apart from `redact` (URLs in errors are redacted on the way in).
//!
//! Errors never carry secrets: anything that holds a URL goes through
//! [`crate::redact::redact_url`] before it is put in an error.

use std::path::PathBuf;

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local input could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input is not something vqprobe can analyse (not MPEG-TS, no tracks, ...).
    #[error("{input}: {reason}")]
    BadInput { input: String, reason: String },
    /// A configuration file or option is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A decoder could not be created (not a per-frame error: those are counted, not raised).
    #[error("decoder: {0}")]
    Decoder(String),
    /// Any other failure with a description.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Builds a [`Error::BadInput`].
    pub fn bad_input(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadInput {
            input: input.into(),
            reason: reason.into(),
        }
    }
}

/// A value that is not one of a fixed set (`FromStr` of [`crate::publish::OutputFormat`],
/// [`crate::ingest::rtsp::RtspTransport`], [`crate::config::LevelChoice`]); it names the
/// valid values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value '{value}' (expected one of: {})", .valid.join(", "))]
pub struct InvalidChoice {
    /// What was given.
    pub value: String,
    /// Every valid value.
    pub valid: &'static [&'static str],
}

impl InvalidChoice {
    /// The error for `value`, which is none of `valid`.
    pub fn new(value: &str, valid: &'static [&'static str]) -> Self {
        InvalidChoice {
            value: value.to_owned(),
            valid,
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
