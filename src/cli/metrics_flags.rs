//! The run's metrics as the flags ask for them: which sinks (`--metrics-file`,
//! `--push-gateway`, `--metrics-listen`), and the labels every metric carries.

use std::time::Duration;

use super::{Context, Failure, JobArgs, usage};
use crate::metrics::{RunLabels, SinksConfig};
use crate::run::Mode;

/// The metrics' sinks the flags ask for.
pub(super) fn sinks_config(job: &JobArgs) -> Result<SinksConfig, Failure> {
    let listen = match job.metrics_listen.as_deref() {
        None => None,
        Some(addr) => Some(listen_address(addr).ok_or_else(|| {
            usage(format!(
                "--metrics-listen {}: give ADDR:PORT or a PORT (127.0.0.1 then)",
                crate::inert::text(addr, 100)
            ))
        })?),
    };
    if let Some(path) = &job.metrics_file {
        refuse_special_metrics_file(path)?;
    }
    Ok(SinksConfig {
        file: job.metrics_file.clone(),
        push: job.push_gateway.clone(),
        push_every: Duration::from_secs(job.push_interval.max(1)),
        listen,
    })
}

/// A metrics file is read back (the last success) and replaced by a rename: one that
/// exists and is not a regular file (a FIFO would wait for a reader or a writer forever,
/// a device is no file a collector reads) is refused before the run, exit 64.
fn refuse_special_metrics_file(path: &std::path::Path) -> Result<(), Failure> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(usage(format!(
            "--metrics-file {}: not a regular file (a FIFO, a device or a directory): the \
             metrics file is read back and replaced whole; name a file (node_exporter's \
             textfile collector reads *.prom files)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// `ADDR:PORT`, or a bare port on loopback.
fn listen_address(text: &str) -> Option<std::net::SocketAddr> {
    match text.trim().parse::<u16>() {
        Ok(port) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => text.trim().parse().ok(),
    }
}

/// The labels of this run's metrics: the space's host (never a path, user or token), the
/// command, the shard.
pub(super) fn run_labels(ctx: &Context, job: &JobArgs, mode: Mode) -> RunLabels {
    let space = ctx
        .settings
        .base_url
        .as_ref()
        .map(|url| match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => String::new(),
        })
        .unwrap_or_default();
    RunLabels {
        space,
        command: match mode {
            Mode::Plan => "plan",
            Mode::Apply => "apply",
        },
        shard: job
            .shard
            .map_or_else(|| "all".to_owned(), |s| s.to_string()),
    }
}

pub(super) fn read_mode_name(mode: crate::snapshot::ReadMode) -> &'static str {
    match mode {
        crate::snapshot::ReadMode::Get => "get",
        crate::snapshot::ReadMode::List => "list",
        crate::snapshot::ReadMode::Auto => "auto",
    }
}
