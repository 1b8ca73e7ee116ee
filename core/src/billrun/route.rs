//! Stage 9, Route: where the invoice goes once settled. The internal ledger
//! (the invoice tables) always; a signed `invoice.finalized` webhook and
//! CSV/JSON exports when configured. Settling writes one delivery per
//! external route in the same transaction as the invoice (an outbox), so a
//! destination that is down delays a delivery and never loses it.

use serde::{Deserialize, Serialize};

use super::{Draft, Inputs, Route};

/// The billing role's destinations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingConfig {
    /// Where `invoice.finalized` is POSTed.
    pub webhook_url: Option<String>,
    /// The Standard Webhooks secret (`whsec_…`) it is signed with.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<String>,
    /// A folder each invoice is exported to.
    pub export_dir: Option<String>,
    /// "csv", "json" or both.
    pub export_formats: Vec<String>,
}

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let config = &inputs.routing;
    draft.routes = vec![Route::Ledger];
    if let Some(url) = &config.webhook_url {
        if config.webhook_secret.is_none() {
            return Err("the invoice webhook has a URL but no signing secret".into());
        }
        draft.routes.push(Route::Webhook { url: url.clone() });
    }
    if let Some(dir) = &config.export_dir {
        for format in &config.export_formats {
            if format != "csv" && format != "json" {
                return Err(format!("export format {format:?} is not csv or json"));
            }
            draft.routes.push(Route::Export {
                dir: dir.clone(),
                format: format.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_ledger_always_and_configured_destinations() {
        let mut inputs = inputs_with(plan_per_unit("1", None), vec![]);
        let mut draft = Draft::new();
        run(&mut draft, &inputs).unwrap();
        assert_eq!(draft.routes, vec![Route::Ledger]);
        inputs.routing = Arc::new(RoutingConfig {
            webhook_url: Some("http://127.0.0.1:1/hook".into()),
            webhook_secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            export_dir: Some("out".into()),
            export_formats: vec!["json".into()],
        });
        run(&mut draft, &inputs).unwrap();
        assert_eq!(draft.routes.len(), 3);
    }

    #[test]
    fn a_webhook_without_a_secret_fails() {
        let mut inputs = inputs_with(plan_per_unit("1", None), vec![]);
        inputs.routing = Arc::new(RoutingConfig {
            webhook_url: Some("http://127.0.0.1:1/hook".into()),
            ..Default::default()
        });
        assert!(
            run(&mut Draft::new(), &inputs)
                .unwrap_err()
                .contains("secret")
        );
    }
}
