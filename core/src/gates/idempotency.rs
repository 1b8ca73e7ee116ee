//! Gate 3: idempotency. This module names an event's key; the store claims
//! it with the write, in one transaction (see `aforo_store::Store::commit`),
//! so a retry after a failed write still counts exactly once and a retry
//! after a successful one is answered DUPLICATE with the original's id.
//!
//! The default key is `(source, id)` within the tenant. Meters and webhook
//! sources will be able to configure their own key expression.

use aforo_crds::SourceEvent;

/// The idempotency key of an event: its source and id. The schema gate
/// forbids control characters in both, so the separator cannot be forged.
pub fn key(event: &SourceEvent) -> String {
    let mut key = String::with_capacity(event.source.len() + event.id.len() + 1);
    key.push_str(&event.source);
    key.push('\n');
    key.push_str(&event.id);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use aforo_crds::Tier;
    use chrono::Utc;

    fn event(source: &str, id: &str) -> SourceEvent {
        SourceEvent {
            id: id.into(),
            source: source.into(),
            event_type: "t".into(),
            customer: "c".into(),
            time: Utc::now(),
            properties: Default::default(),
            tier: Tier::Rest,
            tier_detail: String::new(),
        }
    }

    #[test]
    fn source_and_id_together_make_the_key() {
        assert_eq!(key(&event("a", "1")), key(&event("a", "1")));
        assert_ne!(key(&event("a", "1")), key(&event("b", "1")));
        assert_ne!(key(&event("a", "1")), key(&event("a", "2")));
        // Concatenation alone would make these equal.
        assert_ne!(key(&event("ab", "c")), key(&event("a", "bc")));
    }
}
