//! `aforo operator`: the Kubernetes controllers (see the aforo-operator crate).

use std::process::ExitCode;

use aforo_operator::{Operator, OperatorConfig};
use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct OperatorArgs {
    #[command(flatten)]
    config: OperatorConfig,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let client = kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client (in a pod: its service account; outside: KUBECONFIG or ~/.kube/config)",
    )?;
    let operator = Operator::start(client, args.config).await?;
    // One line on stdout when serving: scripts and tests wait for it.
    println!("aforo operator ready: http=http://{}", operator.http_addr());
    operator.run_until(crate::roles::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
