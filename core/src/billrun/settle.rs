//! Stage 10, Settle: lines numbered, each line's Merkle root over its
//! events' validation hashes, totals, and the invoice document. The store
//! then numbers the invoice and writes it, its lineage
//! (`bill_run_event_index`: each line's events) and its deliveries in one
//! transaction; after that nothing changes it (the tables refuse updates).

use rust_decimal::Decimal;
use uuid::Uuid;

use super::{Draft, Inputs, Invoice, LineKind, merkle};

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let mut lines = std::mem::take(&mut draft.lines);
    for (i, line) in lines.iter_mut().enumerate() {
        line.number = u32::try_from(i + 1).map_err(|_| "too many lines".to_owned())?;
        line.merkle_root = merkle::root(line.events.iter().map(|(id, h)| (id, &**h)));
        line.event_count = line.events.len() as u64;
    }
    let sum = |kinds: &[LineKind]| -> Decimal {
        lines
            .iter()
            .filter(|l| kinds.contains(&l.kind))
            .map(|l| l.amount)
            .sum()
    };
    let subtotal = sum(&[
        LineKind::Usage,
        LineKind::Recurring,
        LineKind::Adjustment,
        LineKind::Commitment,
    ]);
    let discount = sum(&[LineKind::Discount]);
    let tax = sum(&[LineKind::Tax]);
    let mut flags: Vec<String> = lines
        .iter()
        .flat_map(|l| l.flags.iter().cloned())
        .chain(draft.flags.iter().cloned())
        .collect();
    flags.sort();
    flags.dedup();
    draft.invoice = Some(Invoice {
        id: Uuid::nil(),
        number: String::new(),
        tenant: inputs.tenant,
        subscription: inputs.subscription,
        customer: inputs.customer.clone(),
        rate_plan: inputs.rate_plan.clone(),
        catalog_version: inputs.catalog_version,
        currency: inputs.plan.currency.clone(),
        period: inputs.period,
        cutoff: inputs.cutoff,
        total: subtotal + discount + tax,
        subtotal,
        discount,
        tax,
        lines,
        flags,
        quotas: draft.quotas.clone(),
        rollover: draft.rollover_out.clone(),
        routes: draft.routes.clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Stage, bill};
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn lines_are_numbered_rooted_and_totalled() {
        let items = (1..=4).map(|i| sum_item(i, "api", dec!(25))).collect();
        let inputs = inputs_with(plan_per_unit("0.1", None), items);
        let invoice = bill(&inputs, Uuid::from_u128(9)).unwrap();
        assert_eq!(invoice.id, Uuid::from_u128(9));
        assert_eq!(invoice.lines[0].number, 1);
        assert_eq!(invoice.lines[0].event_count, 4);
        assert!(invoice.lines[0].merkle_root.is_some());
        assert_eq!(invoice.total, dec!(10));
        // The document omits the event lists and is stable.
        let doc = invoice.document();
        assert!(!doc.contains(&event_id(1).to_string()));
        assert_eq!(doc, invoice.clone().document());
        assert_eq!(Stage::ALL.len(), 10);
    }
}
