//! The sandbox behaves like the live platform where the tool depends on it: PATCH is
//! validated as a full body, errors come in SignalWire's shapes, and auth is required.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::*;

/// One raw HTTP/1.0 request: (status, body).
fn request(sb: &Sandbox, method: &str, path: &str, auth: bool, body: &str) -> (u16, String) {
    use base64::Engine;
    let addr = sb.base_url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    let config = sb.state().config();
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", config.project_id, config.api_token));
    let auth_line = if auth {
        format!("Authorization: Basic {credentials}\r\n")
    } else {
        String::new()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth_line}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
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

#[test]
fn a_partial_patch_is_refused_like_the_live_api_and_counted() {
    let ids = ids(1, 60);
    let sb = Sandbox::seeded(&ids);
    let path = format!("/api/fabric/resources/sip_gateways/{}", ids[0]);

    let (status, body) = request(&sb, "PATCH", &path, true, r#"{"codecs":["OPUS"]}"#);
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"missing_required_parameter"), "{codes:?}");
    assert_eq!(sb.state().stats().partial_patches, 1);

    let full = r#"{"name":"a","uri":"sip:a.example.com","encryption":"default","ciphers":["AEAD_AES_256_GCM_8"],"codecs":["OPUS"]}"#;
    let (status, body) = request(&sb, "PATCH", &path, true, full);
    assert_eq!(status, 422, "live spaces refuse `default`: {body}");
    assert_eq!(
        sb.state().stats().partial_patches,
        1,
        "a full body is not partial"
    );

    let (status, body) = request(&sb, "GET", &path, false, "");
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"Unauthorized"}"#)
    );
    let (status, body) = request(
        &sb,
        "GET",
        "/api/fabric/resources/sip_gateways/0823a606-0aff-4c90-9eba-f88ba118fe05",
        true,
        "",
    );
    assert_eq!((status, body.as_str()), (404, r#"{"error":"Not Found"}"#));
    assert_eq!(sb.state().stats().patches_applied, 0);
}

/// `--seed-values manifest` rehearses a run with nothing to do; an edit made out of band
/// (here, as the README shows: another one-row manifest applied under another report) is
/// then the drift the next plan finds.
#[test]
fn a_sandbox_seeded_with_the_manifest_s_values_has_nothing_to_do_until_someone_edits_it() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateways.csv");
    let (_server, env) = sandbox_binary(&["--seed-from", example, "--seed-values", "manifest"]);
    let dir = tempfile::tempdir().unwrap();
    let tool = |args: &[&str]| {
        run(std::process::Command::new(BIN)
            .current_dir(dir.path())
            .envs(env.clone())
            .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
            .args(args))
    };
    let plan = tool(&["plan", example, "--detailed-exitcode", "--report", "p1.csv"]);
    assert_eq!(code(&plan), 0, "nothing to do: {}", stderr(&plan));

    let first = std::fs::read_to_string(example).unwrap();
    let id = first.lines().nth(1).unwrap().split(',').next().unwrap();
    std::fs::write(
        dir.path().join("edit.csv"),
        format!("id,name\n{id},renamed-out-of-band\n"),
    )
    .unwrap();
    let edit = tool(&["apply", "edit.csv", "--yes", "--report", "edit.report.csv"]);
    assert_eq!(code(&edit), 0, "{}", stderr(&edit));

    let plan = tool(&["plan", example, "--detailed-exitcode", "--report", "p2.csv"]);
    assert_eq!(code(&plan), 2, "the edit is drift: {}", stderr(&plan));
    let report = report(&dir.path().join("p2.csv"));
    let drifted: Vec<_> = report
        .values()
        .filter(|r| r.status == sipgw_bulk::status::Status::WouldUpdate)
        .collect();
    assert_eq!(drifted.len(), 1, "{report:?}");
    assert_eq!(drifted[0].id, id);
}

/// `GET /__sandbox/stats` of a sandbox binary at `base` (http://127.0.0.1:PORT).
fn stats_at(base: &str) -> serde_json::Value {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /__sandbox/stats HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

/// `--hold-patch N` stops a client at the same point every time: the Nth PATCH is never
/// answered (with `--hold-applied`, it lands first), the stats say it arrived, and the
/// sandbox still stops at once when interrupted.
#[test]
fn the_nth_patch_is_held_so_a_client_can_be_killed_at_a_chosen_point() {
    for applied in [false, true] {
        let mut args = vec!["--gateways", "6", "--hold-patch", "3"];
        if applied {
            args.push("--hold-applied");
        }
        let (mut server, env) = sandbox_binary(&args);
        let base = env[0].1.clone();
        let dir = tempfile::tempdir().unwrap();
        write_csv(&dir.path().join("m.csv"), &ids(6, 42), &[]);
        let mut client = std::process::Command::new(BIN)
            .current_dir(dir.path())
            .envs(env.clone())
            .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
            .args([
                "apply",
                "m.csv",
                "--yes",
                "--concurrency",
                "1",
                "--report",
                "r.csv",
            ])
            .stderr(std::process::Stdio::null())
            .spawn_guarded();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while stats_at(&base)["patches_held"] == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the third PATCH never came"
            );
            assert!(
                client.try_wait().unwrap().is_none(),
                "the client ended unheld"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let stats = stats_at(&base);
        assert!(
            client.try_wait().unwrap().is_none(),
            "still waiting for its answer"
        );
        assert_eq!(stats["patches"], 3, "{stats}");
        assert_eq!(stats["patches_held"], 1, "{stats}");
        assert_eq!(
            stats["patches_applied"],
            if applied { 3 } else { 2 },
            "{stats}"
        );
        // Interrupted, the sandbox answers a held PATCH (503) and stops: the client killed
        // first, or still waiting.
        if !applied {
            client.kill().unwrap();
            client.wait().unwrap();
        }
        let status = std::process::Command::new("kill")
            .args(["-INT", &server.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the sandbox did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
