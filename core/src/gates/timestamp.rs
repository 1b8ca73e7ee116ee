//! Gate 2: the timestamp window. An event dated more than `max_future` ahead
//! of now, or more than `max_age` behind it, is rejected. Both bounds are
//! inclusive: an event exactly on a bound passes.

use aforo_crds::RejectReason;
use chrono::{DateTime, Utc};

use super::{GateConfig, Rejected};

pub fn check(time: DateTime<Utc>, now: DateTime<Utc>, config: &GateConfig) -> Result<(), Rejected> {
    if time > now + config.max_future {
        return Err(Rejected {
            reason: RejectReason::TimestampInFuture,
            message: format!(
                "`time` is {}s ahead of the server clock; at most {}s is allowed",
                (time - now).num_seconds(),
                config.max_future.num_seconds()
            ),
        });
    }
    if time < now - config.max_age {
        return Err(Rejected {
            reason: RejectReason::TimestampTooOld,
            message: format!(
                "`time` is {} days old; events older than {} days are not accepted",
                (now - time).num_days(),
                config.max_age.num_days()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    fn reason(time: DateTime<Utc>) -> Option<RejectReason> {
        check(time, now(), &GateConfig::default())
            .err()
            .map(|r| r.reason)
    }

    const TICK: Duration = Duration::microseconds(1);

    #[test]
    fn the_future_bound_is_inclusive() {
        let bound = now() + Duration::minutes(5);
        assert_eq!(reason(bound - TICK), None);
        assert_eq!(reason(bound), None);
        assert_eq!(reason(bound + TICK), Some(RejectReason::TimestampInFuture));
    }

    #[test]
    fn the_age_bound_is_inclusive() {
        let bound = now() - Duration::days(90);
        assert_eq!(reason(bound + TICK), None);
        assert_eq!(reason(bound), None);
        assert_eq!(reason(bound - TICK), Some(RejectReason::TimestampTooOld));
    }

    #[test]
    fn bounds_are_configurable() {
        let config = GateConfig {
            max_future: Duration::seconds(10),
            max_age: Duration::days(1),
            ..GateConfig::default()
        };
        let r = |t| check(t, now(), &config).err().map(|r| r.reason);
        assert_eq!(
            r(now() + Duration::seconds(11)),
            Some(RejectReason::TimestampInFuture)
        );
        assert_eq!(
            r(now() - Duration::hours(25)),
            Some(RejectReason::TimestampTooOld)
        );
        assert_eq!(r(now() - Duration::hours(23)), None);
    }
}
