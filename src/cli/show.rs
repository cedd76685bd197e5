//! `show ID`: one gateway's current state, as a manifest row `apply` accepts (or JSON).
//! `show --plan PLAN`: a saved plan printed as the diff it is, checked as `apply --plan`
//! checks it, with no request sent.

use std::io::{BufRead, Write};
use std::path::Path;

use super::{Exit, ExitContext, Failure, ShowArgs, usage};
use crate::engine::Observer;
use crate::manifest::{Format, ManifestWriter, PlanLine};
use crate::plan_view::{PlanFormat, PlanView};
use crate::report::RowRecord;
use crate::saved_plan;

pub async fn run(ctx: &super::Context, args: &ShowArgs) -> Result<Exit, Failure> {
    if let Some(plan) = &args.plan {
        return show_plan(ctx, plan, args.diff_format.unwrap_or(PlanFormat::Text));
    }
    let text = args.id.as_deref().unwrap_or_default();
    let id = uuid::Uuid::try_parse(text.trim()).map_err(|_| {
        usage(format!(
            "`{}` is not a gateway id (a UUID like 0823a606-0aff-4c90-9eba-f88ba118fe05)",
            crate::inert::text(text, 64)
        ))
    })?;
    let client = match &args.project {
        Some(key) => super::export::project_client(ctx, key)?,
        None => super::export::read_client(ctx)?,
    };
    let gateway = match client.get_gateway(&id).await {
        Ok(reply) => reply.value,
        Err(e) => {
            let (exit, hint) =
                super::space::request_failure(ctx.target().ok().flatten().as_ref(), &e);
            return Err(Failure {
                exit,
                error: anyhow::anyhow!("gateway {id}: {e}{hint}"),
            });
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let value =
            serde_json::json!({ "id": id.hyphenated().to_string(), "fields": gateway.sip_gateway });
        writeln!(out, "{value}").exit_with(Exit::Usage)?;
        return Ok(Exit::Ok);
    }
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut writer = ManifestWriter::new(out, args.format.unwrap_or(Format::Csv))
        .exit_with(Exit::Usage)?
        .for_terminal(on_terminal);
    writer
        .write(&id.hyphenated().to_string(), &gateway.sip_gateway)
        .exit_with(Exit::Usage)?;
    writer
        .finish()
        .and_then(|mut out| out.flush())
        .exit_with(Exit::Usage)?;
    Ok(Exit::Ok)
}

/// A saved plan as its diff on stdout, in the plan's row order: checked whole first, as
/// `apply --plan` checks it (its count, its digest, every value a change would write); a
/// plan cut short or edited is refused, exit 64. Reads the file only.
fn show_plan(ctx: &super::Context, path: &Path, format: PlanFormat) -> Result<Exit, Failure> {
    let header = saved_plan::verify(path).map_err(|e| usage(e.to_string()))?;
    tracing::info!(
        "plan {}: read from {} (manifest {}{}), {} change(s)",
        path.display(),
        crate::inert::text(&header.space, 200),
        crate::inert::text(&header.manifest, 200),
        header
            .shard
            .as_deref()
            .map_or_else(String::new, |k| format!(
                ", shard {}",
                crate::inert::text(k, 20)
            )),
        header.changes
    );
    let read_failed =
        |e: std::io::Error| usage(format!("cannot read plan {}: {e}", path.display()));
    let file = crate::bounded::open_regular(path).map_err(read_failed)?;
    let mut input = std::io::BufReader::new(file);
    let colour = ctx.global.color.on_stdout();
    let mut view = PlanView::new(
        std::io::BufWriter::new(std::io::stdout()),
        format,
        colour,
        false,
    );
    let mut line = Vec::new();
    for n in 0..=header.rows {
        line.clear();
        std::io::Read::take(&mut input, MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(read_failed)?;
        if n == 0 {
            continue; // The header.
        }
        let row: PlanLine = serde_json::from_slice(&line).map_err(|e| {
            usage(format!(
                "plan {} changed while it was read (line {}: {e}): refused",
                path.display(),
                n + 1
            ))
        })?;
        view.record(&as_record(row));
    }
    view.finish();
    Ok(Exit::Ok)
}

/// The longest row line a plan may hold, as `apply --plan` reads it.
const MAX_LINE: u64 = 64 * 1024;

/// A plan's row as the record the plan's run made of it. The plan holds its rows as they
/// finished; ordered by their manifest line (the view prints them in that order at its
/// end), the diff reads as `plan` printed it.
fn as_record(line: PlanLine) -> RowRecord {
    let mut record = RowRecord::bare(line.row, line.row, line.id, line.status, "", String::new());
    if let (Some(before), Some(after)) = (&line.before, &line.after) {
        record.changed_fields = crate::diff::differing(before, after);
    }
    record.before = line.before;
    record.after = line.after;
    record
}
