//! `metav1.Condition`s, as the Kubernetes API conventions and kstatus read
//! them: a `Ready` summary, CamelCase reasons, `observedGeneration` on each,
//! and a `lastTransitionTime` that moves only when the status flips (so an
//! unchanged outcome yields a byte-identical status, and no write).
//!
//! `Reconciling` and `Stalled` are kstatus's "abnormal-true" conditions:
//! present only while true, absent (meaning False) otherwise.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as a reconcile decides it, before times are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn true_(type_: &'static str, reason: &str, message: impl Into<String>) -> Desired {
        Desired {
            type_,
            status: true,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    pub fn false_(type_: &'static str, reason: &str, message: impl Into<String>) -> Desired {
        Desired {
            type_,
            status: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// `Ready` summarises `parts`: True when every part is, else False with the
/// reason and message of the first part that is not.
pub fn ready(parts: &[Desired], ready_message: &str) -> Desired {
    match parts.iter().find(|p| !p.status) {
        None => Desired::true_(READY, "Ready", ready_message),
        Some(first) => Desired::false_(READY, &first.reason, first.message.clone()),
    }
}

/// The conditions to store: `desired` in order, each keeping its previous
/// `lastTransitionTime` when its status did not change, `now` otherwise.
pub fn settle(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.clone(),
                // The API caps a condition's message at 32 KiB.
                message: truncate(&d.message, 4096),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether condition `type_` is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// `text`, cut at a character boundary to at most `max` bytes.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The current time, at the second precision the apiserver stores.
pub fn now() -> Time {
    let seconds = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("a time"))
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let first = settle(
            &[],
            &[Desired::false_("Available", "Progressing", "0/2 available")],
            Some(1),
            &at(100),
        );
        let again = settle(
            &first,
            &[Desired::false_("Available", "Progressing", "1/2 available")],
            Some(2),
            &at(200),
        );
        assert_eq!(again[0].last_transition_time, at(100));
        assert_eq!(again[0].message, "1/2 available");
        assert_eq!(again[0].observed_generation, Some(2));

        let flipped = settle(
            &again,
            &[Desired::true_("Available", "Available", "2/2 available")],
            Some(2),
            &at(300),
        );
        assert_eq!(flipped[0].last_transition_time, at(300));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn an_unchanged_outcome_settles_to_identical_conditions() {
        let desired = [
            Desired::true_("Available", "Available", "ok"),
            Desired::true_(READY, "Ready", "ok"),
        ];
        let first = settle(&[], &desired, Some(3), &at(100));
        assert_eq!(settle(&first, &desired, Some(3), &at(999)), first);
    }

    #[test]
    fn ready_takes_the_reason_and_message_of_the_first_failing_part() {
        let parts = [
            Desired::true_("Available", "Available", "ok"),
            Desired::false_(
                "CatalogApplied",
                "CatalogInvalid",
                "RatePlan/pro: spec.currency",
            ),
            Desired::false_("Other", "Later", "not this one"),
        ];
        let summary = ready(&parts, "all good");
        assert!(!summary.status);
        assert_eq!(summary.reason, "CatalogInvalid");
        assert_eq!(summary.message, "RatePlan/pro: spec.currency");
        assert!(ready(&parts[..1], "all good").status);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let text = "é".repeat(10);
        let cut = truncate(&text, 8);
        assert!(cut.len() <= 8, "{cut}");
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short", 8), "short");
    }
}
