//! `export`: every gateway's current state as a manifest that `apply` accepts as is.

use std::io::Write;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Context, Exit, ExitContext, ExportArgs, Failure};
use crate::client::{ReadClient, RequestStats};
use crate::limiter::Limiter;
use crate::manifest::{Format, ManifestWriter};

pub async fn run(ctx: &Context, args: &ExportArgs) -> Result<Exit, Failure> {
    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Csv);
    let client = read_client(ctx)?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))
                .exit_with(Exit::Usage)?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = ManifestWriter::new(out, format).exit_with(Exit::Usage)?;
    let page_size = args.page_size.clamp(1, 1000);
    let paging = ctx.settings.paging;
    let stats = crate::export::export(&client, page_size, paging, |g| {
        writer.write(&g.id, &g.sip_gateway)
    })
    .await
    .map_err(|e| {
        use crate::client::ErrorKind;
        let exit = match &e {
            crate::export::ExportError::Api(api)
                if matches!(api.kind, ErrorKind::Unauthorized | ErrorKind::Aborted) =>
            {
                Exit::Aborted
            }
            _ => Exit::RowErrors,
        };
        Failure {
            exit,
            error: e.into(),
        }
    })?;
    writer.finish().exit_with(Exit::Usage)?;
    tracing::info!(gateways = stats.gateways, pages = stats.pages, "exported");
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
        CancellationToken::new(),
    )
    .exit_with(Exit::Usage)
}
