//! The plan as a person (or a machine) reads it: per changed row its id, line and name,
//! then each changed field as `old -> new`; errors with their reason; a closing line such as
//! `Plan: 12 to update, 312 unchanged, 1 invalid, 1 not found.`
//!
//! Rows finish out of order (workers run concurrently); the view puts them back in manifest
//! order with a small reorder buffer, so the same manifest always prints the same plan.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use serde_json::json;

use crate::diff::Field;
use crate::engine::Observer;
use crate::model::{GatewayFields, Wire};
use crate::report::RowRecord;
use crate::status::Status;

/// Text for people, or one JSON object per line for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

/// Prints the plan in manifest order as records arrive.
pub struct PlanView<W: Write + Send> {
    out: W,
    format: PlanFormat,
    colour: bool,
    show_unchanged: bool,
    next_seq: u64,
    /// Finished rows waiting for an earlier one: `None` for a row with nothing to print.
    waiting: BTreeMap<u64, Option<String>>,
    counts: BTreeMap<&'static str, u64>,
    /// List at most this many rows, then say how many more and where the rest is.
    cap: Option<(u64, String)>,
    listed: u64,
    omitted: u64,
}

impl<W: Write + Send> PlanView<W> {
    pub fn new(out: W, format: PlanFormat, colour: bool, show_unchanged: bool) -> Self {
        PlanView {
            out,
            format,
            colour,
            show_unchanged,
            next_seq: 0,
            waiting: BTreeMap::new(),
            counts: BTreeMap::new(),
            cap: None,
            listed: 0,
            omitted: 0,
        }
    }

    /// Lists at most `rows` rows; the closing lines then say how many more there are and
    /// that `rest_at` holds them all (the interactive apply's prompt).
    pub fn with_cap(mut self, rows: u64, rest_at: String) -> Self {
        self.cap = Some((rows, rest_at));
        self
    }

    /// `text` onto `out`, in colour when the view has it.
    fn paint(&self, out: &mut String, code: &str, text: &str) {
        self.paint_with(out, code, |out| out.push_str(text));
    }

    /// What `write` puts onto `out`, in colour when the view has it.
    fn paint_with(&self, out: &mut String, code: &str, write: impl FnOnce(&mut String)) {
        if self.colour {
            out.push_str("\x1b[");
            out.push_str(code);
            out.push('m');
            write(out);
            out.push_str("\x1b[0m");
        } else {
            write(out);
        }
    }

    fn render(&self, r: &RowRecord) -> Option<String> {
        let listed = match r.status {
            Status::Unchanged => self.show_unchanged,
            _ => true,
        };
        if !listed {
            return None;
        }
        match self.format {
            PlanFormat::Json => Some(self.render_json(r)),
            PlanFormat::Text => Some(self.render_text(r)),
        }
    }

    /// A row's lines, built in one buffer (a plan of many rows prints one of these a row).
    fn render_text(&self, r: &RowRecord) -> String {
        let (mark, code, what) = match r.status {
            Status::WouldUpdate | Status::Updated | Status::Mismatch => ("~", "33", "update"),
            Status::Unchanged => ("=", "2", "unchanged"),
            Status::Invalid => ("!", "31", "invalid"),
            Status::NotFound => ("?", "31", "not found"),
            Status::Failed => ("x", "31", "failed"),
            Status::Skipped => ("-", "2", "skipped"),
            Status::Conflict => ("!", "31", "conflict"),
        };
        let mut text = String::with_capacity(256);
        self.paint(&mut text, code, mark);
        text.push(' ');
        self.paint(&mut text, code, what);
        text.push(' ');
        text.push_str(if r.id.is_empty() { "(no id)" } else { &r.id });
        let _ = write!(text, "  (line {}", r.row);
        if let Some(b) = &r.before {
            text.push_str(" \"");
            crate::inert::push_text(&mut text, &b.name, 80);
            text.push('"');
        }
        text.push(')');
        match r.status {
            Status::WouldUpdate | Status::Updated | Status::Mismatch => {
                if let (Some(before), Some(after)) = (&r.before, &r.after) {
                    for field in r.changed_fields.iter() {
                        let _ = write!(text, "\n    {:<11} ", field.as_str());
                        self.paint_with(&mut text, "31", |t| show_into(t, before, field));
                        text.push_str(" -> ");
                        self.paint_with(&mut text, "32", |t| show_into(t, after, field));
                    }
                }
                if !r.error.is_empty() {
                    text.push_str("\n    ");
                    text.push_str(&r.error);
                }
            }
            Status::Unchanged | Status::NotFound => {}
            Status::Invalid | Status::Failed | Status::Skipped | Status::Conflict => {
                text.push_str("\n    ");
                text.push_str(&r.error);
            }
        }
        text
    }

    fn render_json(&self, r: &RowRecord) -> String {
        let mut changes = serde_json::Map::new();
        if let (Some(before), Some(after)) = (&r.before, &r.after) {
            for field in r.changed_fields.iter() {
                changes.insert(
                    field.as_str().into(),
                    json!({ "old": value(before, field), "new": value(after, field) }),
                );
            }
        }
        json!({
            "line": r.row,
            "id": r.id,
            // The row's label (the gateway's name as it was), not a change: a key of the
            // plan's format, which stays as it is whatever the fields become.
            "name": r.before.as_ref().map(|b| b.name.clone()),
            "status": r.status,
            "changes": changes,
            "error": (!r.error.is_empty()).then(|| r.error.clone()),
        })
        .to_string()
    }

    fn arrive(&mut self, seq: u64, text: Option<String>) {
        self.waiting.insert(seq, text);
        while let Some(text) = self.waiting.remove(&self.next_seq) {
            if let Some(text) = text {
                if self
                    .cap
                    .as_ref()
                    .is_some_and(|(rows, _)| self.listed >= *rows)
                {
                    self.omitted += 1;
                } else {
                    self.listed += 1;
                    // A closed stdout (`| head`) is not the job's failure.
                    let _ = writeln!(self.out, "{text}");
                }
            }
            self.next_seq += 1;
        }
    }

    /// The closing line; call after the job ends.
    pub fn finish(mut self) {
        // Anything still waiting (a gap left by an interrupted read) prints in order.
        for text in std::mem::take(&mut self.waiting).into_values().flatten() {
            let _ = writeln!(self.out, "{text}");
        }
        if let Some((_, rest_at)) = &self.cap
            && self.omitted > 0
        {
            let _ = writeln!(
                self.out,
                "... and {} more rows not shown here; the whole plan is in {rest_at}",
                crate::human::count(self.omitted)
            );
        }
        let n = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        let closing = match self.format {
            PlanFormat::Json => json!({ "plan": {
                "would_update": n("to update"), "unchanged": n("unchanged"), "invalid": n("invalid"),
                "not_found": n("not found"), "failed": n("failed"), "skipped": n("skipped"),
                "conflict": n("conflict"),
            }})
            .to_string(),
            PlanFormat::Text => {
                let mut parts = vec![
                    format!("{} to update", n("to update")),
                    format!("{} unchanged", n("unchanged")),
                ];
                for k in ["invalid", "not found", "failed", "skipped", "conflict"] {
                    if n(k) > 0 {
                        parts.push(format!("{} {k}", n(k)));
                    }
                }
                format!("\nPlan: {}.", parts.join(", "))
            }
        };
        let _ = writeln!(self.out, "{closing}");
        let _ = self.out.flush();
    }
}

impl<W: Write + Send> Observer for PlanView<W> {
    fn record(&mut self, r: &RowRecord) {
        let key = match r.status {
            Status::WouldUpdate | Status::Updated | Status::Mismatch => "to update",
            Status::Unchanged => "unchanged",
            Status::Invalid => "invalid",
            Status::NotFound => "not found",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Conflict => "conflict",
        };
        *self.counts.entry(key).or_default() += 1;
        let text = self.render(r);
        self.arrive(r.seq, text);
    }

    fn passed(&mut self, seq: u64) {
        self.arrive(seq, None);
    }
}

/// A field's value as shown: strings quoted, lists bracketed (so a reordering is visible).
#[cfg(test)]
fn show(f: &GatewayFields, field: Field) -> String {
    let mut out = String::new();
    show_into(&mut out, f, field);
    out
}

/// A field's value as shown, onto `out`; values the server made up (unknown to this tool)
/// are inert too.
fn show_into(out: &mut String, f: &GatewayFields, field: Field) {
    match field.wire(f) {
        Wire::Text(s) => {
            out.push('"');
            crate::inert::push_text(out, s, 200);
            out.push('"');
        }
        Wire::Choice(Some(c)) => crate::inert::push_text(out, c, 100),
        Wire::Choice(None) => out.push_str("(none)"),
        Wire::List(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                crate::inert::push_text(out, item, 100);
            }
            out.push(']');
        }
    }
}

fn value(f: &GatewayFields, field: Field) -> serde_json::Value {
    field.wire(f).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cipher, Codec, Encryption};

    #[test]
    fn values_the_server_made_up_are_shown_inert() {
        let f = GatewayFields {
            name: "a\u{1b}[2J".into(),
            uri: "sip:\u{7}x".into(),
            encryption: Some(Encryption::Other("e\u{1b}]0;t\u{7}".into())),
            ciphers: vec![Cipher::Other("c\u{9b}".into())],
            codecs: vec![Codec::Opus, Codec::Other("\u{202e}d".into())],
        };
        for field in [
            Field::Name,
            Field::Uri,
            Field::Encryption,
            Field::Ciphers,
            Field::Codecs,
        ] {
            let shown = show(&f, field);
            assert!(
                !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{shown:?}"
            );
        }
        assert_eq!(show(&f, Field::Codecs), "[OPUS, \\u{202e}d]");
        let none = GatewayFields {
            encryption: None,
            ..f
        };
        assert_eq!(show(&none, Field::Encryption), "(none)");
    }
}
