//! Gate 4: late arrival. An event older than `late_after` is accepted and
//! flagged LATE, so billing reconciles it against periods that may be closed.
//! The bound is exclusive: exactly `late_after` old is still on time.

use chrono::{DateTime, Utc};

use super::GateConfig;

pub fn is_late(time: DateTime<Utc>, now: DateTime<Utc>, config: &GateConfig) -> bool {
    time < now - config.late_after
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn late_starts_just_past_the_bound() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let bound = now - Duration::hours(24);
        let config = GateConfig::default();
        let tick = Duration::microseconds(1);
        assert!(!is_late(bound + tick, now, &config));
        assert!(!is_late(bound, now, &config));
        assert!(is_late(bound - tick, now, &config));
    }
}
