//! `doctor`: each project's access checked before a run, read-only: whether its
//! credentials are accepted, how many gateways it sees, the rate-limit headers the space
//! answers with (the platform documents that they exist, not their names: this is where an
//! operator learns them), the round trip, and the server's clock against this machine's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Context, Exit, ExitContext, Failure, config};
use crate::client::{AnswerHeaders, ApiError, Cancel, ReadClient, RequestStats};
use crate::export::{ExportStats, pages};
use crate::failure::ErrorKind;
use crate::failure::{Reach, Stop};
use crate::limiter::Limiter;
use crate::projects::{Project, ProjectSet};

/// A clock further off than this earns a warning.
const CLOCK_WARNING: Duration = Duration::from_secs(5);

/// What one project's check found.
#[derive(Debug)]
enum Verdict {
    /// Credentials accepted and the gateways listed.
    Usable { gateways: u64 },
    /// The space answered 401/403.
    Refused,
    /// No answer from the space.
    Unreachable(String),
    /// Another failure (a 5xx past the retries, an answer not believed, endless paging).
    Failed(String),
}

/// One project's line of the doctor's report.
struct Check {
    verdict: Verdict,
    /// The first page came back: the space accepted the credentials (a later page may
    /// still fail).
    accepted: bool,
    round_trip: Option<Duration>,
    headers: AnswerHeaders,
    /// The server's clock minus this machine's, in milliseconds (its `Date` has whole
    /// seconds, so this is good to about a second).
    clock_ms: Option<i64>,
}

pub async fn run(ctx: &Context) -> Result<Exit, Failure> {
    let base_url = ctx.space_url()?;
    let set = match ctx.projects()? {
        Some(set) => set,
        None => ProjectSet::single(
            config::credentials(&ctx.file, |k| std::env::var(k).ok()).exit_with(Exit::Usage)?,
        ),
    };
    let mut exit = Exit::Ok;
    for project in set.iter() {
        let client = ReadClient::new(
            &ctx.client_config_for(base_url.clone(), project.credentials()),
            Arc::new(Limiter::new(
                Some(ctx.settings.write_rate),
                ctx.settings.read_rate,
            )),
            Arc::new(RequestStats::default()),
            Cancel::default(),
        )
        .exit_with(Exit::Usage)?;
        let check = check(&client, ctx.settings.paging).await;
        print!("{}", render(project, &check));
        exit = worse(exit, exit_for(&check.verdict));
        match &check.verdict {
            Verdict::Usable { .. } => {}
            Verdict::Refused => tracing::error!(
                project = %label(project),
                "the space refused this project's credentials"
            ),
            Verdict::Unreachable(why) | Verdict::Failed(why) => {
                tracing::error!(project = %label(project), "{why}")
            }
        }
        if check
            .clock_ms
            .is_some_and(|ms| ms.unsigned_abs() > CLOCK_WARNING.as_millis() as u64)
        {
            tracing::warn!(
                project = %label(project),
                "the server's clock is more than {} s from this machine's",
                CLOCK_WARNING.as_secs()
            );
        }
    }
    Ok(exit)
}

/// One project: a one-gateway page (the round trip, the headers, the clock), then the
/// whole list counted.
async fn check(client: &ReadClient, paging: crate::export::PagingLimits) -> Check {
    let sent_at = SystemTime::now();
    let sent = Instant::now();
    let first = client.list_page(client.first_page_url(1)).await;
    let round_trip = sent.elapsed();
    let headers = client.last_answer_headers();
    let clock_ms = headers.date.map(|date| {
        let ours = sent_at + round_trip / 2;
        match date.duration_since(ours) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        }
    });
    let accepted = first.is_ok();
    let verdict = match first {
        Err(e) => failed(&e),
        Ok(_) => {
            let mut stats = ExportStats::default();
            match pages(client, 1000, paging, &mut stats, |_| Ok(())).await {
                Ok(()) => Verdict::Usable {
                    gateways: stats.gateways,
                },
                Err(crate::export::ExportError::Api(e)) => failed(&e),
                Err(e) => Verdict::Failed(format!("{e:#}")),
            }
        }
    };
    Check {
        accepted,
        round_trip: Some(round_trip).filter(|_| !matches!(verdict, Verdict::Unreachable(_))),
        verdict,
        headers,
        clock_ms,
    }
}

/// A failed request's verdict, by the decision table: credentials refused; no answer (a
/// refused connection, a timeout, TLS, the outage limit passed) is the space unreachable,
/// whatever kind said it; any other failure (a 5xx past the retries, an answer not
/// believed) is the project failing its check.
fn failed(e: &ApiError) -> Verdict {
    let decision = e.kind.decision();
    let unanswered = decision.reach == Reach::Unanswered || e.kind == ErrorKind::Aborted;
    match decision.stop {
        Some(Stop::CredentialsRefused) => Verdict::Refused,
        Some(Stop::Unreachable) => unreachable(e),
        None if unanswered => unreachable(e),
        None => Verdict::Failed(format!(
            "listing gateways failed: {} ({})",
            e.message,
            e.status
                .map_or_else(|| e.code().to_owned(), |s| s.to_string())
        )),
    }
}

fn unreachable(e: &ApiError) -> Verdict {
    Verdict::Unreachable(format!("the space cannot be reached: {}", e.message))
}

fn exit_for(verdict: &Verdict) -> Exit {
    match verdict {
        Verdict::Usable { .. } => Exit::Ok,
        Verdict::Refused | Verdict::Unreachable(_) => Exit::Aborted,
        Verdict::Failed(_) => Exit::RowErrors,
    }
}

/// The worse of two exits: 3 over 1 over 0.
fn worse(a: Exit, b: Exit) -> Exit {
    let rank = |e: Exit| match e {
        Exit::Aborted => 2,
        Exit::RowErrors => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// `p1 (0f5c...)`, or the id alone for a project without a name.
fn label(project: &Project) -> String {
    let id = crate::inert::text(&project.id, 80);
    match &project.name {
        Some(name) => format!("{} ({id})", crate::inert::text(name, 80)),
        None => id,
    }
}

/// The check as a person reads it, a block a project.
fn render(project: &Project, check: &Check) -> String {
    let mut out = format!("project {}: ", label(project));
    out.push_str(&match &check.verdict {
        Verdict::Usable { gateways: 0 } => "usable (no gateways)\n".to_owned(),
        Verdict::Usable { .. } => "usable\n".to_owned(),
        Verdict::Refused => "REFUSED: the space refused its credentials (401/403)\n".to_owned(),
        Verdict::Unreachable(why) | Verdict::Failed(why) => format!("NOT USABLE: {why}\n"),
    });
    let accepted = match check.verdict {
        Verdict::Refused => "refused",
        _ if check.accepted => "accepted",
        _ => "not checked",
    };
    out.push_str(&format!("  credentials: {accepted}\n"));
    if let Verdict::Usable { gateways } = check.verdict {
        out.push_str(&format!("  gateways visible: {gateways}\n"));
    }
    if !matches!(check.verdict, Verdict::Unreachable(_)) {
        out.push_str(&match check.headers.rate_limit.as_slice() {
            [] => "  rate-limit headers: none on this answer\n".to_owned(),
            seen => format!(
                "  rate-limit headers: {}\n",
                seen.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if let Some(rtt) = check.round_trip {
        out.push_str(&format!("  round trip: {} ms\n", rtt.as_millis()));
    }
    if let Some(ms) = check.clock_ms {
        let secs = ms as f64 / 1000.0;
        let warn = if ms.unsigned_abs() > CLOCK_WARNING.as_millis() as u64 {
            " (WARNING: more than 5 s off)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  server clock: {secs:+.1} s from this machine's{warn}\n"
        ));
    }
    out
}
