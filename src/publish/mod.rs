//! Publish: where events go. `check` and `demo` print them ([`LinePrinter`]); the agent
//! sends them over MQTT ([`mqtt::Publisher`]) through a bounded, disk-spooled outbox
//! ([`spool::Spool`]) from which an event leaves only when the broker acknowledged it.

pub mod homeassistant;
pub mod metrics;
pub mod mqtt;
pub mod report;
pub mod spool;
pub mod status;

use crate::defect::Phase;
use crate::error::InvalidChoice;
use crate::event::Event;

/// Output format of printed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, exactly as published over MQTT.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = InvalidChoice;

    /// `text` or `json` (`--format`).
    fn from_str(s: &str) -> Result<Self, InvalidChoice> {
        match s {
            "text" => Ok(OutputFormat::Text),
            "json" => Ok(OutputFormat::Json),
            _ => Err(InvalidChoice::new(s, &["text", "json"])),
        }
    }
}

/// Formats events as lines.
#[derive(Debug, Clone, Copy)]
pub struct LinePrinter {
    pub format: OutputFormat,
}

impl LinePrinter {
    /// The line for one event (no newline).
    pub fn line(&self, ev: &Event) -> String {
        match self.format {
            OutputFormat::Json => ev.to_json(),
            OutputFormat::Text => {
                let interval = match (ev.state, ev.end_s) {
                    (Phase::End, Some(end)) => format!(
                        "{:>9.3}s → {:>9.3}s ({:.3}s)",
                        ev.start_s,
                        end,
                        ev.duration_s.unwrap_or(0.0)
                    ),
                    _ => format!("{:>9.3}s", ev.start_s),
                };
                let state = ev.state.as_str().to_ascii_uppercase();
                let mut metrics = String::new();
                for (k, v) in &ev.metrics {
                    metrics.push_str(&format!(" {k}={v}"));
                }
                let reason = ev
                    .reason
                    .map(|r| format!(" reason={}", serde_json::json!(r).as_str().unwrap_or("")))
                    .unwrap_or_default();
                let thumb = ev
                    .thumb
                    .as_deref()
                    .map(|t| format!(" thumb={t}"))
                    .unwrap_or_default();
                format!(
                    "{:<18} {:<5} {interval}  [{}]{metrics}{reason}{thumb}",
                    ev.kind.as_str(),
                    state,
                    serde_json::json!(ev.severity).as_str().unwrap_or("")
                )
            }
        }
    }
}
