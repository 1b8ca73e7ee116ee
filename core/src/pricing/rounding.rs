//! The one rounding rule: an invoice line total is rounded once, to its
//! currency's minor units (EUR 2, JPY 0, KWD 3), half away from zero
//! ("commercial rounding": 0.125 EUR → 0.13, −0.125 → −0.13). Nothing
//! else is rounded: per-event revenues and running totals keep full
//! precision, so they add up to the unrounded line exactly.

use rust_decimal::{Decimal, RoundingStrategy};

/// Rounds a line total. `None` when aforo does not know the currency.
pub fn round_line(amount: Decimal, currency: &str) -> Option<Decimal> {
    let units = aforo_crds::currency::minor_units(currency)?;
    Some(amount.round_dp_with_strategy(units, RoundingStrategy::MidpointAwayFromZero))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn lines_round_half_away_from_zero_to_minor_units() {
        assert_eq!(round_line(dec!(0.125), "EUR"), Some(dec!(0.13)));
        assert_eq!(round_line(dec!(-0.125), "EUR"), Some(dec!(-0.13)));
        assert_eq!(round_line(dec!(0.124999), "EUR"), Some(dec!(0.12)));
        assert_eq!(round_line(dec!(149.5), "JPY"), Some(dec!(150)));
        assert_eq!(round_line(dec!(1.0005), "KWD"), Some(dec!(1.001)));
        assert_eq!(round_line(dec!(1), "XXX"), None);
    }
}
