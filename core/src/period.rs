//! Billing periods: which period an instant falls in.
//!
//! A subscription's periods are counted from an anchor: a day of the month
//! (1–31) and a time of day, in the anchor's month. Period `n` starts `n`
//! periods (of one, three or twelve months) after the anchor, on the anchor
//! day, or on the last day of months too short for it — Stripe's rule: a
//! subscription anchored on the 31st renews on 28 or 29 February and on
//! 30 April, and on the 31st again in March and May. Every boundary is
//! computed from the anchor itself, never from the boundary before it, so a
//! short month never shifts the periods after it.
//!
//! Where the anchor comes from: the subscription's `billing_anchor_day`,
//! else the rate plan's `billingAnchorDay` (both at midnight UTC), else the
//! subscription's start, to the second.

use crate::model::Subscription;
use aforo_crds::catalog::{BillingPeriod, RatePlanSpec};
use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Utc};

use serde::{Deserialize, Serialize};

/// A billing period, `[start, end)`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

fn months(period: BillingPeriod) -> u32 {
    match period {
        BillingPeriod::Monthly => 1,
        BillingPeriod::Quarterly => 3,
        BillingPeriod::Yearly => 12,
    }
}

/// The periods of one subscription under one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Calendar {
    /// The anchor's month, counted from January of year 0.
    month: i64,
    /// 1–31; months shorter than this end their period on their last day.
    day: u32,
    time: NaiveTime,
    /// Months per period.
    step: u32,
}

impl Calendar {
    /// The calendar of periods of `period` anchored on `anchor_day` in the
    /// month `start` falls in (at midnight), or on `start` itself.
    pub fn new(period: BillingPeriod, start: DateTime<Utc>, anchor_day: Option<u8>) -> Calendar {
        let (day, time) = match anchor_day {
            Some(d) => (u32::from(d.clamp(1, 31)), NaiveTime::MIN),
            None => (start.day(), start.time()),
        };
        Calendar {
            month: i64::from(start.year()) * 12 + i64::from(start.month0()),
            day,
            time,
            step: months(period),
        }
    }

    /// A subscription's calendar under `plan`: the subscription's anchor
    /// day, else the plan's, else its start.
    pub fn of(subscription: &Subscription, plan: &RatePlanSpec) -> Calendar {
        Calendar::new(
            plan.billing_period,
            subscription.starts_at,
            subscription.billing_anchor_day.or(plan.billing_anchor_day),
        )
    }

    /// The start of period `n` (0 is the anchor's; negative ones are before
    /// it). `None` beyond the range of times.
    fn boundary(&self, n: i64) -> Option<DateTime<Utc>> {
        let month = self
            .month
            .checked_add(n.checked_mul(i64::from(self.step))?)?;
        let year = i32::try_from(month.div_euclid(12)).ok()?;
        let first = NaiveDate::from_ymd_opt(year, month.rem_euclid(12) as u32 + 1, 1)?;
        let last = first.checked_add_months(Months::new(1))?.pred_opt()?.day();
        let date = first.with_day(self.day.min(last))?;
        Some(date.and_time(self.time).and_utc())
    }

    /// The period `t` falls in, `[start, end)`. `None` only at the ends of
    /// the range of times.
    pub fn period_of(&self, t: DateTime<Utc>) -> Option<Period> {
        let month = i64::from(t.year()) * 12 + i64::from(t.month0());
        // The estimate is off by at most one period either way.
        let mut n = (month - self.month).div_euclid(i64::from(self.step));
        while self.boundary(n)? > t {
            n -= 1;
        }
        while self.boundary(n + 1)? <= t {
            n += 1;
        }
        Some(Period {
            start: self.boundary(n)?,
            end: self.boundary(n + 1)?,
        })
    }

    /// The start of the period `n` periods after the one `t` falls in.
    pub fn periods_after(&self, t: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        let start = self.period_of(t)?.start;
        let mut at = start;
        for _ in 0..n {
            at = self.period_of(at)?.end;
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, 0, 0, 0).unwrap()
    }

    fn monthly(start: DateTime<Utc>, anchor_day: Option<u8>) -> Calendar {
        Calendar::new(BillingPeriod::Monthly, start, anchor_day)
    }

    fn period(y: i32, mo: u32, d: u32, y2: i32, mo2: u32, d2: u32) -> Period {
        Period {
            start: at(y, mo, d),
            end: at(y2, mo2, d2),
        }
    }

    #[test]
    fn monthly_periods_start_on_the_anchor_day() {
        let start = at(2026, 1, 15);
        assert_eq!(
            monthly(start, Some(1)).period_of(at(2026, 3, 10)),
            Some(period(2026, 3, 1, 2026, 4, 1))
        );
        assert_eq!(
            monthly(start, None).period_of(at(2026, 3, 10)),
            Some(period(2026, 2, 15, 2026, 3, 15))
        );
        assert_eq!(
            monthly(start, None).period_of(at(2026, 3, 15)),
            Some(period(2026, 3, 15, 2026, 4, 15))
        );
    }

    #[test]
    fn a_period_starts_at_its_first_instant_and_ends_before_the_next() {
        let calendar = monthly(at(2026, 1, 1), Some(1));
        let midnight = at(2026, 4, 1);
        assert_eq!(calendar.period_of(midnight).unwrap().start, midnight);
        let last = midnight - chrono::Duration::microseconds(1);
        assert_eq!(calendar.period_of(last).unwrap().end, midnight);
    }

    #[test]
    fn a_start_on_the_31st_renews_on_the_last_day_of_short_months() {
        let calendar = monthly(at(2027, 1, 31), None);
        assert_eq!(
            calendar.period_of(at(2027, 2, 10)),
            Some(period(2027, 1, 31, 2027, 2, 28))
        );
        assert_eq!(
            calendar.period_of(at(2027, 3, 1)),
            Some(period(2027, 2, 28, 2027, 3, 31)),
            "February's shortness does not move March's boundary"
        );
        assert_eq!(
            calendar.period_of(at(2027, 4, 30)),
            Some(period(2027, 4, 30, 2027, 5, 31))
        );
    }

    #[test]
    fn an_anchor_on_the_29th_meets_the_leap_day() {
        let calendar = monthly(at(2027, 12, 5), Some(29));
        assert_eq!(
            calendar.period_of(at(2028, 2, 29)),
            Some(period(2028, 2, 29, 2028, 3, 29))
        );
        assert_eq!(
            calendar.period_of(at(2028, 2, 28)),
            Some(period(2028, 1, 29, 2028, 2, 29))
        );
        assert_eq!(
            calendar.period_of(at(2027, 2, 28)),
            Some(period(2027, 2, 28, 2027, 3, 29)),
            "in a common year the 28th stands in for the 29th"
        );
    }

    #[test]
    fn an_anchor_day_later_than_the_start_month_allows_is_not_clamped_for_good() {
        // Anchored on the 30th from February: February's period starts on
        // its last day, every later one on the 30th.
        let calendar = monthly(at(2027, 2, 10), Some(30));
        assert_eq!(
            calendar.period_of(at(2027, 2, 10)),
            Some(period(2027, 1, 30, 2027, 2, 28))
        );
        assert_eq!(
            calendar.period_of(at(2027, 3, 29)),
            Some(period(2027, 2, 28, 2027, 3, 30))
        );
    }

    #[test]
    fn the_year_turns_inside_a_period() {
        let calendar = monthly(at(2027, 1, 15), None);
        assert_eq!(
            calendar.period_of(at(2028, 1, 1)),
            Some(period(2027, 12, 15, 2028, 1, 15))
        );
        let first_of_month = monthly(at(2027, 1, 1), Some(1));
        assert_eq!(
            first_of_month.period_of(at(2027, 12, 31) + chrono::Duration::seconds(86_399)),
            Some(period(2027, 12, 1, 2028, 1, 1))
        );
        assert_eq!(
            first_of_month.period_of(at(2028, 1, 1)),
            Some(period(2028, 1, 1, 2028, 2, 1))
        );
    }

    #[test]
    fn a_start_time_of_day_is_kept() {
        let start = Utc.with_ymd_and_hms(2027, 3, 31, 17, 45, 12).unwrap();
        let calendar = monthly(start, None);
        let p = calendar
            .period_of(start + chrono::Duration::days(40))
            .unwrap();
        assert_eq!(
            p.start,
            Utc.with_ymd_and_hms(2027, 4, 30, 17, 45, 12).unwrap()
        );
        assert_eq!(
            p.end,
            Utc.with_ymd_and_hms(2027, 5, 31, 17, 45, 12).unwrap()
        );
    }

    #[test]
    fn quarters_and_years_step_from_the_anchor() {
        let start = at(2026, 2, 1);
        assert_eq!(
            Calendar::new(BillingPeriod::Quarterly, start, Some(1)).period_of(at(2026, 7, 4)),
            Some(period(2026, 5, 1, 2026, 8, 1))
        );
        assert_eq!(
            Calendar::new(BillingPeriod::Yearly, start, Some(1)).period_of(at(2027, 1, 4)),
            Some(period(2026, 2, 1, 2027, 2, 1))
        );
        let leap = Calendar::new(BillingPeriod::Yearly, at(2028, 2, 29), None);
        assert_eq!(
            leap.period_of(at(2029, 6, 1)),
            Some(period(2029, 2, 28, 2030, 2, 28))
        );
        assert_eq!(
            leap.period_of(at(2032, 3, 1)),
            Some(period(2032, 2, 29, 2033, 2, 28)),
            "a leap-day anchor comes back on the next leap day"
        );
    }

    #[test]
    fn periods_before_the_anchor_count_back_from_it() {
        let calendar = monthly(at(2027, 3, 31), None);
        assert_eq!(
            calendar.period_of(at(2027, 3, 1)),
            Some(period(2027, 2, 28, 2027, 3, 31))
        );
        assert_eq!(
            calendar.period_of(at(2026, 12, 31)),
            Some(period(2026, 12, 31, 2027, 1, 31))
        );
    }

    #[test]
    fn periods_after_steps_whole_periods() {
        let calendar = monthly(at(2027, 1, 31), None);
        assert_eq!(
            calendar.periods_after(at(2027, 2, 1), 0),
            Some(at(2027, 1, 31))
        );
        assert_eq!(
            calendar.periods_after(at(2027, 2, 1), 1),
            Some(at(2027, 2, 28))
        );
        assert_eq!(
            calendar.periods_after(at(2027, 2, 1), 2),
            Some(at(2027, 3, 31))
        );
    }

    #[test]
    fn the_last_period_of_time_has_no_end_and_so_no_period() {
        let calendar = monthly(at(2027, 1, 1), Some(1));
        assert_eq!(calendar.period_of(DateTime::<Utc>::MAX_UTC), None);
        let first = DateTime::<Utc>::MIN_UTC;
        assert_eq!(calendar.period_of(first).map(|p| p.start), Some(first));
    }

    proptest::proptest! {
        /// Every instant falls in exactly one period, periods tile time with
        /// no gap or overlap, and each starts on the anchor day or, in a
        /// month too short for it, on the month's last day.
        #[test]
        fn periods_tile_time_on_the_anchor_day(
            start in 0i64..4_102_444_800,
            offset in 0i64..400_000_000,
            anchor in proptest::option::of(1u8..=31),
            kind in 0usize..3,
        ) {
            let period = [BillingPeriod::Monthly, BillingPeriod::Quarterly, BillingPeriod::Yearly][kind];
            let start = DateTime::from_timestamp(start, 0).unwrap();
            let t = start + chrono::Duration::seconds(offset - 200_000_000);
            let calendar = Calendar::new(period, start, anchor);
            let p = calendar.period_of(t).unwrap();
            proptest::prop_assert!(p.contains(t));
            proptest::prop_assert_eq!(calendar.period_of(p.end).unwrap().start, p.end);
            let before = p.start - chrono::Duration::microseconds(1);
            proptest::prop_assert_eq!(calendar.period_of(before).unwrap().end, p.start);
            let day = u32::from(anchor.unwrap_or(start.day() as u8));
            let last = NaiveDate::from_ymd_opt(p.start.year(), p.start.month(), 1)
                .unwrap()
                .checked_add_months(Months::new(1))
                .unwrap()
                .pred_opt()
                .unwrap()
                .day();
            proptest::prop_assert_eq!(p.start.day(), day.min(last));
        }
    }
}
