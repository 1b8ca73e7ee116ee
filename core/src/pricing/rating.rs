use std::collections::BTreeMap;
use std::str::FromStr;

use aforo_crds::catalog::{Charge, DecimalString};
use rust_decimal::Decimal;

/// A charge that cannot be priced: the catalog should have refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot price meter {meter:?}: {reason}")]
pub struct PricingError {
    pub meter: String,
    pub reason: String,
}

/// One tier: units in `(previous upTo, up_to]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    /// Inclusive upper bound; `None` for the last tier.
    pub up_to: Option<Decimal>,
    pub unit_price: Decimal,
    pub flat_fee: Decimal,
}

#[derive(Clone, Debug, PartialEq)]
enum Model {
    /// A fixed amount once there is any usage.
    Flat {
        amount: Decimal,
    },
    PerUnit {
        unit_price: Decimal,
    },
    /// A price per started package of `size` units.
    Package {
        size: Decimal,
        price: Decimal,
    },
    /// Each unit at the price of the tier it falls in; a tier's flat fee
    /// once any unit falls in it.
    Graduated {
        tiers: Vec<Tier>,
    },
    /// Every unit at the price of the tier the total falls in, plus that
    /// tier's flat fee.
    Volume {
        tiers: Vec<Tier>,
    },
    /// The quantity is already money (the sum of per-event percentage
    /// charges); its price is itself.
    Identity,
}

/// `price(q)` of one charge: the model applied to the quantity beyond the
/// included units. `price(0)` is 0 for every model: no usage, no usage charge
/// (recurring fees are charged by the bill run, not here).
#[derive(Clone, Debug, PartialEq)]
pub struct RatingFunction {
    model: Model,
    included: Decimal,
}

impl RatingFunction {
    pub fn flat(amount: Decimal) -> Self {
        Self::new(Model::Flat { amount })
    }
    pub fn per_unit(unit_price: Decimal) -> Self {
        Self::new(Model::PerUnit { unit_price })
    }
    pub fn package(size: Decimal, price: Decimal) -> Self {
        Self::new(Model::Package { size, price })
    }
    pub fn graduated(tiers: Vec<Tier>) -> Self {
        Self::new(Model::Graduated { tiers })
    }
    pub fn volume(tiers: Vec<Tier>) -> Self {
        Self::new(Model::Volume { tiers })
    }
    pub fn identity() -> Self {
        Self::new(Model::Identity)
    }
    fn new(model: Model) -> Self {
        RatingFunction {
            model,
            included: Decimal::ZERO,
        }
    }

    /// Units each period includes before the model applies.
    pub fn with_included(mut self, included: Decimal) -> Self {
        self.included = included;
        self
    }

    /// A copy with a different allowance (the bill run's rolled-over units).
    pub fn clone_with_included(&self, included: Decimal) -> Self {
        self.clone().with_included(included)
    }

    pub fn included(&self) -> Decimal {
        self.included
    }

    /// The price of a period's cumulative quantity `q` (negative `q` is 0).
    pub fn price(&self, q: Decimal) -> Decimal {
        let billable = q - self.included;
        if billable <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        match &self.model {
            Model::Flat { amount } => *amount,
            Model::PerUnit { unit_price } => billable * unit_price,
            Model::Package { size, price } => (billable / size).ceil() * price,
            Model::Graduated { tiers } => {
                let mut total = Decimal::ZERO;
                let mut lower = Decimal::ZERO;
                for tier in tiers {
                    let upper = tier.up_to.map_or(billable, |u| u.min(billable));
                    if upper > lower {
                        total += (upper - lower) * tier.unit_price + tier.flat_fee;
                    }
                    match tier.up_to {
                        Some(u) if u < billable => lower = u,
                        _ => break,
                    }
                }
                total
            }
            Model::Volume { tiers } => {
                let tier = tiers
                    .iter()
                    .find(|t| t.up_to.is_none_or(|u| billable <= u))
                    .or(tiers.last());
                tier.map_or(Decimal::ZERO, |t| billable * t.unit_price + t.flat_fee)
            }
            Model::Identity => billable,
        }
    }

    /// The revenue of moving the running total from `before` to `after`.
    pub fn marginal(&self, before: Decimal, after: Decimal) -> Decimal {
        self.price(after) - self.price(before)
    }
}

/// A percentage charge: each event pays `amount × percent / 100 + fixed fee`,
/// clamped to `[min, max]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PercentageRule {
    pub percent: Decimal,
    pub amount_property: String,
    pub fixed_fee: Decimal,
    pub min: Option<Decimal>,
    pub max: Option<Decimal>,
}

impl PercentageRule {
    pub fn event_charge(&self, amount: Decimal) -> Decimal {
        let mut charge = amount * self.percent / Decimal::ONE_HUNDRED + self.fixed_fee;
        if let Some(min) = self.min {
            charge = charge.max(min);
        }
        if let Some(max) = self.max {
            charge = charge.min(max);
        }
        charge
    }
}

/// Everything needed to price one charge of a rate plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ChargeRating {
    pub meter: String,
    pub function: RatingFunction,
    /// perUnit byDimension: the dimension and a rating function per value;
    /// values not listed use `function`. Each value keeps its own running total.
    pub by_dimension: Option<(String, BTreeMap<String, RatingFunction>)>,
    /// percentage: how each event becomes a quantity of money.
    pub percentage: Option<PercentageRule>,
}

impl ChargeRating {
    /// The rating of a catalog charge.
    pub fn from_charge(charge: &Charge) -> Result<Self, PricingError> {
        let fail = |reason: String| PricingError {
            meter: charge.meter.clone(),
            reason,
        };
        let dec = |d: &DecimalString| {
            Decimal::from_str(d.as_str())
                .map_err(|_| fail(format!("{:?} is not a decimal", d.as_str())))
        };
        let opt = |d: &Option<DecimalString>| d.as_ref().map(dec).transpose();
        let tiers = |tiers: &[aforo_crds::catalog::Tier]| -> Result<Vec<Tier>, PricingError> {
            tiers
                .iter()
                .map(|t| {
                    Ok(Tier {
                        up_to: opt(&t.up_to)?,
                        unit_price: dec(&t.unit_price)?,
                        flat_fee: opt(&t.flat_fee)?.unwrap_or_default(),
                    })
                })
                .collect()
        };
        let mut by_dimension = None;
        let mut percentage = None;
        let function = if let Some(flat) = &charge.flat {
            RatingFunction::flat(dec(&flat.amount)?)
        } else if let Some(per_unit) = &charge.per_unit {
            if let Some(by) = &per_unit.by_dimension {
                let mut prices = BTreeMap::new();
                for (value, price) in &by.prices {
                    prices.insert(value.clone(), RatingFunction::per_unit(dec(price)?));
                }
                by_dimension = Some((by.dimension.clone(), prices));
            }
            RatingFunction::per_unit(dec(&per_unit.unit_price)?)
        } else if let Some(package) = &charge.package {
            let size = dec(&package.size)?;
            if size.is_zero() {
                return Err(fail("package size is 0".into()));
            }
            RatingFunction::package(size, dec(&package.price)?)
        } else if let Some(graduated) = &charge.graduated {
            RatingFunction::graduated(tiers(graduated)?)
        } else if let Some(volume) = &charge.volume {
            RatingFunction::volume(tiers(volume)?)
        } else if let Some(p) = &charge.percentage {
            percentage = Some(PercentageRule {
                percent: dec(&p.percent)?,
                amount_property: p.amount_property.clone(),
                fixed_fee: opt(&p.fixed_fee)?.unwrap_or_default(),
                min: opt(&p.min)?,
                max: opt(&p.max)?,
            });
            RatingFunction::identity()
        } else {
            return Err(fail("the charge has no pricing model".into()));
        };
        let included = opt(&charge.included_units)?.unwrap_or_default();
        let with_included = |f: RatingFunction| f.with_included(included);
        Ok(ChargeRating {
            meter: charge.meter.clone(),
            function: with_included(function),
            by_dimension: by_dimension.map(|(d, m)| {
                (
                    d,
                    m.into_iter().map(|(k, f)| (k, with_included(f))).collect(),
                )
            }),
            percentage,
        })
    }

    /// The rating function for an event with this dimension value.
    pub fn function_for(&self, dimension_value: Option<&str>) -> &RatingFunction {
        match (&self.by_dimension, dimension_value) {
            (Some((_, prices)), Some(value)) => prices.get(value).unwrap_or(&self.function),
            _ => &self.function,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn tier(up_to: Option<i64>, unit_price: Decimal, flat_fee: Decimal) -> Tier {
        Tier {
            up_to: up_to.map(Decimal::from),
            unit_price,
            flat_fee,
        }
    }

    #[test]
    fn no_usage_costs_nothing_in_every_model() {
        let tiers = vec![
            tier(Some(10), dec!(1), dec!(5)),
            tier(None, dec!(0.5), dec!(0)),
        ];
        for f in [
            RatingFunction::flat(dec!(10)),
            RatingFunction::per_unit(dec!(2)),
            RatingFunction::package(dec!(100), dec!(3)),
            RatingFunction::graduated(tiers.clone()),
            RatingFunction::volume(tiers),
            RatingFunction::identity(),
        ] {
            assert_eq!(f.price(Decimal::ZERO), Decimal::ZERO, "{f:?}");
        }
    }

    #[test]
    fn packages_are_charged_when_started() {
        let f = RatingFunction::package(dec!(100), dec!(0.20));
        assert_eq!(f.price(dec!(1)), dec!(0.20));
        assert_eq!(f.price(dec!(100)), dec!(0.20));
        assert_eq!(f.price(dec!(100.5)), dec!(0.40));
    }

    #[test]
    fn included_units_are_free() {
        let f = RatingFunction::per_unit(dec!(0.01)).with_included(dec!(1000));
        assert_eq!(f.price(dec!(1000)), dec!(0));
        assert_eq!(f.price(dec!(1500)), dec!(5.00));
    }

    #[test]
    fn graduated_tiers_charge_each_unit_at_its_tier_with_flat_fees_on_entry() {
        let f = RatingFunction::graduated(vec![
            tier(Some(5), dec!(5), dec!(0)),
            tier(Some(10), dec!(4), dec!(2)),
            tier(None, dec!(3), dec!(1)),
        ]);
        assert_eq!(f.price(dec!(5)), dec!(25));
        assert_eq!(f.price(dec!(6)), dec!(25) + dec!(4) + dec!(2));
        assert_eq!(
            f.price(dec!(12)),
            dec!(25) + dec!(20) + dec!(2) + dec!(6) + dec!(1)
        );
    }

    #[test]
    fn volume_tiers_reprice_every_unit_so_a_marginal_can_be_negative() {
        let f = RatingFunction::volume(vec![
            tier(Some(100), dec!(1), dec!(0)),
            tier(None, dec!(0.8), dec!(0)),
        ]);
        assert_eq!(f.price(dec!(100)), dec!(100));
        assert_eq!(f.price(dec!(101)), dec!(80.8));
        assert_eq!(f.marginal(dec!(100), dec!(101)), dec!(-19.2));
    }

    #[test]
    fn percentages_clamp_each_event() {
        let rule = PercentageRule {
            percent: dec!(2.9),
            amount_property: "amount".into(),
            fixed_fee: dec!(0.30),
            min: Some(dec!(0.50)),
            max: Some(dec!(10)),
        };
        assert_eq!(rule.event_charge(dec!(100)), dec!(3.20));
        assert_eq!(rule.event_charge(dec!(1)), dec!(0.50));
        assert_eq!(rule.event_charge(dec!(1000)), dec!(10));
    }
}
