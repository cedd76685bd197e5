//! The run's metrics read by the real monitoring components a user runs beside the tool:
//! node_exporter's textfile collector, a Pushgateway, promtool. They are Debian packages
//! (`scripts/test.sh` installs them); a test that finds one missing fails with the command
//! that installs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;

use crate::support::*;

/// The path of an installed component, or a failure that says how to install it.
pub(crate) fn installed(binary: &str, package: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(binary);
    assert!(
        path.exists(),
        "{binary} is missing: install it with `apt-get install -y {package}` (scripts/test.sh \
         installs every package the tests need)"
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET a URL on loopback: the body, or `None` while nothing answers.
fn get(url: &str) -> Option<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let answer = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        answer.text().await.ok()
    })
}

/// A component started for one test, killed when it ends.
struct Component {
    child: Guarded,
    url: String,
}

impl Component {
    fn start(mut cmd: Command, port: u16) -> Component {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_guarded();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while get(&format!("{url}/metrics")).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{cmd:?} did not answer on {url}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Component { child, url }
    }

    fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.url)).unwrap()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn node_exporter(textfiles: &Path) -> Component {
    let port = free_port();
    let mut cmd = Command::new(installed(
        "prometheus-node-exporter",
        "prometheus-node-exporter",
    ));
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfiles.display()
        ));
    Component::start(cmd, port)
}

fn pushgateway() -> Component {
    let port = free_port();
    let mut cmd = Command::new(installed(
        "prometheus-pushgateway",
        "prometheus-pushgateway",
    ));
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
    Component::start(cmd, port)
}

/// The value of the one sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A sandbox of `n` gateways and a manifest that changes each of them.
fn space(n: u64) -> (Sandbox, Vec<uuid::Uuid>) {
    let ids = ids(n, 23);
    let sb = Sandbox::with_manifest(&ids);
    (sb, ids)
}

fn space_label(sb: &Sandbox) -> String {
    format!("space=\"{}\"", sb.base_url().trim_start_matches("http://"))
}

#[test]
fn a_metrics_file_is_read_by_a_real_node_exporter_and_promtool_finds_nothing_wrong() {
    let (sb, _) = space(30);
    let textfiles = sb.path("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let file = textfiles.join("sipgw_bulk.prom");
    let out = run(sb
        .cmd()
        .args(["apply", "m.csv", "--yes", "--metrics-file"])
        .arg(&file));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let node = node_exporter(&textfiles);
    let scraped = node.metrics();
    let space = space_label(&sb);
    let ours = [space.as_str(), "command=\"apply\"", "shard=\"all\""];
    let updated = [&ours[..], &["status=\"updated\""]].concat();
    assert_eq!(sample(&scraped, "sipgw_bulk_rows", &updated), Some(30.0));
    assert_eq!(
        sample(&scraped, "sipgw_bulk_drifted_gateways", &ours),
        Some(30.0)
    );
    assert_eq!(
        sample(&scraped, "sipgw_bulk_last_exit_code", &ours),
        Some(0.0)
    );
    let patched = [&ours[..], &["kind=\"patch\"", "code=\"200\""]].concat();
    assert_eq!(
        sample(&scraped, "sipgw_bulk_requests_total", &patched),
        Some(30.0)
    );
    let success = sample(&scraped, "sipgw_bulk_last_success_timestamp_seconds", &ours).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - success).abs() < 120.0,
        "last success {success}, now {now}"
    );
    assert!(
        scraped.contains("# TYPE sipgw_bulk_requests_total counter"),
        "typed as a counter:\n{scraped}"
    );
    assert_eq!(
        sample(&scraped, "node_textfile_scrape_error", &[]),
        Some(0.0),
        "node_exporter read the file without an error:\n{scraped}"
    );
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        assert!(
            line.starts_with('#') || line.split(' ').count() == 2,
            "a timestamp: {line}"
        );
    }

    let check = Command::new(installed("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_failed_run_after_a_good_one_keeps_the_last_success_in_the_file_and_the_pushgateway() {
    let (sb, _) = space(10);
    let gateway = pushgateway();
    let file = sb.path("sipgw_bulk.prom");
    let good = run(sb
        .cmd()
        .args([
            "apply",
            "m.csv",
            "--yes",
            "--push-gateway",
            &gateway.url,
            "--metrics-file",
        ])
        .arg(&file));
    assert_eq!(code(&good), 0, "{}", stderr(&good));
    let space = space_label(&sb);
    let ours = [space.as_str(), "command=\"apply\""];
    let first = std::fs::read_to_string(&file).unwrap();
    let success = sample(&first, "sipgw_bulk_last_success_timestamp_seconds", &ours).unwrap();
    let completed = sample(
        &first,
        "sipgw_bulk_last_completion_timestamp_seconds",
        &ours,
    )
    .unwrap();
    assert_eq!(success, completed, "the good run is the last success");
    let pushed = gateway.metrics();
    assert_eq!(
        sample(&pushed, "sipgw_bulk_last_success_timestamp_seconds", &ours),
        Some(success)
    );

    std::thread::sleep(Duration::from_millis(1100));
    let refused = run(sb
        .cmd()
        .env("SIGNALWIRE_API_TOKEN", "PTwrong")
        .args(["apply", "m.csv", "--yes", "--report", "again.csv"])
        .args(["--push-gateway", &gateway.url, "--metrics-file"])
        .arg(&file));
    assert_eq!(code(&refused), 3, "{}", stderr(&refused));
    for (what, text) in [
        ("the file", std::fs::read_to_string(&file).unwrap()),
        ("the Pushgateway", gateway.metrics()),
    ] {
        let last = sample(&text, "sipgw_bulk_last_success_timestamp_seconds", &ours);
        assert_eq!(
            last,
            Some(success),
            "{what} keeps the last success:\n{text}"
        );
        let done = sample(&text, "sipgw_bulk_last_completion_timestamp_seconds", &ours).unwrap();
        assert!(done > completed, "{what}: the failed run completed later");
        let exit = sample(&text, "sipgw_bulk_last_exit_code", &ours);
        assert_eq!(exit, Some(3.0), "{what}");
    }
}

#[test]
fn metrics_are_pushed_grouped_by_job_space_command_and_shard_and_a_gateway_down_is_a_warning() {
    let (sb, _) = space(20);
    let gateway = pushgateway();
    let out = sb
        .apply("m.csv")
        .args(["--shard", "0/2", "--push-gateway", &gateway.url])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pushed = gateway.metrics();
    let space = space_label(&sb);
    let group = [
        "job=\"sipgw_bulk\"",
        space.as_str(),
        "command=\"apply\"",
        "shard=\"0/2\"",
        "instance=\"\"",
    ];
    let rows = sample(&pushed, "sipgw_bulk_last_exit_code", &group);
    assert_eq!(rows, Some(0.0), "the group's metrics:\n{pushed}");
    // The Pushgateway notes each group's last push: it is this group's.
    assert!(
        sample(&pushed, "push_time_seconds", &group).is_some(),
        "pushed to the group job/space/command/shard:\n{pushed}"
    );
    assert!(
        !pushed.contains(&sb.state().config().api_token),
        "the token stays home"
    );

    // Nothing listens: the run is not failed by it.
    let down = format!("http://127.0.0.1:{}", free_port());
    let out = sb.plan("m.csv").args(["--push-gateway", &down]).run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot push metrics to"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn metrics_are_served_and_pushed_while_the_run_lasts() {
    let (sb, _) = space(60);
    let port = free_port();
    let gateway = pushgateway();
    let mut child = sb
        .apply("m.csv")
        .args(["--rate", "20", "-q"])
        .args(["--metrics-listen", &port.to_string()])
        .args(["--push-gateway", &gateway.url, "--push-interval", "1"])
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(text) = get(&url)
            && let Some(updated) = sample(&text, "sipgw_bulk_rows", &["status=\"updated\""])
        {
            seen = Some((text, updated));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (text, updated) = seen.expect("served /metrics with rows while the run lasted");
    assert!(updated < 60.0, "seen mid-run: {updated} rows");
    let mut pushed = None;
    while started.elapsed() < Duration::from_secs(20) && pushed.is_none() {
        let text = gateway.metrics();
        pushed = sample(&text, "sipgw_bulk_run_in_progress", &["command=\"apply\""]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pushed, Some(1.0), "pushed during the run (every second)");
    assert_eq!(sample(&text, "sipgw_bulk_run_in_progress", &[]), Some(1.0));
    assert!(
        sample(&text, "sipgw_bulk_write_pace_per_second", &[]).is_some(),
        "{text}"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(get(&url).is_none(), "the server ends with the run");
}

#[test]
fn the_alert_rules_pass_their_promtool_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring");
    let out = Command::new(installed("promtool", "prometheus"))
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metrics table (docs/monitoring.md) lists every metric the code emits, each with its type and labels.
#[test]
fn the_documented_metrics_table_is_the_list_the_code_emits() {
    let (_, readme) = crate::docs::page_holding("| `sipgw_bulk_build_info`");
    let table: Vec<(String, String, String)> = readme
        .lines()
        .filter(|l| l.starts_with("| `sipgw_bulk_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let strip = |c: &str| c.trim_matches('`').to_owned();
            (strip(cells[1]), cells[2].to_owned(), cells[3].to_owned())
        })
        .collect();
    let code: Vec<(String, String, String)> = sipgw_bulk::metrics::METRICS
        .iter()
        .map(|(name, kind, labels, _)| {
            let own = labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>();
            let labels = if own.is_empty() {
                "space, command, shard".to_owned()
            } else {
                format!("space, command, shard, {}", own.join(", "))
            };
            ((*name).to_owned(), (*kind).to_owned(), labels)
        })
        .collect();
    assert_eq!(
        table, code,
        "the documented metrics table against metrics::METRICS"
    );
}

/// Metrics add nothing that grows with the manifest: the peak memory of a 10^5-row plan is
/// the same, within 1 MiB, with and without `--metrics-file`.
#[test]
fn metrics_add_nothing_that_grows_with_the_manifest() {
    let (sb, _) = space(100_000);
    let peak = |metrics: bool, run: u32| -> u64 {
        let mut cmd = sb.cmd();
        cmd.args([
            "plan",
            "m.csv",
            "--read-mode",
            "list",
            "-q",
            "--diff-format",
            "json",
        ]);
        cmd.arg("--detailed-exitcode");
        cmd.args(["--report", &format!("{metrics}-{run}.csv")]);
        if metrics {
            cmd.args(["--metrics-file", "m.prom"]);
        }
        let log = std::fs::File::create(sb.path("plan.log")).unwrap();
        // Reaped by wait4 below, which also gives its peak memory.
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value, and wait4 fills it in; the pid is
        // our own child's, waited for once.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as i32);
        assert_eq!(
            libc::WEXITSTATUS(status),
            2,
            "the plan finds every row to change: {}",
            std::fs::read_to_string(sb.path("plan.log")).unwrap_or_default()
        );
        usage.ru_maxrss as u64
    };
    // The least of three runs each: a run's peak varies by a few hundred KiB.
    let without = (0..3).map(|i| peak(false, i)).min().unwrap();
    let with = (0..3).map(|i| peak(true, i)).min().unwrap();
    eprintln!("peak RSS: {with} KiB with --metrics-file, {without} KiB without");
    assert!(sb.read("m.prom").contains("sipgw_bulk_rows{"),);
    assert!(
        with <= without + 1024,
        "peak RSS {with} KiB with --metrics-file, {without} KiB without"
    );
}

/// The Kubernetes examples fail the Job at once on the exit codes no retry fixes, retry
/// the rest by index, never overlap, and use only flags the tool has.
#[test]
fn the_kubernetes_examples_fail_fast_where_no_retry_helps_and_use_real_flags() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/k8s");
    let help = stdout(&run(Command::new(BIN).args(["apply", "--help"])));
    for (file, job_at) in [
        ("cronjob.yaml", "/spec/jobTemplate/spec"),
        ("indexed-job.yaml", "/spec"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let job = doc
            .pointer(job_at)
            .unwrap_or_else(|| panic!("{file}: no {job_at}"));
        assert_eq!(
            job.pointer("/template/spec/restartPolicy"),
            Some(&serde_json::json!("Never")),
            "{file}: podFailurePolicy needs restartPolicy Never"
        );
        let rules = job["podFailurePolicy"]["rules"].as_array().unwrap();
        let fail_fast = rules.iter().any(|r| {
            r["action"] == "FailJob"
                && r["onExitCodes"]["operator"] == "In"
                && r["onExitCodes"]["values"] == serde_json::json!([64, 65])
        });
        assert!(fail_fast, "{file}: exit 64 and 65 fail the Job at once");
        assert_eq!(job["completionMode"], "Indexed", "{file}");
        assert!(job["backoffLimitPerIndex"].as_u64().is_some(), "{file}");
        let container = &job["template"]["spec"]["containers"][0];
        let args = container["args"].to_string();
        for flag in args
            .split(['"', ' ', ',', '[', ']'])
            .filter(|t| t.starts_with("--"))
        {
            assert!(help.contains(flag), "{file}: `apply` has no {flag}");
        }
        assert!(
            args.contains("--push-gateway") || args.contains("--metrics-listen"),
            "{file}: its metrics go somewhere"
        );
    }
    let cron = std::fs::read_to_string(dir.join("cronjob.yaml")).unwrap();
    let cron: serde_json::Value = serde_saphyr::from_str(&cron).unwrap();
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
}

/// A push goes to the URL given, as a POST to the group, with no credential of the space;
/// and a Pushgateway that never answers holds the run no longer than the push's bound.
#[test]
fn a_push_carries_no_credential_and_a_silent_pushgateway_holds_the_run_only_its_bound() {
    use crate::peer::{Handler, Peer, Seen};
    use futures_util::FutureExt;
    use std::sync::{Arc, Mutex};

    let (sb, _) = space(5);
    /// Each push's method, path and `Authorization` header.
    type Pushes = Arc<Mutex<Vec<(String, String, Option<String>)>>>;
    let seen: Pushes = Arc::default();
    let log = Arc::clone(&seen);
    let recording: Handler = Arc::new(move |s: Seen| {
        log.lock()
            .unwrap()
            .push((s.method.to_string(), s.uri, s.authorization));
        async { axum::http::StatusCode::OK.into_response() }.boxed()
    });
    let gateway = Peer::start(recording);
    let out = sb
        .plan("m.csv")
        .args(["--push-gateway", &gateway.base_url()])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        1,
        "one push at the end of a short run: {seen:?}"
    );
    let (method, uri, authorization) = &seen[0];
    assert_eq!(method, "POST");
    assert!(
        uri.starts_with("/metrics/job@base64/c2lwZ3dfYnVsaw==/"),
        "the group's path: {uri}"
    );
    assert_eq!(
        authorization, &None,
        "no credential of the space goes there"
    );

    let silent: Handler = Arc::new(|_: Seen| futures_util::future::pending().boxed());
    let silent = Peer::start(silent);
    let started = Instant::now();
    let out = sb
        .plan("m.csv")
        .report("again.csv")
        .args(["--push-gateway", &silent.base_url()])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot push metrics"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a push is bounded (10 s): the run took {:?}",
        started.elapsed()
    );
}
