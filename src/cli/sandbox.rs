//! `sandbox`: serve a simulated SignalWire space on loopback until interrupted.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::args::SeedValues;
use super::{Exit, ExitContext, Failure, SandboxArgs, manifest_failure};
use crate::manifest::Manifest;
use crate::sandbox::{self, Faults, SandboxConfig, SandboxState};

pub async fn run(args: SandboxArgs) -> Result<Exit, Failure> {
    let config = SandboxConfig {
        write_limit: args.write_limit,
        limit_window: args
            .limit_window
            .or(args.announce_limit.then_some(10))
            .map(std::time::Duration::from_secs),
        announce_limit: args.announce_limit,
        background_writes: args.background_writes,
        faults: Faults {
            status_rates: args.fault,
            retry_after_secs: args.fault_retry_after,
            latency: std::time::Duration::from_millis(args.latency_ms),
            drop_rate: args.drop_rate.clamp(0.0, 1.0),
        },
        failing_ids: args.fail_patch,
        mismatch_ids: args.mismatch_patch,
        hold_patch: args.hold_patch,
        hold_applied: args.hold_applied,
        ..SandboxConfig::default()
    };
    let state = Arc::new(SandboxState::new(config));
    if let Some(path) = &args.seed_from {
        let manifest = Manifest::open(path, None)
            .map_err(manifest_failure)?
            .with_duplicates(crate::manifest::DuplicateCheck::Off);
        let mut ids = Vec::new();
        let mut wanted = Vec::new();
        manifest
            .read(|row| {
                // Seed every id that is a UUID, even on a row that is otherwise invalid.
                match row {
                    Ok(r) => {
                        ids.push(r.id);
                        wanted.push((r.id, r.desired));
                    }
                    Err(bad) => ids.extend(Uuid::try_parse(&bad.id).ok()),
                }
                ControlFlow::Continue(())
            })
            .map_err(manifest_failure)?;
        state.seed(ids);
        if args.seed_values == SeedValues::Manifest {
            // The manifest's values over the sandbox's: a valid row is then as it asks.
            let now = state.snapshot();
            for (id, desired) in wanted {
                if let Some(fields) = now.get(&id) {
                    state.edit(&id, crate::diff::merge(fields, &desired));
                }
            }
        }
    }
    if let Some(n) = args.gateways {
        state.seed(sandbox::generated_ids(n, 42));
    }
    let shutdown = CancellationToken::new();
    let running = sandbox::start(Arc::clone(&state), args.port, shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))
        .exit_with(Exit::Usage)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(running.env_lines().as_bytes());
        let _ = out.flush();
    }
    tracing::info!(
        gateways = state.len(),
        url = %running.base_url(),
        "sandbox serving until interrupted"
    );
    super::wait_for_signal().await;
    shutdown.cancel();
    let _ = running.task.await;
    Ok(Exit::Ok)
}
