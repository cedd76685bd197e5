//! A hostile or broken space (issue "Trust nothing"): the real binary against peers on
//! loopback that answer badly on purpose. Nothing wrong is written, nothing hangs, memory
//! stays bounded, nothing printed or saved can act, and the token never shows.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use futures_util::FutureExt;

use crate::peer::{Dropper, Handler, Peer, Seen, gateway_json, json, peak_rss_kib};
use crate::support::*;
use sipgw_bulk::sandbox;
use sipgw_bulk::status::Status;

const TOKEN: &str = "PTsecret-hostile-token";

/// The binary pointed at `base_url`, in `dir`, with credentials in the environment.
fn cmd_at(base_url: &str, dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("SIGNALWIRE_SPACE")
        .env_remove("RUST_LOG")
        .env_remove("XDG_RUNTIME_DIR")
        .env("SIPGW_BULK_STATE_DIR", dir.join("state"))
        .env("SIGNALWIRE_BASE_URL", base_url)
        .env("SIGNALWIRE_PROJECT_ID", "p-hostile")
        .env("SIGNALWIRE_API_TOKEN", TOKEN);
    cmd
}

/// Asserts what must hold of every output of every run against a hostile peer.
fn assert_inert(out: &std::process::Output, files: &[&std::path::Path]) {
    let mut texts = vec![stdout(out), stderr(out)];
    for f in files {
        texts.push(std::fs::read_to_string(f).unwrap_or_default());
    }
    for text in &texts {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        assert!(
            !text.contains('\u{1b}'),
            "a raw ESC reached an output: {text:?}"
        );
        assert!(!text.contains('\u{7}') && !text.contains('\0'), "{text:?}");
    }
}

fn handler(f: impl Fn(Seen) -> axum::response::Response + Send + Sync + 'static) -> Handler {
    let f = Arc::new(f);
    Arc::new(move |seen| {
        let f = Arc::clone(&f);
        async move { f(seen) }.boxed()
    })
}

fn manifest(dir: &std::path::Path, n: u64, seed: u64) -> Vec<uuid::Uuid> {
    let ids = ids(n, seed);
    write_csv(&dir.join("m.csv"), &ids, &[]);
    ids
}

#[test]
fn an_answer_for_another_gateway_is_never_merged_or_written() {
    let other = "99999999-9999-4999-8999-999999999999";
    let patches = Arc::new(AtomicU64::new(0));
    let seen_patches = Arc::clone(&patches);
    let peer = Peer::start(handler(move |seen| {
        if seen.method == Method::PATCH {
            seen_patches.fetch_add(1, Ordering::Relaxed);
        }
        // Every answer is about another gateway, with that gateway's values.
        json(
            StatusCode::OK,
            gateway_json(other, &sandbox::starting_fields(7)),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 20, 90);
    let out =
        run(cmd_at(&peer.base_url(), dir.path())
            .args(["apply", "m.csv", "--yes", "--report", "r.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(patches.load(Ordering::Relaxed), 0, "nothing written");
    let report = report(&dir.path().join("r.csv"));
    assert_eq!(report.len(), 20);
    for r in report.values() {
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Failed, "id_mismatch")
        );
        assert!(
            r.before.is_none(),
            "the other gateway's values are not kept"
        );
    }
    // A rollback of that report restores nothing.
    let out = run(cmd_at(&peer.base_url(), dir.path()).args(["rollback", "r.csv"]));
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "header only: {}",
        stdout(&out)
    );
    assert_inert(&out, &[&dir.path().join("r.csv")]);
}

#[test]
fn a_patch_answer_for_another_gateway_is_checked_by_reading_back() {
    let sb = Sandbox::start(sandbox::SandboxConfig::default(), &ids(5, 91));
    let upstream = sb.base_url();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let other = "99999999-9999-4999-8999-999999999999";
    let peer = Peer::start(Arc::new(move |seen: Seen| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            let patch = seen.method == Method::PATCH;
            let answer = crate::peer::forward(&client, &upstream, seen).await;
            if !patch {
                return answer;
            }
            // The write lands; the answer claims another gateway.
            json(
                StatusCode::OK,
                gateway_json(other, &sandbox::starting_fields(1)),
            )
        }
        .boxed()
    }));
    let ids = ids(5, 91);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let out = run(cmd_at(&peer.base_url(), sb.dir.path())
        .env("SIGNALWIRE_PROJECT_ID", &sb.state().config().project_id)
        .env("SIGNALWIRE_API_TOKEN", &sb.state().config().api_token)
        .args(["apply", "m.csv", "--yes", "--report", "r.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Not believed: each gateway was read back, found as asked, and written once.
    let report = sb.report("r.csv");
    assert!(report.values().all(|r| r.status == Status::Updated));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert!(ids.iter().all(|id| sb.state().patch_count(id) == 1));
}

#[test]
fn an_endless_body_is_cut_at_the_cap_with_memory_bounded() {
    let peer = Peer::start(handler(|_| {
        // 1 MiB chunks, forever.
        let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
        let stream =
            futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        axum::response::Response::new(axum::body::Body::from_stream(stream))
    }));
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 8, 92);
    let started = Instant::now();
    let mut child = cmd_at(&peer.base_url(), dir.path())
        .args(["plan", "m.csv", "--report", "r.csv", "--concurrency", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still reading");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    // Eight rows at once, each cut at 256 KiB: far under 100 MiB (it was gigabytes).
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
    let report = report(&dir.path().join("r.csv"));
    assert!(
        report
            .values()
            .all(|r| r.error_code.as_str() == "body_too_large"),
        "{report:?}"
    );
}

#[test]
fn a_huge_retry_after_waits_the_cap_then_tries_again_and_a_tiny_one_the_minimum_backoff() {
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_at = Arc::clone(&arrivals);
    let peer = Peer::start(handler(move |seen| {
        seen_at
            .lock()
            .unwrap()
            .push((Instant::now(), seen.uri.contains("tiny")));
        let mut answer = json(StatusCode::TOO_MANY_REQUESTS, serde_json::json!({}));
        answer.headers_mut().insert(
            "retry-after",
            axum::http::HeaderValue::from_static("999999999"),
        );
        answer
    }));
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 3, 93);
    std::fs::write(
        dir.path().join("c.yaml"),
        "max_retry_secs: 3\nretry_after_cap_secs: 2\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = run(cmd_at(&peer.base_url(), dir.path())
        .args(["plan", "m.csv", "--config", "c.yaml", "--report", "r.csv"]));
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // Waits of the 2 s cap while the 3 s budget lasts: after each, one more attempt.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    // Three attempts a row at most (0 s, 2 s, 4 s), and always one after a capped wait.
    assert!(
        (6..=9).contains(&peer.requests()),
        "{} requests",
        peer.requests()
    );
    let report = report(&dir.path().join("r.csv"));
    assert!(
        report.values().all(|r| (2..=3).contains(&r.attempts)),
        "{report:?}"
    );

    // A Retry-After in the past still waits the first backoff step (200 ms).
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let seen_at = Arc::clone(&arrivals);
    let peer = Peer::start(handler(move |_| {
        seen_at.lock().unwrap().push(Instant::now());
        let mut answer = json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({}));
        answer.headers_mut().insert(
            "retry-after",
            axum::http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        answer
    }));
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 1, 94);
    std::fs::write(dir.path().join("c.yaml"), "max_attempts: 4\n").unwrap();
    let out = run(cmd_at(&peer.base_url(), dir.path())
        .args(["plan", "m.csv", "--config", "c.yaml", "--report", "r.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let times = arrivals.lock().unwrap().clone();
    assert_eq!(times.len(), 4);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(190), "retried after {gap:?}");
    }
}

#[test]
fn endless_paging_stops_at_the_cap_and_a_link_with_credentials_is_refused() {
    let pages = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&pages);
    let peer = Peer::start(handler(move |_| {
        let n = count.fetch_add(1, Ordering::Relaxed);
        json(
            StatusCode::OK,
            serde_json::json!({
                "data": [],
                "links": { "next": format!("/api/fabric/resources/sip_gateways?page_token={n}") }
            }),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), "max_pages: 25\n").unwrap();
    let out =
        run(cmd_at(&peer.base_url(), dir.path())
            .args(["export", "--config", "c.yaml", "-o", "x.csv"]));
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("25 pages"), "{}", stderr(&out));
    assert_eq!(pages.load(Ordering::Relaxed), 25);

    let peer = Peer::start(handler(move |seen| {
        assert!(
            seen.authorization
                .is_some_and(|a| !a.contains("ZXZpbDpwdw")),
            "the server's credentials replaced ours"
        );
        json(
            StatusCode::OK,
            serde_json::json!({
                "data": [],
                "links": { "next": "http://evil:pw@127.0.0.1:1/api/fabric/resources/sip_gateways?page_token=x" }
            }),
        )
    }));
    let port = peer.addr.port();
    let _ = port;
    let out = run(cmd_at(&peer.base_url(), dir.path()).args(["export", "-o", "y.csv"]));
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("user name or password"),
        "{}",
        stderr(&out)
    );
    assert_eq!(peer.requests(), 1, "the link was not followed");
}

#[test]
fn escapes_and_formulas_from_the_server_or_the_manifest_never_reach_an_output_raw() {
    let peer = Peer::start(handler(|seen| {
        if seen.method == Method::GET && seen.uri.contains("page_size") {
            let mut f = sandbox::starting_fields(1);
            f.name = "=HYPERLINK(\"http://evil\")".into();
            f.uri = "+sip:x@pbx.example.com".into();
            return json(
                StatusCode::OK,
                serde_json::json!({
                    "data": [gateway_json("0823a606-0aff-4c90-9eba-f88ba118fe05", &f)],
                    "links": {}
                }),
            );
        }
        json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"errors": [{
                "code": "=cmd|' /C calc'!A0",
                "message": "\u{1b}[2J\u{1b}]0;pwned\u{7} and more",
            }]}),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let ids = manifest(dir.path(), 3, 95);
    let mut text = std::fs::read_to_string(dir.path().join("m.csv")).unwrap();
    text.push_str("=HYPERLINK(\"x\")\u{1b}[2J,,,,,\n");
    std::fs::write(dir.path().join("m.csv"), text).unwrap();
    let r = dir.path().join("r.csv");
    let out =
        run(cmd_at(&peer.base_url(), dir.path()).args(["plan", "m.csv", "--report", "r.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_inert(&out, &[&r]);
    let out_v = run(cmd_at(&peer.base_url(), dir.path()).args(["validate", "m.csv"]));
    assert_inert(&out_v, &[]);
    assert!(stdout(&out_v).contains("\\u{1b}"), "{}", stdout(&out_v));
    // No report cell starts a formula, and reading the report back gives the values.
    let cells: Vec<String> = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&r)
        .unwrap()
        .into_records()
        .flatten()
        .flat_map(|rec| rec.iter().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(
        cells.iter().all(|c| !c.starts_with(['=', '+', '-', '@'])),
        "{cells:?}"
    );
    let back = report(&r);
    assert!(
        back.values()
            .any(|r| r.error_code.as_str() == "=cmd|' /C calc'!A0")
    );
    assert!(back.values().any(|r| r.id.starts_with("=HYPERLINK")));
    assert_eq!(back.len(), ids.len() + 1);

    // Export: no formula cell, and the values read back exactly through apply's reader.
    let out = run(cmd_at(&peer.base_url(), dir.path()).args(["export", "-o", "x.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("x.csv")).unwrap();
    assert!(
        text.contains("'=HYPERLINK") && text.contains("'+sip:"),
        "{text}"
    );
    let manifest = sipgw_bulk::manifest::Manifest::open(&dir.path().join("x.csv"), None).unwrap();
    let mut names = Vec::new();
    manifest
        .read(|row| {
            let row = row.unwrap();
            names.push((row.desired.name.unwrap(), row.desired.uri.unwrap()));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        names,
        vec![(
            "=HYPERLINK(\"http://evil\")".into(),
            "+sip:x@pbx.example.com".into()
        )]
    );
}

#[test]
fn a_space_name_that_would_change_the_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 1, 96);
    for space in ["acme#", "acme?x=1", "acme\\evil.com", "acme\t", "evil.com"] {
        let out = run(std::process::Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("SIGNALWIRE_BASE_URL")
            .env("SIGNALWIRE_PROJECT_ID", "p")
            .env("SIGNALWIRE_API_TOKEN", TOKEN)
            .args(["--space", space, "plan", "m.csv", "--report", "r.csv"]));
        assert_eq!(code(&out), 64, "{space:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--base-url"), "{}", stderr(&out));
        assert_inert(&out, &[]);
    }
}

#[test]
fn an_unreachable_space_pauses_probes_and_stops_with_bounded_requests() {
    let dropper = Dropper::start(b"");
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 300, 97);
    std::fs::write(dir.path().join("c.yaml"), "outage_budget_secs: 2\n").unwrap();
    let base = format!("http://{}", dropper.addr);
    let started = Instant::now();
    let out = run(cmd_at(&base, dir.path()).args([
        "apply", "m.csv", "--yes", "--config", "c.yaml", "--report", "r.csv",
    ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    // The first wave (one per request slot) fails, then one probe per pause: not 6 per row.
    let connections = dropper.connections();
    assert!(
        connections <= 32 + 20,
        "{connections} connections for 300 rows"
    );
    let err = stderr(&out);
    assert!(err.contains(&base), "names the space: {err}");
    assert_eq!(err.matches("cannot reach the space").count(), 1, "{err}");
    // The last word says why, with the detail the client gave.
    assert!(
        err.contains("stopped: the space cannot be reached: every connection to"),
        "{err}"
    );
    let report = report(&dir.path().join("r.csv"));
    assert_eq!(report.len(), 300);
    assert!(
        report
            .values()
            .any(|r| r.error_code.as_str() == "unreachable")
    );
    assert!(report.values().all(|r| r.status != Status::Updated));
    assert_inert(&out, &[&dir.path().join("r.csv")]);
}

/// Off a terminal an outage is not silence: once the space has failed for 5 s, a line
/// says so (how long, the last error, the outage limit) at most every 5 s, until the job
/// stops at the budget.
#[test]
fn an_outage_is_said_in_the_log_while_the_job_waits_it_out() {
    let dropper = Dropper::start(b"");
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 20, 99);
    std::fs::write(dir.path().join("c.yaml"), "outage_budget_secs: 12\n").unwrap();
    let base = format!("http://{}", dropper.addr);
    let out = run(cmd_at(&base, dir.path()).args([
        "plan",
        "m.csv",
        "--config",
        "c.yaml",
        "--no-progress",
        "--report",
        "r.csv",
    ]));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("no answer from the space for "))
        .collect();
    // Probes at 0, 0.2, 0.6, 1.4, 3.0 and 6.2 s, then the budget's end at 12 s.
    assert!(!said.is_empty() && said.len() <= 3, "{err}");
    for line in &said {
        assert!(line.contains("WARN") && line.contains(&base), "{line}");
        assert!(
            line.contains("at most 12s from the first failure"),
            "{line}"
        );
        let secs: u64 = line
            .split("no answer from the space for ")
            .nth(1)
            .and_then(|t| t.split('s').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!((5..12).contains(&secs), "{line}");
    }
    assert!(
        err.find(said[0]) < err.find("cannot reach the space"),
        "{err}"
    );
}

#[test]
fn a_tls_failure_is_not_retried() {
    // A peer that answers a TLS hello with plain HTTP: no retry can fix that.
    let dropper = Dropper::start(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 100, 98);
    let base = format!("https://{}", dropper.addr);
    let out = run(cmd_at(&base, dir.path()).args([
        "plan",
        "m.csv",
        "--concurrency",
        "4",
        "--report",
        "r.csv",
    ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        dropper.connections() <= 4,
        "{} connections",
        dropper.connections()
    );
    assert_eq!(
        stderr(&out).matches("cannot reach the space").count(),
        1,
        "{}",
        stderr(&out)
    );
    let _ = StatusCode::OK.into_response();
}

#[test]
fn a_429_delays_only_its_own_request_as_the_server_sees_it() {
    // Every answer takes 100 ms, so 8 workers keep about 80 requests a second coming. The
    // tenth request is answered 429 with Retry-After: 2. That request comes back no sooner
    // than two seconds later; the other workers go on meanwhile (a flaky edge refusing a
    // share of everything must not stop the job).
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<(Instant, bool, String)>::new()));
    let seen = Arc::clone(&arrivals);
    let count = Arc::new(AtomicU64::new(0));
    let peer = Peer::start(Arc::new(move |s: Seen| {
        let seen = Arc::clone(&seen);
        let n = count.fetch_add(1, Ordering::SeqCst);
        async move {
            let throttle = n == 9;
            seen.lock()
                .unwrap()
                .push((Instant::now(), throttle, s.uri.clone()));
            if throttle {
                let mut answer = json(StatusCode::TOO_MANY_REQUESTS, serde_json::json!({}));
                answer
                    .headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("2"));
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let id = s.uri.rsplit('/').next().unwrap_or("").to_owned();
            json(
                StatusCode::OK,
                gateway_json(&id, &sandbox::starting_fields(1)),
            )
        }
        .boxed()
    }));
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 300, 99);
    let out = run(cmd_at(&peer.base_url(), dir.path()).args([
        "plan",
        "m.csv",
        "--concurrency",
        "8",
        "--report",
        "r.csv",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let arrivals = arrivals.lock().unwrap().clone();
    let (throttled_at, _, uri) = arrivals.iter().find(|(_, t, _)| *t).unwrap().clone();
    // The other workers went on: about 7 x 10 requests a second for the two seconds.
    let during = arrivals
        .iter()
        .filter(|(at, _, _)| *at > throttled_at && *at < throttled_at + Duration::from_secs(2))
        .count();
    assert!(
        during >= 60,
        "{during} requests while one waited its Retry-After"
    );
    // The refused one came back once, after its own two seconds.
    let again: Vec<_> = arrivals
        .iter()
        .filter(|(at, t, u)| *u == uri && !*t && *at > throttled_at)
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].0 - throttled_at >= Duration::from_millis(1950));
    assert_eq!(
        arrivals.len(),
        301,
        "every row read once, the throttled one twice"
    );
}

#[test]
fn a_token_file_others_can_read_gets_a_warning_and_its_token_never_shows() {
    use std::os::unix::fs::PermissionsExt;
    let ids = ids(2, 100);
    let sb = Sandbox::start(sandbox::SandboxConfig::default(), &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let token = sb.path("token");
    std::fs::write(&token, &sb.state().config().api_token).unwrap();
    sb.write("c.yaml", format!("api_token_file: {}\n", token.display()));
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = run(sb
            .cmd()
            .env_remove("SIGNALWIRE_API_TOKEN")
            .args(["plan", "m.csv", "--config", "c.yaml", "--report"])
            .arg(format!("r{mode:o}.csv")));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("chmod 600"),
            warned,
            "{mode:o}: {}",
            stderr(&out)
        );
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(&sb.state().config().api_token));
    }
}

#[test]
fn a_server_that_quotes_the_request_back_never_gets_the_credential_into_any_output() {
    // Every error quotes the Authorization header (base64 and JSON-escaped), the token,
    // and a GET's answer names the gateway after the token.
    let peer = Peer::start(handler(move |seen| {
        let auth = seen.authorization.clone().unwrap_or_default();
        if seen.method == Method::GET && seen.uri.contains("aaaaaaaa") {
            let mut f = sandbox::starting_fields(1);
            f.name = TOKEN.into();
            let id = seen.uri.rsplit('/').next().unwrap_or_default().to_owned();
            return json(StatusCode::OK, gateway_json(&id, &f));
        }
        let quoted = format!("{auth} {TOKEN}").replace('/', "\\/");
        let status = if seen.method == Method::GET {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        json(
            status,
            serde_json::json!({"errors": [{"code": "echo", "message": quoted}]}),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let mut ids = manifest(dir.path(), 3, 126);
    ids.push("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa".parse().unwrap());
    write_csv(&dir.path().join("m.csv"), &ids, &[]);
    let out = run(cmd_at(&peer.base_url(), dir.path()).args([
        "apply",
        "m.csv",
        "--yes",
        "-v",
        "--report",
        "r.csv",
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = dir.path().join("r.csv");
    assert_inert(&out, &[&r, &dir.path().join("s.json")]);
    let text = format!(
        "{}{}{}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(&r).unwrap()
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("p-hostile:{TOKEN}"));
    assert!(!text.contains(&b64), "{text}");
    assert!(text.contains("(redacted)"), "{text}");
    let report = report(&r);
    let quoting = report
        .values()
        .find(|r| r.id.starts_with("aaaaaaaa"))
        .unwrap();
    assert_eq!(
        quoting.error_code.as_str(),
        "credential_in_answer",
        "{quoting:?}"
    );
    assert!(quoting.before.is_none());
}
