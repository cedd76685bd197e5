//! The man pages: what clap_mangen makes of the CLI's definitions, with the sections clap
//! has no place for (EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES). The exit codes are the
//! table in docs/formats.md, word for word (a test compares them).

use std::io::Write;

use crate::settings::named;

/// Each exit code and its meaning, as docs/formats.md's table gives them.
const EXIT_STATUS: [(u8, &str); 8] = [
    (
        0,
        "every row ended `updated`, `unchanged` (or `would_update` in plan)",
    ),
    (
        1,
        "finished, but some rows are `invalid`, `not_found`, `failed`, `mismatch` or `conflict`; in a run of several projects, also one project's credentials refused (its rows `skipped`, the run resumable)",
    ),
    (
        2,
        "`--detailed-exitcode` only, no errors, and: `plan`, changes are pending; `apply`, changes were made",
    ),
    (
        3,
        "aborted: credentials refused, space unreachable past the outage budget (or TLS failure), report/journal not writable (disk full), `--max-errors` reached, `--max-changes` exceeded, the prompt declined",
    ),
    (
        4,
        "interrupted (SIGINT/SIGTERM): no PATCH starts after the signal; requests already sent finish; rows waiting for a slot are `skipped`; report complete, resumable",
    ),
    (
        5,
        "another run holds the lock on this report, or is applying this manifest to this space",
    ),
    (
        64,
        "usage or configuration error (including `apply` without `--yes` off a terminal)",
    ),
    (
        65,
        "the manifest cannot be read as a whole (or changed while the run read it)",
    ),
];

/// The environment variables the tool reads (the settings' from their declarations),
/// besides those its options name.
const ENVIRONMENT: [(&str, &str); 8] = [
    (
        named::space.env_var(),
        "The space: `acme`, `acme.signalwire.com` or its https URL (as --space).",
    ),
    (
        named::base_url.env_var(),
        "The API's base URL (as --base-url): https, or a loopback host such as the sandbox.",
    ),
    (
        named::project_id.env_var(),
        "The project id: the HTTP Basic user (or project_id in the config file).",
    ),
    (
        named::api_token_file.env_var(),
        "The API token: the HTTP Basic password (or api_token_file in the config file); never a flag, never printed.",
    ),
    (
        "SIPGW_BULK_STATE_DIR",
        "Where the run locks live, instead of ~/.local/state/sipgw-bulk.",
    ),
    ("RUST_LOG", "The log filter, over -v and -q."),
    ("NO_COLOR", "No colour in the plan, unless --color always."),
    (
        "TMPDIR",
        "Where a manifest read from stdin is spooled, and the listed fields of --read-mode list are kept (unlinked).",
    ),
];

/// The files a run reads and writes, besides those named on its command line.
const FILES: [(&str, &str); 7] = [
    (
        "MANIFEST-STEM.report.csv, MANIFEST-STEM.plan.csv",
        "The default report of apply and of plan, in the current directory: one line a row, the run's record and undo file.",
    ),
    (
        "REPORT.journal",
        "The write-ahead journal: each gateway's before-values, written before its PATCH leaves.",
    ),
    (
        "REPORT.run.json",
        "The run file: the manifest's fingerprint, the space, project, shard and selection a --resume must match, and whether the run finished.",
    ),
    (
        "REPORT.lock",
        "Held while a run writes the report; another run on it exits 5.",
    ),
    (
        "REPORT.plan",
        "The plan an interactive apply showed, applied with apply --plan.",
    ),
    (
        "~/.local/state/sipgw-bulk",
        "The run locks: one run per set of gateways per machine (SIPGW_BULK_STATE_DIR names another directory).",
    ),
    (
        "config.example.yaml",
        "Every key of the --config file, documented.",
    ),
];

/// Worked examples: what each does, then the command. A test runs them in this order
/// against a sandbox seeded from `gateways.csv`.
const EXAMPLES: [(&str, &str); 6] = [
    (
        "Check every row offline:",
        "sipgw-bulk validate gateways.csv",
    ),
    (
        "Save the plan, then apply exactly it:",
        "sipgw-bulk plan gateways.csv -o tonight.plan && sipgw-bulk apply --plan tonight.plan",
    ),
    (
        "Apply in a script, at 100 writes a second:",
        "sipgw-bulk apply gateways.csv --yes --rate 100 --report run1.csv",
    ),
    (
        "Undo that run:",
        "sipgw-bulk rollback run1.csv -o undo.csv && sipgw-bulk apply undo.csv --yes",
    ),
    (
        "A nightly run that continues a cut-off report:",
        "sipgw-bulk apply gateways.csv --yes --resume --report nightly-$(date +%F).csv",
    ),
    (
        "Rehearse against the sandbox:",
        "sipgw-bulk sandbox --seed-from gateways.csv --port 0 > sandbox.env &",
    ),
];

/// Text as roff reads it: backslashes and hyphens escaped, no line taken for a request.
fn escape(text: &str) -> String {
    let text = text
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('`', "");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

/// A section of tagged paragraphs: each tag in bold, its text indented under it.
fn section(title: &str, items: &[(String, &str)]) -> String {
    let mut out = format!(".SH \"{title}\"\n");
    for (tag, text) in items {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(tag), escape(text)));
    }
    out
}

/// The sections clap has no place for, in the order man-pages(7) gives them.
fn extra_sections() -> String {
    let exits: Vec<(String, &str)> = EXIT_STATUS
        .iter()
        .map(|(code, text)| (code.to_string(), *text))
        .collect();
    let named = |list: &[(&'static str, &'static str)]| -> Vec<(String, &'static str)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    let mut out = section("EXIT STATUS", &exits);
    out.push_str(&section("ENVIRONMENT", &named(&ENVIRONMENT)));
    out.push_str(&section("FILES", &named(&FILES)));
    out.push_str(".SH EXAMPLES\n");
    for (what, command) in EXAMPLES {
        out.push_str(&format!(
            ".PP\n{}\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n",
            escape(what),
            escape(command)
        ));
    }
    out.push_str(".SH \"SEE ALSO\"\nThe guide: README.md and docs/ in the source tree.\n");
    out
}

/// One page: clap_mangen's, with [`extra_sections`] before its VERSION section.
pub fn render(page: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let at = text.find(".SH VERSION").unwrap_or(text.len());
    out.write_all(text[..at].as_bytes())?;
    out.write_all(extra_sections().as_bytes())?;
    out.write_all(text[at..].as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_requests_and_escapes_cannot_come_from_the_text() {
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("a\\b --yes"), "a\\eb \\-\\-yes");
        assert_eq!(escape("`--resume`"), "\\-\\-resume");
    }
}
