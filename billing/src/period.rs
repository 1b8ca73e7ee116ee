//! Billing periods: which period an instant falls in.

use aforo_crds::catalog::BillingPeriod;
use chrono::{DateTime, Datelike, Months, TimeZone, Utc};

fn months(period: BillingPeriod) -> u32 {
    match period {
        BillingPeriod::Monthly => 1,
        BillingPeriod::Quarterly => 3,
        BillingPeriod::Yearly => 12,
    }
}

/// `t` moved `n` periods forward (same day of month; anchors never pass
/// the 28th, so this does not drift).
pub fn step(period: BillingPeriod, t: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
    t.checked_add_months(Months::new(months(period) * n))
}

/// The anchor of a subscription's periods: its start, or midnight UTC of
/// `anchor_day` in its start month. Days past the 28th are not anchors
/// (every month has a 28th), so periods never drift.
pub fn anchor(start: DateTime<Utc>, anchor_day: Option<u8>) -> DateTime<Utc> {
    let day = anchor_day.map_or(start.day().min(28), |d| u32::from(d.clamp(1, 28)));
    let (h, m, s) = if anchor_day.is_some() {
        (0, 0, 0)
    } else {
        (start.hour(), start.minute(), start.second())
    };
    Utc.with_ymd_and_hms(start.year(), start.month(), day, h, m, s)
        .single()
        .unwrap_or(start)
}

use chrono::Timelike;

/// The start of the period `t` falls in.
pub fn period_start(
    period: BillingPeriod,
    start: DateTime<Utc>,
    anchor_day: Option<u8>,
    t: DateTime<Utc>,
) -> DateTime<Utc> {
    let step = Months::new(months(period));
    let mut begin = anchor(start, anchor_day);
    while begin > t {
        match begin.checked_sub_months(step) {
            Some(earlier) => begin = earlier,
            None => return begin,
        }
    }
    while let Some(next) = begin.checked_add_months(step) {
        if next > t {
            break;
        }
        begin = next;
    }
    begin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn monthly_periods_start_on_the_anchor_day() {
        let start = at(2026, 1, 15);
        assert_eq!(
            period_start(BillingPeriod::Monthly, start, Some(1), at(2026, 3, 10)),
            at(2026, 3, 1)
        );
        assert_eq!(
            period_start(BillingPeriod::Monthly, start, None, at(2026, 3, 10)),
            at(2026, 2, 15)
        );
        assert_eq!(
            period_start(BillingPeriod::Monthly, start, None, at(2026, 3, 15)),
            at(2026, 3, 15)
        );
    }

    #[test]
    fn days_past_the_28th_do_not_drift() {
        let start = at(2026, 1, 31);
        assert_eq!(
            period_start(BillingPeriod::Monthly, start, None, at(2026, 3, 30)),
            at(2026, 3, 28)
        );
    }

    #[test]
    fn quarters_and_years_step_from_the_anchor() {
        let start = at(2026, 2, 1);
        assert_eq!(
            period_start(BillingPeriod::Quarterly, start, Some(1), at(2026, 7, 4)),
            at(2026, 5, 1)
        );
        assert_eq!(
            period_start(BillingPeriod::Yearly, start, Some(1), at(2027, 1, 4)),
            at(2026, 2, 1)
        );
    }
}
