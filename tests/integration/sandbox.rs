//! The sandbox behaves like the live platform where the tool depends on it: PATCH is
//! validated as a full body, errors come in SignalWire's shapes, and auth is required.

use std::io::{Read, Write};
use std::net::TcpStream;

use sipgw_bulk::sandbox::SandboxConfig;

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
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
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
        .filter(|r| r.status == sipgw_bulk::report::Status::WouldUpdate)
        .collect();
    assert_eq!(drifted.len(), 1, "{report:?}");
    assert_eq!(drifted[0].id, id);
}
