//! `export`: every gateway's current state as a manifest that `apply` accepts as is.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Context, Exit, ExitContext, ExportArgs, Failure, usage};
use crate::client::{Cancel, ReadClient, RequestStats};
use crate::limiter::Limiter;
use crate::manifest::{Format, ManifestWriter};
use crate::output::{Destination, refuse_clash};
use crate::settings::named;

/// Flags and variables the messages cite, from their declarations.
const PROJECTS_FLAG: &str = named::projects.long_flag();

/// The manifest writer of `export` and `rollback`: a file named by `-o` takes its place
/// only when complete (a refused credential or a dropped connection leaves yesterday's
/// file whole); to a terminal, the server's values are shown inert; to a file or a pipe,
/// exactly.
pub(super) fn manifest_out(
    output: &Option<PathBuf>,
    format: Format,
) -> Result<ManifestWriter<Destination>, Failure> {
    manifest_out_with(output, format, false)
}

/// [`manifest_out`], with a `project` column when `projects`.
pub(super) fn manifest_out_with(
    output: &Option<PathBuf>,
    format: Format,
    projects: bool,
) -> Result<ManifestWriter<Destination>, Failure> {
    let out = Destination::open(output.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", shown(output)))
        .exit_with(Exit::Usage)?;
    let on_terminal = output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    Ok(ManifestWriter::with_projects(out, format, projects)
        .exit_with(Exit::Usage)?
        .for_terminal(on_terminal))
}

/// The output as named in messages.
pub(super) fn shown(output: &Option<PathBuf>) -> String {
    output
        .as_deref()
        .map_or_else(|| "stdout".into(), |p| p.display().to_string())
}

pub async fn run(ctx: &Context, args: &ExportArgs) -> Result<Exit, Failure> {
    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Csv);
    if let Some(set) = ctx.projects()? {
        return export_projects(ctx, args, format, &set).await;
    }
    if !args.project.is_empty() {
        return Err(usage(format!(
            "--project picks projects of a projects file: give {PROJECTS_FLAG} FILE"
        )));
    }
    let client = read_client(ctx)?;
    if let Some(path) = &args.output {
        let config = ctx
            .global
            .config
            .as_deref()
            .map(|c| (const { named::config.long_flag() }, c));
        refuse_clash(&[("-o", path)], config.as_slice()).map_err(usage)?;
    }
    let mut writer = manifest_out(&args.output, format)?;
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
    writer
        .finish()
        .and_then(Destination::commit)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", shown(&args.output)))
        .exit_with(Exit::Usage)?;
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
    format: Format,
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
    if let Some(path) = &args.output {
        let config = ctx
            .global
            .config
            .as_deref()
            .map(|c| (const { named::config.long_flag() }, c));
        refuse_clash(&[("-o", path)], config.as_slice()).map_err(usage)?;
    }
    let base_url = ctx.space_url()?;
    let mut writer = manifest_out_with(&args.output, format, true)?;
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
    writer
        .finish()
        .and_then(Destination::commit)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", shown(&args.output)))
        .exit_with(Exit::Usage)?;
    tracing::info!(
        gateways = total,
        projects = chosen.len(),
        "exported {total} gateways"
    );
    Ok(Exit::Ok)
}
