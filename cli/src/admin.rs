//! Tenants and API keys. These act on the store directly, because they are
//! how the first credentials come to exist; keep them to operators.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::roles::StoreArgs;

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a tenant. The key is printed once and stored only as a hash.
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// What the key is for, e.g. `ci` or `gateway-eu`.
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("tenant name {name:?} must be 1–63 characters of a–z, 0–9, '-' or '_'");
    }
    Ok(())
}

pub async fn tenants(command: TenantsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantsCommand::Create { name, store } => {
            valid_name(&name)?;
            let tenant = store.open().await?.create_tenant(&name).await?;
            println!("created tenant {} ({})", tenant.name, tenant.id);
        }
        TenantsCommand::List { store } => {
            for tenant in store.open().await?.list_tenants().await? {
                println!(
                    "{}\t{}\t{}",
                    tenant.name,
                    tenant.id,
                    tenant.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            tenant,
            label,
            store,
        } => {
            let store = store.open().await?;
            let found = store.tenant_by_name(&tenant).await?.with_context(|| {
                format!(
                    "no tenant named {tenant:?}; create it with `aforo tenants create {tenant}`"
                )
            })?;
            let key = aforo_store::auth::create_key(store.as_ref(), &found, &label).await?;
            eprintln!("API key for tenant {tenant} (shown once; only its hash is stored):");
            println!("{}", key.plaintext);
        }
    }
    Ok(ExitCode::SUCCESS)
}
