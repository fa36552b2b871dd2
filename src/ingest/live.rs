//! Settings every live source shares (`[live]`: stall timeout, reconnect backoff,
//! connect and read timeouts, the clear-after of delivery intervals). The sending side
//! with its overflow policies and the delivery-defect bookkeeping is [`super::sink`];
//! this module only holds configuration and may not touch the queue.

use serde::{Deserialize, Serialize};

/// Settings shared by live sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Seconds without media (by the wall clock) before a `stall` is reported. 2.0.
    pub stall_after: f64,
    /// First reconnect delay, seconds. 0.5.
    pub backoff_initial: f64,
    /// Largest reconnect delay, seconds. 30.
    pub backoff_max: f64,
    /// Seconds allowed to connect (TCP + TLS + RTSP DESCRIBE/SETUP/PLAY). 10.
    pub connect_timeout: f64,
    /// Seconds without any byte from a connected source before it counts as gone. 10.
    pub read_timeout: f64,
    /// Seconds of clean delivery that end a `packet_loss` or `ts_error` interval. 2.0.
    pub clear_after: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            stall_after: 2.0,
            backoff_initial: 0.5,
            backoff_max: 30.0,
            connect_timeout: 10.0,
            read_timeout: 10.0,
            clear_after: 2.0,
        }
    }
}

impl LiveConfig {
    /// Checks every duration (finite, in range); the error names the field as
    /// `live.<field>`.
    pub fn validate(&self) -> Result<(), String> {
        // (field, value, smallest, largest): a day is far beyond any sane setting and
        // keeps every `Duration` and `Instant` computed from them in range.
        const DAY: f64 = 86_400.0;
        for (name, v, min) in [
            ("stall_after", self.stall_after, 0.1),
            ("backoff_initial", self.backoff_initial, 0.01),
            ("backoff_max", self.backoff_max, 0.01),
            ("connect_timeout", self.connect_timeout, 0.1),
            ("read_timeout", self.read_timeout, 0.1),
            ("clear_after", self.clear_after, 0.0),
        ] {
            if !(v.is_finite() && v >= min && v <= DAY) {
                return Err(format!(
                    "live.{name} must be a number of seconds between {min} and {DAY}, got {v}"
                ));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(format!(
                "live.backoff_max ({}) must not be below live.backoff_initial ({})",
                self.backoff_max, self.backoff_initial
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_durations_are_range_checked() {
        assert_eq!(LiveConfig::default().validate(), Ok(()));
        for v in [f64::INFINITY, f64::NAN, -1.0, 1e300, f64::NEG_INFINITY] {
            for field in [
                "stall_after",
                "backoff_initial",
                "backoff_max",
                "connect_timeout",
                "read_timeout",
                "clear_after",
            ] {
                let mut c = LiveConfig::default();
                match field {
                    "stall_after" => c.stall_after = v,
                    "backoff_initial" => c.backoff_initial = v,
                    "backoff_max" => c.backoff_max = v,
                    "connect_timeout" => c.connect_timeout = v,
                    "read_timeout" => c.read_timeout = v,
                    _ => c.clear_after = v,
                }
                let e = c.validate().expect_err(&format!("{field} = {v}"));
                assert!(e.contains(&format!("live.{field}")), "{e}");
            }
        }
        // Zero is no timeout at all: refused where it would spin or never wait.
        let c = LiveConfig {
            connect_timeout: 0.0,
            ..LiveConfig::default()
        };
        assert!(c.validate().is_err());
        let c = LiveConfig {
            backoff_initial: 5.0,
            backoff_max: 1.0,
            ..LiveConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("backoff_max"));
    }
}
