//! `show ID`: one gateway's current state, as a manifest row `apply` accepts (or JSON).

use std::io::Write;

use super::{Exit, ExitContext, Failure, ShowArgs, usage};
use crate::manifest::{Format, ManifestWriter};

pub async fn run(ctx: &super::Context, args: &ShowArgs) -> Result<Exit, Failure> {
    let id = uuid::Uuid::try_parse(args.id.trim()).map_err(|_| {
        usage(format!(
            "`{}` is not a gateway id (a UUID like 0823a606-0aff-4c90-9eba-f88ba118fe05)",
            crate::inert::text(&args.id, 64)
        ))
    })?;
    let client = super::export::read_client(ctx)?;
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
