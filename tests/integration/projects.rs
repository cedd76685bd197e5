//! Several projects of one space: the projects file checked before anything is sent.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sipgw_bulk::sandbox::SandboxConfig;

use crate::support::*;

/// A projects file at `path` with `mode`, listing `entries` (id, name, token).
fn projects_file(path: &Path, entries: &[(&str, Option<&str>, &str)], mode: u32) {
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
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let project = sb.state().config().project_id.clone();
    let token = sb.state().config().api_token.clone();
    let entry = [(project.as_str(), Some("acme"), token.as_str())];
    let plan = |file: &str| {
        run(sb
            .cmd()
            .args(["plan", "m.csv", "--no-progress", "--projects", file]))
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
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
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
