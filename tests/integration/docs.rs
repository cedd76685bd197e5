//! The documentation held to the tool: every shell block of README.md and docs/*.md is
//! either run here as written (in a fresh directory holding `examples/gateways.csv` as
//! `gateways.csv`, the binary on `PATH`) or carries the reason it is not; every link
//! between the pages names a file and a heading that exist.
//!
//! A block is marked by the line just before its fence:
//! - `<!-- snippet: run -->`: run as written;
//! - `<!-- snippet: run with a sandbox -->`: run with a sandbox seeded from `gateways.csv`
//!   already serving, its three variables in the environment, and `ID` set to the first
//!   row's id;
//! - `<!-- snippet: run with a sandbox, given GIVEN -->`: the same, after the set-up named
//!   GIVEN (see [`given`]);
//! - `<!-- snippet: not run: REASON -->`: not run, for the reason given.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/, by their path from the repository's root.
pub fn pages() -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    names.sort();
    names.insert(0, "README.md".to_owned());
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(root().join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

/// The page that holds `needle`, and its text (exactly one page must hold it).
pub fn page_holding(needle: &str) -> (String, String) {
    let found: Vec<(String, String)> = pages()
        .into_iter()
        .filter(|(_, text)| text.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{needle:?} should be on exactly one page, found on {:?}",
        found.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    found.into_iter().next().unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Run,
    Sandbox(Option<String>),
    NotRun(String),
    Unmarked,
}

#[derive(Debug)]
struct Snippet {
    page: String,
    line: usize,
    mode: Mode,
    code: String,
}

fn mode_of(marker: &str) -> Mode {
    let Some(inner) = marker
        .trim()
        .strip_prefix("<!-- snippet: ")
        .and_then(|m| m.strip_suffix(" -->"))
    else {
        return Mode::Unmarked;
    };
    if inner == "run" {
        Mode::Run
    } else if inner == "run with a sandbox" {
        Mode::Sandbox(None)
    } else if let Some(given) = inner.strip_prefix("run with a sandbox, given ") {
        Mode::Sandbox(Some(given.to_owned()))
    } else if let Some(reason) = inner.strip_prefix("not run: ") {
        Mode::NotRun(reason.to_owned())
    } else {
        Mode::Unmarked
    }
}

/// Every ```sh and ```bash block of a page, with the mode its marker line gives.
fn snippets(page: &str, text: &str) -> Vec<Snippet> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if !line.starts_with("```") {
            i += 1;
            continue;
        }
        let lang = line.trim_start_matches('`').trim();
        let start = i;
        i += 1;
        let mut code = String::new();
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            code.push_str(lines[i].strip_prefix("  ").unwrap_or(lines[i]));
            code.push('\n');
            i += 1;
        }
        i += 1;
        if lang == "sh" || lang == "bash" {
            let marker = if start > 0 { lines[start - 1] } else { "" };
            found.push(Snippet {
                page: page.to_owned(),
                line: start + 1,
                mode: mode_of(marker),
                code,
            });
        }
    }
    found
}

fn all_snippets() -> Vec<Snippet> {
    pages()
        .iter()
        .flat_map(|(page, text)| snippets(page, text))
        .collect()
}

/// Set-ups a snippet may name, run after the sandbox is up and before the snippet.
fn given(name: &str) -> &'static str {
    match name {
        // Last night's report with a failed row: the run went to a second sandbox whose
        // PATCHes of the first gateway fail; the snippet's sandbox has no such fault.
        "a report with a failed row" => {
            r#"sipgw-bulk sandbox --seed-from gateways.csv --port 0 --fail-patch "$ID" > night.env 2>/dev/null &
until [ "$(wc -l < night.env)" -ge 3 ]; do sleep 0.1; done
( set -a; . ./night.env; set +a
  sipgw-bulk apply gateways.csv --yes --report tonight.csv -q ) || true
kill %%
grep -q ',failed,' tonight.csv
"#
        }
        other => panic!("no set-up named {other:?}"),
    }
}

const SANDBOX: &str = r#"sipgw-bulk sandbox --seed-from gateways.csv --port 0 > .sandbox.env 2> .sandbox.log &
until [ "$(wc -l < .sandbox.env)" -ge 3 ]; do sleep 0.1; done
set -a; . ./.sandbox.env; set +a
ID=$(sed -n 2p gateways.csv | cut -d, -f1)
"#;

/// Runs one snippet as bash runs a pasted block, stopping at the first failing command.
fn run_snippet(snippet: &Snippet) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/gateways.csv"),
        dir.path().join("gateways.csv"),
    )
    .unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut script =
        String::from("set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    if let Mode::Sandbox(set_up) = &snippet.mode {
        script.push_str(SANDBOX);
        if let Some(name) = set_up {
            script.push_str(given(name));
        }
    }
    script.push_str(&snippet.code);
    run(Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
        .env_remove("SIGNALWIRE_SPACE")
        .env_remove("SIGNALWIRE_BASE_URL")
        .env_remove("SIGNALWIRE_PROJECT_ID")
        .env_remove("SIGNALWIRE_API_TOKEN")
        .env_remove("RUST_LOG"))
}

/// Every shell block in the README and the guide says whether it runs; one that does not
/// says why.
#[test]
fn every_shell_block_in_the_docs_is_run_or_says_why_not() {
    let found = all_snippets();
    assert!(found.len() > 10, "{found:?}");
    let bad: Vec<String> = found
        .iter()
        .filter(|s| match &s.mode {
            Mode::Unmarked => true,
            Mode::NotRun(reason) => reason.trim().len() < 10,
            _ => false,
        })
        .map(|s| format!("{}:{}", s.page, s.line))
        .collect();
    assert!(
        bad.is_empty(),
        "shell blocks without a `<!-- snippet: ... -->` line before them (or with no reason \
         not to run): {bad:?}"
    );
    // A marker with no shell block under it is a typo.
    for (page, text) in pages() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("<!-- snippet:") {
                let next = lines.get(i + 1).map_or("", |l| l.trim_start());
                assert!(
                    next == "```sh" || next == "```bash",
                    "{page}:{}: a snippet marker not followed by a shell block",
                    i + 1
                );
                assert_ne!(mode_of(line), Mode::Unmarked, "{page}:{}: {line}", i + 1);
            }
        }
    }
}

/// The blocks marked to run, run as written (against a sandbox where marked) and exit 0.
#[test]
fn the_documented_commands_run_as_written() {
    let runnable: Vec<Snippet> = all_snippets()
        .into_iter()
        .filter(|s| matches!(s.mode, Mode::Run | Mode::Sandbox(_)))
        .collect();
    assert!(runnable.len() >= 6, "{runnable:?}");
    let mut failures = Vec::new();
    for snippet in &runnable {
        let out = run_snippet(snippet);
        if code(&out) != 0 {
            failures.push(format!(
                "{}:{} exited {}:\n{}\n--- stdout\n{}--- stderr\n{}",
                snippet.page,
                snippet.line,
                code(&out),
                snippet.code,
                stdout(&out),
                stderr(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// Every relative link between the pages names a file that exists, and a heading of it.
#[test]
fn every_link_between_the_pages_resolves() {
    let mut broken = Vec::new();
    for (page, text) in pages() {
        let base = root().join(&page);
        let dir = base.parent().unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or("");
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (file, frag) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                base.clone()
            } else {
                dir.join(file)
            };
            if !path.exists() {
                broken.push(format!("{page}: {target} (no such file)"));
            } else if !frag.is_empty() {
                let body = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&body).iter().any(|a| a == frag) {
                    broken.push(format!("{page}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}

/// The sections of a roff page as (title, body) pairs.
fn man_sections(roff: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in roff.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            sections.push((title.trim_matches('"').to_owned(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections
}

/// The man pages carry EXIT STATUS, ENVIRONMENT, FILES and EXAMPLES, every command's
/// page too, and their exit codes are docs/formats.md's table word for word; `man --help`
/// keeps its two sentences apart.
#[test]
fn the_man_pages_say_exit_status_environment_files_and_examples() {
    let out = run(Command::new(BIN).arg("man"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let sections = man_sections(&stdout(&out));
    let titles: Vec<&str> = sections.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in ["EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"] {
        assert!(titles.contains(&wanted), "{wanted} missing: {titles:?}");
    }
    let (_, exits) = sections.iter().find(|(t, _)| t == "EXIT STATUS").unwrap();
    let lines: Vec<&str> = exits.lines().filter(|l| *l != ".TP").collect();
    let from_man: Vec<(String, String)> = lines
        .chunks(2)
        .map(|pair| {
            let code = pair[0].trim_start_matches("\\fB").trim_end_matches("\\fR");
            (code.to_owned(), pair[1].replace("\\-", "-"))
        })
        .collect();
    let (_, formats) = page_holding("## Exit codes");
    let table = formats.split("## Exit codes").nth(1).unwrap();
    let from_docs: Vec<(String, String)> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| code"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[2].replace('`', ""))
        })
        .collect();
    assert_eq!(
        from_man, from_docs,
        "the man page's exit codes against the guide's"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(BIN).args(["man", "--out-dir"]).arg(dir.path()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = std::fs::read_to_string(dir.path().join("sipgw-bulk-plan.1")).unwrap();
    assert!(plan.contains(".SH \"EXIT STATUS\""), "{plan}");

    let help = run(Command::new(BIN).args(["man", "--help"]));
    assert!(
        stdout(&help).contains("man ./sipgw-bulk.1\n\nEvery page:"),
        "{}",
        stdout(&help)
    );
}

/// The man page's examples, run in their order as written against a sandbox seeded from
/// `gateways.csv`.
#[test]
fn the_man_page_s_examples_run_as_written() {
    let out = run(Command::new(BIN).arg("man"));
    let sections = man_sections(&stdout(&out));
    let (_, examples) = sections.iter().find(|(t, _)| t == "EXAMPLES").unwrap();
    let mut commands = String::new();
    let mut inside = false;
    for line in examples.lines() {
        match line {
            ".nf" => inside = true,
            ".fi" => inside = false,
            _ if inside => {
                commands.push_str(&line.replace("\\-", "-").replace("\\e", "\\"));
                commands.push('\n');
            }
            _ => {}
        }
    }
    assert!(commands.lines().count() >= 5, "{examples}");
    // The sandbox the last example starts in the background stops when the script ends.
    let snippet = Snippet {
        page: "sipgw-bulk man".to_owned(),
        line: 0,
        mode: Mode::Sandbox(None),
        code: commands,
    };
    let out = run_snippet(&snippet);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}{}",
        snippet.code,
        stdout(&out),
        stderr(&out)
    );
}
