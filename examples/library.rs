//! `sipgw-bulk` as a library: plan a manifest against a sandbox, save the plan, then apply
//! exactly that plan, all from Rust, with no process of our own in between.
//!
//! ```sh
//! cargo run --example library
//! ```
//!
//! It starts a sandbox on a loopback port (in this process), writes a small manifest,
//! plans it with [`run::execute`] (read only, plan saved), applies the saved plan, and checks
//! that the sandbox now holds what the manifest asked for. The CLI is the same API with
//! flags and a terminal around it.

use std::sync::Arc;

use sipgw_bulk::client::ClientConfig;
use sipgw_bulk::retry::RetryPolicy;
use sipgw_bulk::run::{self, Approval, Finished, Mode, RunHooks, RunOptions, Source};
use sipgw_bulk::sandbox::{self, SandboxConfig, SandboxState};
use sipgw_bulk::secret::{Credentials, Secret};
use sipgw_bulk::status::Status;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A simulated space with five gateways, on 127.0.0.1:PORT.
    let ids = sandbox::generated_ids(5, 1);
    let state = Arc::new(SandboxState::new(SandboxConfig::default()));
    state.seed(ids.iter().copied());
    let shutdown = CancellationToken::new();
    let space = sandbox::start(Arc::clone(&state), 0, shutdown.clone()).await?;

    // What every gateway should use: OPUS first.
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("codecs.csv");
    let mut text = String::from("id,codecs\n");
    for id in &ids {
        text.push_str(&format!("{id},OPUS;PCMU\n"));
    }
    std::fs::write(&manifest, text)?;

    let client = ClientConfig {
        base_url: url::Url::parse(&space.base_url())?,
        credentials: Credentials {
            project_id: state.config().project_id.clone(),
            token: Secret::new(state.config().api_token.clone()),
        },
        timeout: std::time::Duration::from_secs(30),
        connect_timeout: std::time::Duration::from_secs(10),
        retry: RetryPolicy::default(),
        pool_size: 8,
    };
    let hooks = || RunHooks {
        stop: CancellationToken::new(),
        hurry: CancellationToken::new(),
        observe: None,
    };

    // 1. Plan, and save the plan.
    let plan_file = dir.path().join("codecs.plan");
    let mut plan = RunOptions::new(
        Source::Manifest {
            path: manifest.clone(),
            format: None,
        },
        Mode::Plan,
        client.clone(),
    );
    plan.report = Some(dir.path().join("plan.csv"));
    plan.save_plan = Some(plan_file.clone());
    let Finished::Ran { outcome, .. } = run::execute(plan, Approval::Given, hooks()).await? else {
        anyhow::bail!("the plan did not run");
    };
    println!(
        "plan: {} to update, {} unchanged",
        outcome.count(Status::WouldUpdate),
        outcome.count(Status::Unchanged)
    );

    // 2. Apply exactly the saved plan.
    let mut apply = RunOptions::new(Source::Plan(plan_file), Mode::Apply, client);
    apply.report = Some(dir.path().join("apply.csv"));
    let Finished::Ran { outcome, start, .. } =
        run::execute(apply, Approval::Given, hooks()).await?
    else {
        anyhow::bail!("the apply did not run");
    };
    println!(
        "apply: {} updated, {} conflict (report {})",
        outcome.count(Status::Updated),
        outcome.count(Status::Conflict),
        start.report.display()
    );

    // 3. The space now holds what the manifest asked for.
    let now = state.snapshot();
    anyhow::ensure!(
        ids.iter().all(|id| now[id]
            .codecs
            .iter()
            .map(|c| c.as_str())
            .eq(["OPUS", "PCMU"])),
        "the sandbox does not hold the planned codecs"
    );
    anyhow::ensure!(outcome.count(Status::Updated) == ids.len() as u64);
    println!("ok: every gateway now prefers OPUS");
    shutdown.cancel();
    Ok(())
}
