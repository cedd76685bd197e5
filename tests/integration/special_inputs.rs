//! A device, a FIFO or an endless pipe named where a file belongs: each input is read
//! through its cap, or refused, before any request; never a hang, never memory that grows
//! with what the file holds. Each run here is watched: killed (and the test failed) when it
//! runs past its bound or its memory grows past a ceiling.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peer::peak_rss_kib;
use crate::support::*;

/// How a watched run ended.
struct Ended {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Far over what the binary holds to refuse an input (a few MiB), far under what reading
/// one whole took (hundreds of MiB, then the machine's memory).
const MAX_RSS_KIB: u64 = 100 * 1024;

/// Runs `cmd` (its stderr to a file), sampling its memory: killed, and the test failed,
/// once it has run `limit` or holds more than [`MAX_RSS_KIB`].
fn run_watched(mut cmd: Command, name: &str, dir: &Path, limit: Duration) -> Ended {
    let log = dir.join(format!("{name}.log"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn_guarded();
    let started = Instant::now();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if peak > MAX_RSS_KIB {
            let _ = child.kill();
            panic!(
                "{name}: {peak} KiB resident and growing: read without a cap\n{}",
                read_log()
            );
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "{name}: still running after {limit:?} (killed): it waits forever\n{}",
                read_log()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ended {
        code: status.code(),
        stderr: read_log(),
        took: started.elapsed(),
    }
}

fn mkfifo(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    path.to_owned()
}

/// A process that writes `line` into the FIFO at `path` for as long as someone reads it.
fn feed_forever(path: &Path, line: &str) -> Guarded {
    Command::new("sh")
        .args([
            "-c",
            "exec yes \"$1\" > \"$0\"",
            &path.display().to_string(),
            line,
        ])
        .stderr(Stdio::null())
        .spawn_guarded()
}

/// `--only @FILE` of `/dev/zero`, or of a FIFO a writer keeps feeding (one endless line,
/// or endless lines): refused at the file's caps with exit 64 before any request, the
/// memory never growing with what was read. (It read all of `/dev/zero` into memory: past
/// 400 MB before the first request.)
#[test]
fn an_id_file_that_is_a_device_or_an_endless_fifo_is_refused_at_its_cap() {
    let ids = ids(3, 960);
    let sb = Sandbox::with_manifest(&ids);
    let bound = Duration::from_secs(30);
    let plan = |only: &str| {
        let mut cmd = sb.cmd();
        cmd.args(["plan", "m.csv", "--report", "r.csv", "--only", only]);
        cmd
    };
    let ended = run_watched(plan("@/dev/zero"), "zero", sb.dir.path(), bound);
    assert_eq!(ended.code, Some(64), "{}", ended.stderr);
    assert!(
        ended
            .stderr
            .contains("@/dev/zero, line 1: longer than 65536 bytes"),
        "{}",
        ended.stderr
    );
    let zeros = mkfifo(&sb.path("zeros.fifo"));
    let _writer = Command::new("sh")
        .args([
            "-c",
            "exec cat /dev/zero > \"$0\"",
            &zeros.display().to_string(),
        ])
        .stderr(Stdio::null())
        .spawn_guarded();
    let ended = run_watched(plan("@zeros.fifo"), "zeros", sb.dir.path(), bound);
    assert_eq!(ended.code, Some(64), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("longer than 65536 bytes"),
        "{}",
        ended.stderr
    );
    // An endless list of one id: read up to the cap (256 MiB), then refused.
    let endless = mkfifo(&sb.path("ids.fifo"));
    let _writer = feed_forever(&endless, &ids[0].to_string());
    let ended = run_watched(plan("@ids.fifo"), "endless", sb.dir.path(), bound);
    assert_eq!(ended.code, Some(64), "{}", ended.stderr);
    assert!(
        ended
            .stderr
            .contains("--only @ids.fifo: cannot read it: it is larger than 268435456 bytes"),
        "{}",
        ended.stderr
    );
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");
    // A pipe that ends is a list like any other (`--only @<(grep ...)`).
    let ends = mkfifo(&sb.path("one.fifo"));
    let _writer = Command::new("sh")
        .args([
            "-c",
            "sleep 1; echo \"$1\" > \"$0\"",
            &ends.display().to_string(),
            &ids[1].to_string(),
        ])
        .spawn_guarded();
    let ended = run_watched(plan("@one.fifo"), "ends", sb.dir.path(), bound);
    assert_eq!(ended.code, Some(0), "{}", ended.stderr);
    let report = sb.report("r.csv");
    let chosen: Vec<_> = report
        .values()
        .filter(|r| r.error_code.as_str() != "not_selected")
        .collect();
    assert_eq!(chosen.len(), 1, "{report:?}");
    assert_eq!(chosen[0].id, ids[1].to_string());
}

/// A FIFO no process writes to, named as each input the tool reads: the manifest and a
/// saved plan (read twice: refused at once as not regular files); an `--only` file, a
/// config file and a token file (read whole: waited for at most 30 s, then refused). Every
/// one exits 64 or 65 in time, nothing sent. (Each waited forever for a writer.)
#[test]
fn a_fifo_no_process_writes_to_is_refused_in_time_wherever_it_is_named() {
    let ids = ids(2, 961);
    let sb = Sandbox::with_manifest(&ids);
    let fifo = mkfifo(&sb.path("nobody.fifo"));
    mkfifo(&sb.path("p.plan"));
    sb.write(
        "token.yaml",
        format!("api_token_file: {}\n", fifo.display()),
    );
    let cases: Vec<(&str, Vec<&str>, i32, &str, u64)> = vec![
        (
            "manifest",
            vec!["plan", "nobody.fifo", "--format", "csv"],
            65,
            "not a regular file",
            0,
        ),
        (
            "plan",
            vec!["apply", "--plan", "p.plan"],
            64,
            "not a regular file",
            0,
        ),
        (
            "only",
            vec!["plan", "m.csv", "--only", "@nobody.fifo"],
            64,
            "did not end within 30 s",
            29,
        ),
        (
            "config",
            vec!["plan", "m.csv", "--config", "nobody.fifo"],
            64,
            "did not end within 30 s",
            29,
        ),
        (
            "token",
            vec!["plan", "m.csv", "--config", "token.yaml"],
            64,
            "did not end within 30 s",
            29,
        ),
    ];
    std::thread::scope(|scope| {
        for (name, args, want, says, at_least) in &cases {
            let mut cmd = sb.cmd();
            cmd.args(args).args(["--report", &format!("{name}.csv")]);
            if *name == "token" {
                cmd.env_remove("SIGNALWIRE_API_TOKEN");
            }
            let dir = sb.dir.path();
            scope.spawn(move || {
                let ended = run_watched(cmd, name, dir, Duration::from_secs(90));
                assert_eq!(ended.code, Some(*want), "{name}: {}", ended.stderr);
                assert!(ended.stderr.contains(says), "{name}: {}", ended.stderr);
                assert!(
                    ended.took >= Duration::from_secs(*at_least),
                    "{name}: {:?}",
                    ended.took
                );
            });
        }
    });
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");
}

/// `--metrics-file` naming a FIFO or a device: refused before any request, exit 64 (the
/// file is read back and replaced whole). (A FIFO waited forever after the summary, the
/// exit code never given; `/dev/zero` was read back until memory ran out.) A regular file
/// over the read-back cap is not read: a warning, and the run's own metrics replace it.
#[test]
fn a_metrics_file_that_is_a_fifo_or_a_device_is_refused_and_one_too_large_is_not_read() {
    let ids = ids(2, 962);
    let sb = Sandbox::with_manifest(&ids);
    mkfifo(&sb.path("m.prom"));
    for (name, file) in [("fifo", "m.prom"), ("zero", "/dev/zero")] {
        let mut cmd = sb.cmd();
        cmd.args([
            "apply",
            "m.csv",
            "--yes",
            "--report",
            &format!("{name}.csv"),
        ])
        .args(["--metrics-file", file]);
        let ended = run_watched(cmd, name, sb.dir.path(), Duration::from_secs(30));
        assert_eq!(ended.code, Some(64), "{name}: {}", ended.stderr);
        assert!(
            ended
                .stderr
                .contains(&format!("--metrics-file {file}: not a regular file")),
            "{name}: {}",
            ended.stderr
        );
    }
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");
    // 2 MiB of an old file (sparse): over the 1 MiB cap, so not read back.
    let big = sb.path("big.prom");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let mut cmd = sb.cmd();
    cmd.args([
        "plan",
        "m.csv",
        "--report",
        "big.csv",
        "--metrics-file",
        "big.prom",
    ]);
    let ended = run_watched(cmd, "big", sb.dir.path(), Duration::from_secs(60));
    assert_eq!(ended.code, Some(0), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("cannot read back the last success")
            && ended.stderr.contains("larger than 1048576 bytes"),
        "{}",
        ended.stderr
    );
    let text = std::fs::read_to_string(&big).unwrap();
    assert!(text.contains("sipgw_bulk_last_exit_code{"), "{text}");
}
