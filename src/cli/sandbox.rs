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
    }
    .with_projects(usize::from(args.project_count));
    let projects_line = match &args.projects_out {
        Some(path) => Some(write_projects(path, &config)?),
        None => None,
    };
    let projects = usize::from(args.project_count);
    let state = Arc::new(SandboxState::new(config));
    if let Some(path) = &args.seed_from {
        seed_from(&state, path, projects, args.seed_values)?;
    }
    if let Some(n) = args.gateways {
        seed(&state, sandbox::generated_ids(n, 42), projects);
    }
    let shutdown = CancellationToken::new();
    let running = sandbox::start(Arc::clone(&state), args.port, shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))
        .exit_with(Exit::Usage)?;
    announce(&running, projects_line.as_deref());
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

/// The manifest's ids seeded (every id that is a UUID, even on a row that is otherwise
/// invalid), dealt to the projects; with `--seed-values manifest`, each valid row's
/// values over the sandbox's, so that it is then as it asks.
fn seed_from(
    state: &SandboxState,
    path: &std::path::Path,
    projects: usize,
    values: SeedValues,
) -> Result<(), Failure> {
    let manifest = Manifest::open(path, None)
        .map_err(manifest_failure)?
        .with_duplicates(crate::manifest::DuplicateCheck::Off);
    let mut ids = Vec::new();
    let mut wanted = Vec::new();
    manifest
        .read(|row| {
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
    seed(state, ids, projects);
    if values == SeedValues::Manifest {
        let now = state.snapshot();
        for (id, desired) in wanted {
            if let Some(fields) = now.get(&id) {
                state.edit(&id, crate::diff::merge(fields, &desired));
            }
        }
    }
    Ok(())
}

/// The environment lines a shell `eval`s (and the projects file's), on stdout.
fn announce(running: &sandbox::RunningSandbox, projects_line: Option<&str>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(running.env_lines().as_bytes());
    if let Some(line) = projects_line {
        let _ = out.write_all(line.as_bytes());
    }
    let _ = out.flush();
}

/// The gateways dealt to the projects in turn: the first to the main project, the next
/// to the second, and so on.
fn seed(state: &SandboxState, ids: Vec<Uuid>, projects: usize) {
    for (i, id) in ids.into_iter().enumerate() {
        state.seed_in(i % projects.max(1), [id]);
    }
}

/// The projects file (mode 0600, written whole) and the line that names it.
fn write_projects(path: &std::path::Path, config: &SandboxConfig) -> Result<String, Failure> {
    let shown = crate::inert::text(&path.display().to_string(), 200);
    let mut file = crate::output::AtomicFile::create(path)
        .with_context(|| format!("cannot write the projects file {shown}"))
        .exit_with(Exit::Usage)?;
    file.write_all(config.projects_yaml().as_bytes())
        .and_then(|()| file.commit())
        .with_context(|| format!("cannot write the projects file {shown}"))
        .exit_with(Exit::Usage)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot chmod 600 the projects file {shown}"))
                .exit_with(Exit::Usage)?;
        }
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    Ok(format!("SIGNALWIRE_PROJECTS_FILE={}\n", absolute.display()))
}
