//! `export`: every gateway's current state as a manifest that `apply` accepts as is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Context, Exit, ExitContext, ExportArgs, Failure, usage};
use crate::client::{Cancel, ReadClient, RequestStats};
use crate::limiter::Limiter;
use crate::manifest::{Format, ManifestWriter};
use crate::output::{Destination, refuse_clash};
use crate::settings::named;

/// Flags and variables the messages cite, from their declarations.
const PROJECTS_FLAG: &str = named::projects.long_flag();

/// The manifest output of `export` and `rollback` (`-o FILE`, or stdout), in one call:
/// its format (`--format`, else the file's extension, else CSV); the file refused when
/// it names one of the command's `inputs` (exit 64); opened, with a `project` column when
/// `projects`. A file takes its place only when complete ([`finish_output`]: a refused
/// credential or a dropped connection leaves yesterday's file whole); to a terminal, the
/// server's values are shown inert; to a file or a pipe, exactly.
pub(super) fn open_output(
    output: &Option<PathBuf>,
    format: Option<Format>,
    inputs: &[(&str, &Path)],
    projects: bool,
) -> Result<ManifestWriter<Destination>, Failure> {
    let format = format
        .or_else(|| output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Csv);
    if let Some(path) = output {
        refuse_clash(&[("-o", path)], inputs).map_err(usage)?;
    }
    let out = Destination::open(output.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", shown(output)))
        .exit_with(Exit::Usage)?;
    let on_terminal = output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    Ok(ManifestWriter::with_projects(out, format, projects)
        .exit_with(Exit::Usage)?
        .for_terminal(on_terminal))
}

/// The output, complete: a file takes its place now.
pub(super) fn finish_output(
    writer: ManifestWriter<Destination>,
    output: &Option<PathBuf>,
) -> Result<(), Failure> {
    writer
        .finish()
        .and_then(Destination::commit)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", shown(output)))
        .exit_with(Exit::Usage)
}

/// `--config`, the one file `export` reads: no output may name it.
fn config_input(ctx: &Context) -> Option<(&'static str, &Path)> {
    ctx.global
        .config
        .as_deref()
        .map(|c| (const { named::config.long_flag() }, c))
}

/// The output as named in messages.
pub(super) fn shown(output: &Option<PathBuf>) -> String {
    output
        .as_deref()
        .map_or_else(|| "stdout".into(), |p| p.display().to_string())
}

pub async fn run(ctx: &Context, args: &ExportArgs) -> Result<Exit, Failure> {
    if let Some(set) = ctx.projects()? {
        return export_projects(ctx, args, &set).await;
    }
    if !args.project.is_empty() {
        return Err(usage(format!(
            "--project picks projects of a projects file: give {PROJECTS_FLAG} FILE"
        )));
    }
    let client = read_client(ctx)?;
    let config = config_input(ctx);
    let mut writer = open_output(&args.output, args.format, config.as_slice(), false)?;
    let page_size = args.page_size.clamp(1, 1000);
    let paging = ctx.settings.paging;
    let stats = crate::export::export(&client, page_size, paging, |g| {
        writer.write(&g.id, &g.sip_gateway)
    })
    .await
    .map_err(|e| {
        let (exit, hint) = match &e {
            crate::export::ExportError::Api(api) => {
                super::space::request_failure(ctx.target().ok().flatten().as_ref(), api)
            }
            _ => (Exit::RowErrors, String::new()),
        };
        Failure {
            exit,
            error: anyhow::anyhow!("{:#}{hint}", anyhow::Error::from(e)),
        }
    })?;
    finish_output(writer, &args.output)?;
    let target = ctx.target().ok().flatten();
    let from = target.map_or_else(String::new, |t| format!(" from {t}"));
    tracing::info!(
        gateways = stats.gateways,
        pages = stats.pages,
        "exported {} gateways{from}",
        stats.gateways
    );
    Ok(Exit::Ok)
}

/// A read-only client from the context's settings and credentials.
pub(super) fn read_client(ctx: &Context) -> Result<ReadClient, Failure> {
    let config = ctx.client_config()?;
    let limiter = Arc::new(Limiter::new(
        Some(ctx.settings.write_rate),
        ctx.settings.read_rate,
    ));
    ReadClient::new(
        &config,
        limiter,
        Arc::new(RequestStats::default()),
        Cancel::default(),
    )
    .exit_with(Exit::Usage)
}

/// A read-only client with the credentials of the project `key` names in the projects
/// file (`show ID --project`); no projects file, or a project it lacks: exit 64.
pub(super) fn project_client(ctx: &Context, key: &str) -> Result<ReadClient, Failure> {
    let set = ctx.projects()?.ok_or_else(|| {
        usage(format!(
            "--project names a project of a projects file: give {PROJECTS_FLAG} FILE"
        ))
    })?;
    let (_, project) = set.resolve(Some(key)).map_err(usage)?;
    let config = ctx.client_config_for(ctx.space_url()?, project.credentials());
    ReadClient::new(
        &config,
        Arc::new(Limiter::new(
            Some(ctx.settings.write_rate),
            ctx.settings.read_rate,
        )),
        Arc::new(RequestStats::default()),
        Cancel::default(),
    )
    .exit_with(Exit::Usage)
}

/// `export --projects`: every chosen project's gateways in one manifest, each row with its
/// project (the file's name where it gives one, else the id), each listed with its own
/// project's credentials.
async fn export_projects(
    ctx: &Context,
    args: &ExportArgs,
    set: &crate::projects::ProjectSet,
) -> Result<Exit, Failure> {
    let mut chosen = Vec::new();
    for key in &args.project {
        let (i, _) = set.resolve(Some(key)).map_err(usage)?;
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    if chosen.is_empty() {
        chosen = (0..set.len()).collect();
    }
    let config = config_input(ctx);
    let mut writer = open_output(&args.output, args.format, config.as_slice(), true)?;
    let base_url = ctx.space_url()?;
    let page_size = args.page_size.clamp(1, 1000);
    let mut total = 0;
    for project in chosen.iter().filter_map(|i| set.get(*i)) {
        let client = ReadClient::new(
            &ctx.client_config_for(base_url.clone(), project.credentials()),
            Arc::new(Limiter::new(
                Some(ctx.settings.write_rate),
                ctx.settings.read_rate,
            )),
            Arc::new(RequestStats::default()),
            crate::client::Cancel::default(),
        )
        .exit_with(Exit::Usage)?;
        let label = project.label();
        let stats = crate::export::export(&client, page_size, ctx.settings.paging, |g| {
            writer.write_in(&g.id, &g.sip_gateway, Some(label))
        })
        .await
        .map_err(|e| {
            let (exit, hint) = match &e {
                crate::export::ExportError::Api(api) => super::space::request_failure(None, api),
                _ => (Exit::RowErrors, String::new()),
            };
            Failure {
                exit,
                error: anyhow::anyhow!(
                    "project {}: {:#}{hint}",
                    crate::inert::text(label, 80),
                    anyhow::Error::from(e)
                ),
            }
        })?;
        tracing::info!(project = %crate::inert::text(label, 80), gateways = stats.gateways, "project exported");
        total += stats.gateways;
    }
    finish_output(writer, &args.output)?;
    tracing::info!(
        gateways = total,
        projects = chosen.len(),
        "exported {total} gateways"
    );
    Ok(Exit::Ok)
}
