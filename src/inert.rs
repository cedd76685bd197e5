//! Output that cannot act: values from the server or a manifest are data, never commands.
//!
//! - [`text`]: for a terminal or a log. Control characters (ESC, BEL, NUL, CR, ...) are
//!   escaped the way Rust's `escape_debug` writes them (`\u{1b}`), so a server's error body
//!   cannot clear the screen or retitle the terminal; long values are cut with a marker.
//! - [`csv_cell`] / [`csv_cell_back`]: for CSV files a person may open in a spreadsheet
//!   (the report and `export`). OWASP's rule: a cell that begins with `=`, `+`, `-`, `@`,
//!   tab or CR would run as a formula, so it is written with a leading `'`. A cell that
//!   already begins with `'` gets one more, so reading back (strip one `'` when a trigger
//!   or another `'` follows it) gives exactly the value written.

use std::borrow::Cow;

/// The characters that make a spreadsheet read a cell as a formula, and the escape itself.
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// `value` safe to print: control characters escaped, at most `max_chars` characters of
/// output (escapes count at their printed length: a run of control characters must not
/// grow past the cap), the rest replaced by a marker saying how much was cut.
pub fn text(value: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max_chars + 32));
    push_text(&mut out, value, max_chars);
    out
}

/// [`text`] appended to `out` (no string of its own: for text built piece by piece).
pub fn push_text(out: &mut String, value: &str, max_chars: usize) {
    // Nearly every value is short printable ASCII: nothing to escape, nothing to cut.
    if value.len() <= max_chars && value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        out.push_str(value);
        return;
    }
    let mut shown = 0;
    for (i, c) in value.char_indices() {
        let escaped = c.is_control() || is_bidi_control(c);
        let width = if escaped { c.escape_debug().count() } else { 1 };
        if shown + width > max_chars {
            out.push_str(&format!("…(+{} bytes)", value.len() - i));
            return;
        }
        if escaped {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        shown += width;
    }
}

/// Right-to-left overrides and isolates reorder what a terminal shows (a "Trojan source"
/// trick); they are not `is_control`, so they are named here.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A CSV cell that a spreadsheet shows as text: see the module docs.
pub fn csv_cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// The value a [`csv_cell`] was made from.
pub fn csv_cell_back(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(
            text("\u{1b}[2J\u{1b}]0;pwned\u{7}", 100),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(text("a\0b\r\n", 100), "a\\0b\\r\\n");
        assert_eq!(text("x\u{202E}y", 100), "x\\u{202e}y");
        assert_eq!(text("plain café", 100), "plain café");
        // Quotes and backslashes are printable: left as they are.
        assert_eq!(text("a\"b'c\\d", 100), "a\"b'c\\d");
        assert_eq!(text("abcdef", 3), "abc…(+3 bytes)");
        assert_eq!(text("abc", 3), "abc");
        assert_eq!(text("ééé", 1), "é…(+4 bytes)");
        // Escapes count at their printed length.
        assert_eq!(text("\u{b}\u{b}", 6), "\\u{b}…(+1 bytes)");
        assert_eq!(text("\u{b}\u{b}", 12), "\\u{b}\\u{b}");
        let many = "\u{b}".repeat(1000);
        assert!(text(&many, 500).chars().count() <= 500 + 20);
    }

    #[test]
    fn formula_cells_are_neutralised_and_read_back_exactly() {
        for v in [
            "=HYPERLINK(\"x\")",
            "=cmd|' /C calc'!A0",
            "+sip:x",
            "-1",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "'",
            "'=",
            "''x",
            "'plain",
        ] {
            let cell = csv_cell(v);
            assert!(cell.starts_with('\''), "{v:?} -> {cell:?}");
            assert_eq!(csv_cell_back(&cell), v);
        }
        for v in [
            "",
            "plain",
            "sip:a.example.com",
            "{\"a\":1}",
            "x=y",
            "0823a606",
        ] {
            assert_eq!(csv_cell(v), v);
            assert_eq!(csv_cell_back(v), v);
        }
        // A hand-written cell that starts with `'` and no formula keeps its quote.
        assert_eq!(csv_cell_back("'plain"), "'plain");
        assert_eq!(csv_cell_back("'"), "'");
    }

    /// Every string survives the round trip, and no written cell starts a formula.
    #[test]
    fn round_trip_property() {
        let alphabet = ['=', '+', '-', '@', '\t', '\r', '\'', 'a', ' ', '"'];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..6);
            let v: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let cell = csv_cell(&v);
            assert_eq!(csv_cell_back(&cell), v, "{v:?}");
            let first = cell.chars().next();
            assert!(
                first.is_none_or(|c| c == '\'' || !FORMULA_STARTS.contains(&c)),
                "{v:?} -> {cell:?}"
            );
        }
    }
}
