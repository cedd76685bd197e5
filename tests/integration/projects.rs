//! Several projects of one space: the projects file checked before anything is sent.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sipgw_bulk::sandbox::SandboxConfig;

use crate::support::*;

/// A projects file at `path` with `mode`, listing `entries` (id, name, token).
pub(crate) fn projects_file(path: &Path, entries: &[(&str, Option<&str>, &str)], mode: u32) {
    let mut text = String::from("projects:\n");
    for (id, name, token) in entries {
        text.push_str(&format!("  - id: {id}\n    token: {token}\n"));
        if let Some(name) = name {
            text.push_str(&format!("    name: {name}\n"));
        }
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) -> bool {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).is_ok()
}

/// The effective user id of this test.
fn me() -> u32 {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() }
}

#[test]
fn a_projects_file_others_could_read_or_write_is_refused_before_any_request() {
    let ids = ids(4, 340);
    let sb = Sandbox::with_manifest(&ids);
    let project = sb.state().config().project_id.clone();
    let token = sb.state().config().api_token.clone();
    let entry = [(project.as_str(), Some("acme"), token.as_str())];
    let plan = |file: &str| {
        sb.plan("m.csv")
            .args(["--no-progress", "--projects", file])
            .run()
    };

    // This user's file with a group or other bit: refused, the file and mode named.
    for mode in [0o640, 0o604, 0o660] {
        projects_file(&sb.path("p.yaml"), &entry, mode);
        let out = plan("p.yaml");
        let err = stderr(&out);
        assert_eq!(code(&out), 64, "{err}");
        assert!(
            err.contains("p.yaml") && err.contains(&format!("{mode:04o}")),
            "{err}"
        );
        assert!(!err.contains(&token), "the token leaked: {err}");
    }

    // A file of another (non-root) user: refused whatever its mode.
    projects_file(&sb.path("theirs.yaml"), &entry, 0o600);
    if chown(&sb.path("theirs.yaml"), 54321, 54321) {
        let out = plan("theirs.yaml");
        assert_eq!(code(&out), 64, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("owned by uid 54321"),
            "{}",
            stderr(&out)
        );
    } else {
        eprintln!("this user cannot chown: the foreign-owner case is the unit test's");
    }

    // One project id twice; the environment's project with another token.
    projects_file(
        &sb.path("twice.yaml"),
        &[
            (project.as_str(), Some("a"), token.as_str()),
            (project.as_str(), Some("b"), token.as_str()),
        ],
        0o600,
    );
    let out = plan("twice.yaml");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("listed twice"), "{}", stderr(&out));
    projects_file(
        &sb.path("other-token.yaml"),
        &[(project.as_str(), None, "PTsomeothertoken0000")],
        0o600,
    );
    let out = plan("other-token.yaml");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("another token"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("PTsomeothertoken0000"));

    // Nothing of any of this reached the space.
    assert_eq!(sb.state().stats().requests, 0);

    // The same file, private: the run goes on with its project.
    projects_file(&sb.path("p.yaml"), &entry, 0o600);
    let out = run(sb
        .cmd()
        .args(["plan", "m.csv", "--no-progress"])
        .env("SIGNALWIRE_PROJECTS_FILE", "p.yaml"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains(&token) && !stdout(&out).contains(&token));
    assert_eq!(sb.state().stats().gets, ids.len() as u64);
}

#[test]
fn a_root_owned_0440_projects_file_is_accepted_as_a_mounted_secret() {
    // A pod of uid/gid 4242 (its fsGroup) reading a Secret mounted root-owned, 0440.
    const POD: u32 = 4242;
    let ids = ids(3, 341);
    let sb = Sandbox::with_manifest(&ids);
    let project = sb.state().config().project_id.clone();
    let token = sb.state().config().api_token.clone();
    let path = sb.path("secret.yaml");
    projects_file(&path, &[(project.as_str(), None, token.as_str())], 0o440);
    if me() != 0 || !chown(&path, 0, POD) || !chown(sb.dir.path(), POD, POD) {
        eprintln!(
            "not root: a root-owned file cannot be made here; projects::tests::\
             the_access_rule_is_sshs decides the case from its uid and mode"
        );
        return;
    }
    let mut cmd = sb.cmd();
    std::os::unix::process::CommandExt::uid(&mut cmd, POD);
    std::os::unix::process::CommandExt::gid(&mut cmd, POD);
    cmd.env_remove("SIGNALWIRE_PROJECT_ID")
        .env_remove("SIGNALWIRE_API_TOKEN")
        .env("HOME", sb.dir.path())
        .args([
            "plan",
            "m.csv",
            "--no-progress",
            "--projects",
            "secret.yaml",
        ]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().stats().gets, ids.len() as u64);

    // The same file writable by its group: refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o460)).unwrap();
    let out = run(&mut cmd);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("root's with mode 0460"),
        "{}",
        stderr(&out)
    );
}

/// One raw HTTP/1.0 request with `(project, token)` as Basic auth: (status, body).
fn request_as(
    sb: &Sandbox,
    who: (&str, &str),
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use base64::Engine;
    use std::io::{Read, Write};
    let addr = sb.base_url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1));
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const FULL_BODY: &str = r#"{"name":"a","uri":"sip:a.example.com","encryption":"required","ciphers":["AEAD_AES_256_GCM_8"],"codecs":["OPUS"]}"#;

#[test]
fn each_sandbox_project_sees_only_its_gateways_under_one_write_limit() {
    // Ten writes a window for the whole space.
    let config = SandboxConfig {
        write_limit: 1,
        limit_window: Some(std::time::Duration::from_secs(10)),
        ..SandboxConfig::default()
    }
    .with_projects(3);
    let sb = Sandbox::start(config, &[]);
    let ids = ids(9, 342);
    for (i, id) in ids.iter().enumerate() {
        sb.state().seed_in(i % 3, [*id]);
    }
    let projects: Vec<(String, String)> = sb
        .state()
        .config()
        .projects()
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let who = |p: usize| (projects[p].0.as_str(), projects[p].1.as_str());
    let path = |id: &uuid::Uuid| format!("/api/fabric/resources/sip_gateways/{id}");

    // Its own gateway: 200, with its project id; another project's: 404, counted.
    let (status, body) = request_as(&sb, who(1), "GET", &path(&ids[1]), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&projects[1].0), "{body}");
    let (status, _) = request_as(&sb, who(1), "GET", &path(&ids[0]), "");
    assert_eq!(status, 404);
    let (status, _) = request_as(&sb, who(2), "PATCH", &path(&ids[0]), FULL_BODY);
    assert_eq!(status, 404);
    assert_eq!(sb.state().stats().foreign_requests, 2);
    assert_eq!(sb.state().patch_count(&ids[0]), 0);

    // The list: each project its three.
    for p in 0..3 {
        let (status, body) =
            request_as(&sb, who(p), "GET", "/api/fabric/resources/sip_gateways", "");
        assert_eq!(status, 200);
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut seen: Vec<String> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect();
        seen.sort();
        let mut own: Vec<String> = (0..9)
            .filter(|i| i % 3 == p)
            .map(|i| ids[i].to_string())
            .collect();
        own.sort();
        assert_eq!(seen, own, "project {p}");
    }

    // One write limit for all: 12 more writes from three projects; the refused PATCH
    // above spent one of the window's ten, so nine are let through.
    let mut statuses = Vec::new();
    for (i, id) in ids.iter().enumerate().chain(ids.iter().enumerate().take(3)) {
        statuses.push(request_as(&sb, who(i % 3), "PATCH", &path(id), FULL_BODY).0);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // The window may turn once during the test: then more pass, never fewer.
    assert!(ok >= 9 && ok + refused == 12, "{statuses:?}");
    if ok == 9 {
        assert_eq!(refused, 3);
    }
}

#[test]
fn the_sandbox_binary_writes_a_private_projects_file_that_a_run_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("projects.yaml");
    let (_server, env) = sandbox_binary_lines(
        &[
            "--gateways",
            "9",
            "--project-count",
            "3",
            "--projects-out",
            out.to_str().unwrap(),
        ],
        4,
    );
    assert_eq!(env[3].0, "SIGNALWIRE_PROJECTS_FILE");
    assert_eq!(std::path::Path::new(&env[3].1), out);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.matches("- id: ").count(), 3, "{text}");
    let main_project = &env[1].1;
    assert!(text.contains(main_project.as_str()), "{text}");
    // The project named second in the file, by its own credentials and the file: its
    // three gateways, no other.
    let second: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- id: ")
                .or(l.trim().strip_prefix("token: "))
        })
        .collect();
    let export = |project: &str, token: &str| {
        run(std::process::Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("SIGNALWIRE_SPACE")
            .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
            .env(&env[0].0, &env[0].1)
            .env("SIGNALWIRE_PROJECT_ID", project)
            .env("SIGNALWIRE_API_TOKEN", token)
            .args([
                "export",
                "--projects",
                out.to_str().unwrap(),
                "--project",
                project,
            ]))
    };
    // The second project alone, named by its id: its three gateways, named by its name.
    let listed = export(second[2], second[3]);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let text = stdout(&listed);
    assert_eq!(text.lines().count(), 1 + 3, "{text}");
    assert!(
        text.starts_with("id,name,uri,encryption,ciphers,codecs,project\n"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.ends_with(",p2")).count(),
        3,
        "{text}"
    );
    assert!(!stderr(&listed).contains(second[3]));
}

/// A sandbox of three projects (three gateways each), announcing its write window.
fn three_projects(announce: bool) -> (Sandbox, Vec<uuid::Uuid>) {
    let config = SandboxConfig {
        announce_limit: announce,
        limit_window: announce.then_some(std::time::Duration::from_secs(10)),
        ..SandboxConfig::default()
    }
    .with_projects(3);
    let sb = Sandbox::start(config, &[]);
    let ids = ids(9, 343);
    for (i, id) in ids.iter().enumerate() {
        sb.state().seed_in(i % 3, [*id]);
    }
    (sb, ids)
}

#[test]
fn doctor_reports_each_project_and_the_rate_limit_headers_and_never_writes() {
    let (sb, _) = three_projects(true);
    let file = sb.path("projects.yaml");
    std::fs::write(&file, sb.state().config().projects_yaml()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(sb.cmd().args(["doctor", "--projects", "projects.yaml"]));
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    for (i, (id, token)) in sb.state().config().projects().iter().enumerate() {
        assert!(
            text.contains(&format!("project p{} ({id}): usable\n", i + 1)),
            "{text}"
        );
        assert!(!text.contains(token) && !stderr(&out).contains(token));
    }
    assert_eq!(
        text.matches("  credentials: accepted\n").count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches("  gateways visible: 3\n").count(), 3, "{text}");
    // The sandbox's header names, with their values.
    assert_eq!(
        text.matches("  rate-limit headers: x-ratelimit-limit: 13800, x-ratelimit-remaining: ")
            .count(),
        3,
        "{text}"
    );
    assert!(text.contains(", x-ratelimit-reset: "), "{text}");
    assert_eq!(text.matches("  round trip: ").count(), 3, "{text}");
    assert_eq!(text.matches("s from this machine's\n").count(), 3, "{text}");
    let stats = sb.state().stats();
    assert_eq!(
        (stats.patches, stats.writes, stats.foreign_requests),
        (0, 0, 0)
    );

    // One project's token revoked: exit 3, that project named, the others still usable.
    let second = sb.state().config().projects()[1].0.to_owned();
    let revoked = sb
        .state()
        .config()
        .projects_yaml()
        .replace(sb.state().config().projects()[1].1, "PTrevoked0000000000");
    std::fs::write(&file, revoked).unwrap();
    let out = run(sb.cmd().args(["doctor", "--projects", "projects.yaml"]));
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}{}", stderr(&out));
    assert!(
        text.contains(&format!("project p2 ({second}): REFUSED")),
        "{text}"
    );
    assert!(text.contains("  credentials: refused\n"), "{text}");
    assert_eq!(text.matches(": usable\n").count(), 2, "{text}");
    assert!(stderr(&out).contains("p2"), "{}", stderr(&out));
    assert!(!text.contains("PTrevoked0000000000"));
    assert_eq!(sb.state().stats().patches, 0);
}

#[test]
fn doctor_says_whether_one_project_is_usable_and_exits_3_when_its_token_is_refused() {
    let (sb, _) = three_projects(false);
    let out = run(sb.cmd().arg("doctor"));
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    let main_project = &sb.state().config().project_id;
    assert!(
        text.starts_with(&format!("project {main_project}: usable\n")),
        "{text}"
    );
    assert!(text.contains("  gateways visible: 3\n"), "{text}");
    assert!(
        text.contains("  rate-limit headers: none on this answer\n"),
        "{text}"
    );
    assert_eq!(text.matches("project ").count(), 1, "{text}");

    // Its token refused: exit 3.
    let out = run(sb
        .cmd()
        .arg("doctor")
        .env("SIGNALWIRE_API_TOKEN", "PTwrong00000000000"));
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(stdout(&out).contains("REFUSED"), "{}", stdout(&out));

    // An empty project is usable, and said.
    let empty = SandboxConfig::default();
    let sb = Sandbox::start(empty, &[]);
    let out = run(sb.cmd().arg("doctor"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(": usable (no gateways)\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn validate_checks_each_rows_project_against_the_projects_file() {
    let (sb, ids) = three_projects(false);
    let file = sb.path("projects.yaml");
    std::fs::write(&file, sb.state().config().projects_yaml()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let second = sb.state().config().projects()[1].0.to_owned();
    let manifest = format!(
        "id,name,project\n{},a,p1\n{},b,{second}\n{},c,\n{},d,nobody\n{},e,bad project\n",
        ids[0], ids[1], ids[3], ids[2], ids[4]
    );
    sb.write("m.csv", manifest);
    // Without the file: only the cell's form is checked.
    let out = run(sb.cmd().args(["validate", "m.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.contains("line 6") && listed.contains("`bad project` is not a project id or name"),
        "{listed}"
    );
    // With it: the unknown project too; the empty cell is the environment's project.
    let out = run(sb
        .cmd()
        .args(["validate", "m.csv", "--projects", "projects.yaml"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("line 5") && listed.contains("project `nobody` is not one this run has credentials for (this run's projects: p1, p2, p3)"),
        "{listed}"
    );
    // No default project: the empty cell cannot run.
    let out = run(sb
        .cmd()
        .env_remove("SIGNALWIRE_PROJECT_ID")
        .env_remove("SIGNALWIRE_API_TOKEN")
        .args(["validate", "m.csv", "--projects", "projects.yaml"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("line 4") && stdout(&out).contains("names no project"),
        "{}",
        stdout(&out)
    );

    // YAML: `project:` on a row and in `defaults`.
    let yaml = format!(
        "defaults:\n  project: p2\ngateways:\n  - id: {}\n  - id: {}\n    project: p3\n  - id: {}\n    project: p9\n",
        ids[1], ids[2], ids[0]
    );
    sb.write("m.yaml", yaml);
    let out = run(sb
        .cmd()
        .args(["validate", "m.yaml", "--projects", "projects.yaml"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("`p9`"), "{}", stdout(&out));
}

/// A sandbox of `n` gateways dealt to three projects in turn, its projects file (0600) in
/// its directory, and a manifest asking `desired(i)` of each, naming the project of row
/// `i` by name (`p1`/`p2`), by id (the third), or not at all (the first, the default).
pub(crate) fn three_project_run(n: u64, config: SandboxConfig) -> (Sandbox, Vec<uuid::Uuid>) {
    let sb = Sandbox::start(config.with_projects(3), &[]);
    let ids = ids(n, 344);
    for (i, id) in ids.iter().enumerate() {
        sb.state().seed_in(i % 3, [*id]);
    }
    let file = sb.path("projects.yaml");
    std::fs::write(&file, sb.state().config().projects_yaml()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_csv(&sb.path("plain.csv"), &ids, &[]);
    let third = sb.state().config().projects()[2].0.to_owned();
    let text = sb.read("plain.csv");
    let mut lines = text.lines();
    let mut manifest = format!("{},project\n", lines.next().unwrap());
    for (i, line) in lines.enumerate() {
        let project = match (i % 3, i % 2) {
            (0, 0) => "",
            (0, _) => "p1",
            (1, _) => "p2",
            _ => third.as_str(),
        };
        manifest.push_str(&format!("{line},{project}\n"));
    }
    sb.write("m.csv", manifest);
    (sb, ids)
}

#[test]
fn one_run_across_three_projects_writes_each_gateway_with_its_projects_credentials_and_rolls_back()
{
    let (sb, ids) = three_project_run(300, SandboxConfig::default());
    let apply = |manifest: &str, report: &str| {
        sb.apply(manifest)
            .args(["--no-progress", "--projects", "projects.yaml"])
            .report(report)
            .run()
    };
    let out = apply("m.csv", "r.csv");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    assert_eq!(
        stats.foreign_requests, 0,
        "a project was asked about another's gateway"
    );
    assert_eq!(stats.patches_applied, 300);
    let projects: Vec<String> = sb
        .state()
        .config()
        .projects()
        .iter()
        .map(|(id, _)| (*id).to_owned())
        .collect();
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 300);
    for (row, record) in &report {
        let i = (*row - 2) as usize;
        assert_eq!(record.status, sipgw_bulk::status::Status::Updated);
        assert_eq!(
            record.project.as_deref(),
            Some(projects[i % 3].as_str()),
            "row {row}"
        );
    }
    let header = sb.read("r.csv");
    assert!(
        header
            .lines()
            .next()
            .unwrap()
            .ends_with(",duration_ms,project")
    );

    // The rollback names each row's project; applied, the space is as it was.
    let out = run(sb.cmd().args(["rollback", "r.csv", "-o", "undo.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let undo = sb.read("undo.csv");
    assert!(
        undo.starts_with("id,name,uri,encryption,ciphers,codecs,project\n"),
        "{undo}"
    );
    let out = apply("undo.csv", "undo.report.csv");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), starting_state(&ids));
    assert_eq!(sb.state().stats().foreign_requests, 0);

    // Every project exported into one manifest, planned: nothing to change.
    let out = run(sb
        .cmd()
        .args(["export", "--projects", "projects.yaml", "-o", "all.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all = sb.read("all.csv");
    assert_eq!(all.lines().count(), 1 + 300);
    for p in 1..=3 {
        assert_eq!(
            all.lines()
                .filter(|l| l.ends_with(&format!(",p{p}")))
                .count(),
            100
        );
    }
    let out = sb
        .plan("all.csv")
        .args([
            "--no-progress",
            "--projects",
            "projects.yaml",
            "--detailed-exitcode",
        ])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

#[test]
fn a_row_naming_a_project_the_run_lacks_is_invalid_and_the_rest_run() {
    let (sb, ids) = three_project_run(6, SandboxConfig::default());
    let mut text = sb.read("m.csv");
    let extra = crate::support::ids(1, 345)[0];
    text.push_str(&format!("{extra},x,,,,,nobody\n"));
    sb.write("m.csv", text);
    let out = sb
        .apply("m.csv")
        .args(["--no-progress", "--projects", "projects.yaml"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let report = sb.report("r.csv");
    let bad = &report[&8];
    assert_eq!(bad.status, sipgw_bulk::status::Status::Invalid);
    assert!(
        bad.error
            .contains("project `nobody` is not one this run has"),
        "{}",
        bad.error
    );
    assert_eq!(bad.project, None);
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

#[test]
fn three_projects_under_one_announced_count_keep_its_reserve_and_are_never_refused() {
    // 60 writes a 10 s window for the whole space, announced; half kept in reserve.
    let config = SandboxConfig {
        write_limit: 6,
        limit_window: Some(std::time::Duration::from_secs(10)),
        announce_limit: true,
        ..SandboxConfig::default()
    };
    let (sb, ids) = three_project_run(45, config);
    let out = sb
        .apply("m.csv")
        .args([
            "--no-progress",
            "--projects",
            "projects.yaml",
            "--reserve",
            "50%",
        ])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    assert_eq!(stats.writes_throttled, 0, "{stats:?}");
    let low = stats.lowest_remaining_after_client_write.unwrap();
    assert!(
        low >= 30,
        "the remaining count fell to {low}, below the reserve of 30"
    );
}

#[test]
fn one_projects_refused_credentials_skip_only_its_rows_and_resume_writes_them() {
    let (sb, ids) = three_project_run(12, SandboxConfig::default());
    let (second, good_token) = {
        let p = sb.state().config().projects()[1];
        (p.0.to_owned(), p.1.to_owned())
    };
    let good = sb.state().config().projects_yaml();
    let revoked = good.replace(&good_token, "PTrevoked0000000000");
    sb.write("projects.yaml", &revoked);
    let apply = |resume: bool| {
        let mut cmd = sb.cmd();
        cmd.args([
            "apply",
            "m.csv",
            "--yes",
            "--no-progress",
            "--projects",
            "projects.yaml",
            "--report",
            "r.csv",
            "--summary-json",
            "s.json",
        ]);
        if resume {
            cmd.arg("--resume");
        }
        run(&mut cmd)
    };
    let out = apply(false);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&second)
            && stderr(&out).contains("refused this project's credentials"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("PTrevoked0000000000"));
    let report = sb.report("r.csv");
    for (row, record) in &report {
        let i = (*row - 2) as usize;
        if i % 3 == 1 {
            assert_eq!(
                record.status,
                sipgw_bulk::status::Status::Skipped,
                "row {row}"
            );
            assert_eq!(record.error_code.as_str(), "credentials_refused");
            assert_eq!(record.project.as_deref(), Some(second.as_str()));
            assert_eq!(sb.state().patch_count(&ids[i]), 0);
        } else {
            assert_eq!(
                record.status,
                sipgw_bulk::status::Status::Updated,
                "row {row}"
            );
        }
    }
    let summary = sb.summary("s.json");
    assert_eq!(summary["refused_projects"], serde_json::json!([second]));
    // Counts per project: the refused one's four rows skipped, the others' written.
    assert_eq!(
        summary["projects"][&second],
        serde_json::json!({"skipped": 4})
    );
    assert_eq!(summary["projects"].as_object().unwrap().len(), 3);
    let first = sb.state().config().projects()[0].0.to_owned();
    assert_eq!(
        summary["projects"][&first],
        serde_json::json!({"updated": 4})
    );
    assert!(
        stderr(&out).contains(&format!("project {second}: skipped 4")),
        "{}",
        stderr(&out)
    );

    // The token fixed: --resume writes only that project's rows.
    sb.write("projects.yaml", &good);
    let out = apply(true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1, "each gateway written once");
    }

    // Every project refused: exit 3.
    let all_bad = sb
        .state()
        .config()
        .projects()
        .iter()
        .fold(good.clone(), |text, (_, token)| {
            text.replace(token, "PTrevoked0000000000x")
        });
    sb.write("projects.yaml", all_bad);
    let out = run(sb
        .cmd()
        .env_remove("SIGNALWIRE_PROJECT_ID")
        .env_remove("SIGNALWIRE_API_TOKEN")
        .args([
            "apply",
            "m.csv",
            "--yes",
            "--no-progress",
            "--projects",
            "projects.yaml",
            "--report",
            "r2.csv",
        ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn a_manifest_naming_projects_without_a_projects_file_runs_only_the_environments() {
    let ids = ids(4, 346);
    let sb = Sandbox::seeded(&ids);
    let project = sb.state().config().project_id.clone();
    write_csv(&sb.path("plain.csv"), &ids, &[]);
    let text = sb.read("plain.csv");
    let mut lines = text.lines();
    let mut manifest = format!("{},project\n", lines.next().unwrap());
    for (i, line) in lines.enumerate() {
        let cell = ["", project.as_str(), "elsewhere", ""][i];
        manifest.push_str(&format!("{line},{cell}\n"));
    }
    sb.write("m.csv", manifest);
    let out = sb
        .apply("m.csv")
        .args(["--no-progress"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = sb.report("r.csv");
    assert_eq!(report[&4].status, sipgw_bulk::status::Status::Invalid);
    assert!(
        report[&4].error.contains("`elsewhere`"),
        "{}",
        report[&4].error
    );
    for row in [2, 3, 5] {
        assert_eq!(report[&row].status, sipgw_bulk::status::Status::Updated);
        assert_eq!(report[&row].project.as_deref(), Some(project.as_str()));
    }
    assert_eq!(sb.state().patch_count(&ids[2]), 0);
}

#[test]
fn the_lock_sees_the_same_projects_and_gateways_however_they_are_spelled() {
    let (sb, ids) = three_project_run(30, SandboxConfig::default());
    // The same rows as YAML, every project named by its id, in reverse order; the same
    // projects in another file, in another order.
    let projects = sb.state().config().projects();
    let mut yaml = String::from("gateways:\n");
    for (i, id) in ids.iter().enumerate().rev() {
        yaml.push_str(&format!(
            "  - id: {id}\n    project: {}\n",
            projects[i % 3].0
        ));
    }
    sb.write("m.yaml", yaml);
    let mut reordered = String::from("projects:\n");
    for (id, token) in projects.iter().rev() {
        reordered.push_str(&format!(
            "  - id: {}\n    token: {token}\n",
            id.to_uppercase()
        ));
    }
    sb.write("other.yaml", reordered);
    std::fs::set_permissions(
        sb.path("other.yaml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut first = sb
        .apply("m.csv")
        .args(["--rate", "5", "--projects", "projects.yaml"])
        .args(["--report", "first.csv"])
        .command()
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let started = std::time::Instant::now();
    while !sb.path("first.csv").exists() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = sb
        .apply("m.yaml")
        .args(["--projects", "other.yaml"])
        .report("second.csv")
        .run();
    let err = stderr(&second);
    assert_eq!(code(&second), 5, "{err}");
    assert!(
        err.contains("another run on this machine") && err.contains("first.csv"),
        "{err}"
    );
    let _ = first.kill();
}

#[test]
fn shards_and_a_selection_split_a_manifest_of_several_projects() {
    let (sb, ids) = three_project_run(30, SandboxConfig::default());
    // --only across projects: one gateway of each.
    let out = sb
        .apply("m.csv")
        .args(["--no-progress", "--projects", "projects.yaml"])
        .report("only.csv")
        .args([
            "--only",
            &ids[0].to_string(),
            "--only",
            &ids[1].to_string(),
            "--only",
            &ids[2].to_string(),
        ])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let only = sb.report("only.csv");
    let written: Vec<u64> = only
        .iter()
        .filter(|(_, r)| r.status == sipgw_bulk::status::Status::Updated)
        .map(|(row, _)| *row)
        .collect();
    assert_eq!(written, vec![2, 3, 4]);
    assert_eq!(only.len(), 30);
    // Three shard processes at once: every row exactly once, each with its project.
    let shards: Vec<Guarded> = (0..3)
        .map(|k| {
            sb.apply("m.csv")
                .args(["-q", "--projects", "projects.yaml"])
                .args([
                    "--shard",
                    &format!("{k}/3"),
                    "--report",
                    &format!("s{k}.csv"),
                ])
                .command()
                .spawn_guarded()
        })
        .collect();
    for shard in shards {
        let out = shard.wait_with_output();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let mut rows = 0;
    for k in 0..3 {
        let r = report(&sb.path(&format!("s{k}.csv")));
        assert!(r.values().all(|r| r.project.is_some()));
        rows += r.len();
    }
    assert_eq!(rows, 30);
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1);
    }
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

/// The projects CronJob mounts its Secret as a file root owns, 0440 with the pod's
/// fsGroup, names it in SIGNALWIRE_PROJECTS_FILE, and uses only flags `apply` has.
#[test]
fn the_kubernetes_projects_example_mounts_a_0440_secret_and_uses_real_flags() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/k8s/cronjob-projects.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let pod = &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let mode = pod["volumes"][0]["secret"]["defaultMode"].as_u64().unwrap();
    assert_eq!(mode, 0o440, "defaultMode {mode} (decimal) is not 0440");
    assert_eq!(
        pod["securityContext"]["fsGroup"],
        pod["securityContext"]["runAsGroup"]
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let env = &container["env"][0];
    assert_eq!(env["name"], "SIGNALWIRE_PROJECTS_FILE");
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert!(env["value"].as_str().unwrap().starts_with(mount));
    let help = stdout(&run(
        std::process::Command::new(BIN).args(["apply", "--help"])
    ));
    let args = container["args"].to_string();
    for flag in args
        .split(['"', ' ', ',', '[', ']'])
        .filter(|t| t.starts_with("--"))
    {
        assert!(help.contains(flag), "`apply` has no {flag}");
    }
}

#[test]
fn show_reads_a_gateway_of_another_project_with_that_projects_credentials() {
    let (sb, ids) = three_projects(false);
    let file = sb.path("projects.yaml");
    std::fs::write(&file, sb.state().config().projects_yaml()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // ids[1] is the second project's: the environment's project cannot see it.
    let id = ids[1].to_string();
    let out = run(sb.cmd().args(["show", &id]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = run(sb.cmd().args([
        "show",
        &id,
        "--projects",
        "projects.yaml",
        "--project",
        "p2",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let out = run(sb.cmd().args(["show", &id, "--project", "p2"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    let out = run(sb.cmd().args([
        "show",
        &id,
        "--projects",
        "projects.yaml",
        "--project",
        "p9",
    ]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
}

#[test]
fn a_saved_plan_of_several_projects_records_their_ids_and_applies_with_them() {
    let (sb, ids) = three_project_run(30, SandboxConfig::default());
    let out = sb
        .plan("m.csv")
        .args([
            "--no-progress",
            "--projects",
            "projects.yaml",
            "-o",
            "m.plan",
        ])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = sb.read("m.plan");
    let projects = sb.state().config().projects();
    for (id, token) in &projects {
        assert_eq!(
            plan.matches(&format!("\"project\":\"{id}\"")).count(),
            10,
            "{plan}"
        );
        assert!(!plan.contains(token));
    }
    // Without the projects file the run cannot act for two of its projects: a reviewed
    // plan is applied whole or not at all (exit 64, nothing sent).
    let sent = sb.state().stats().requests;
    let out = run(sb.cmd().args([
        "apply",
        "--plan",
        "m.plan",
        "--yes",
        "--no-progress",
        "--report",
        "alone.csv",
    ]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        projects[1..]
            .iter()
            .any(|(id, _)| stderr(&out).contains(&format!("project `{id}`"))),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing was sent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.state().stats().requests, sent);
    // With it: the rest, each with its project.
    let out = run(sb.cmd().args([
        "apply",
        "--plan",
        "m.plan",
        "--yes",
        "--no-progress",
        "--projects",
        "projects.yaml",
        "--report",
        "all.csv",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

#[test]
fn a_token_revoked_mid_run_stops_only_that_projects_remaining_rows() {
    let (sb, ids) = three_project_run(60, SandboxConfig::default());
    let second = sb.state().config().projects()[1].0.to_owned();
    let apply = |resume: bool| {
        let mut cmd = sb.cmd();
        cmd.args([
            "apply",
            "m.csv",
            "--yes",
            "-q",
            "--rate",
            "10",
            "--concurrency",
            "4",
        ])
        .args(["--projects", "projects.yaml", "--report", "r.csv"]);
        if resume {
            cmd.arg("--resume");
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn_guarded()
    };
    let running = apply(false);
    let started = std::time::Instant::now();
    while sb.state().stats().patches_applied < 12 && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    sb.state().revoke(1, true);
    let out = running.wait_with_output();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(&second), "{}", stderr(&out));
    let report = sb.report("r.csv");
    let (mut written, mut refused) = (0, 0);
    for (row, record) in &report {
        let i = (*row - 2) as usize;
        match (i % 3, record.status) {
            (1, sipgw_bulk::status::Status::Updated) => written += 1,
            (1, sipgw_bulk::status::Status::Skipped) => {
                assert_eq!(record.error_code.as_str(), "credentials_refused");
                refused += 1;
            }
            (_, status) => assert_eq!(status, sipgw_bulk::status::Status::Updated, "row {row}"),
        }
    }
    assert!(
        written > 0 && refused > 0,
        "{written} written, {refused} refused"
    );
    assert_eq!(written + refused, 20);

    // The token restored: --resume writes only what was left, each gateway once.
    sb.state().revoke(1, false);
    let out = apply(true).wait_with_output();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1);
    }
}
