//! CSV manifests: a header naming the columns, one gateway per record, `;` inside list
//! cells. Read record by record into one reused buffer.
//!
//! Spaces around an unquoted cell are dropped (`a, b` is `a` and `b`); a quoted cell is
//! kept exactly as written, so a name with a leading space that `export` or `rollback`
//! wrote quoted comes back as it was. The csv crate trims quoted and unquoted cells alike,
//! so the raw bytes of each record are kept ([`Tap`]) to tell the two apart.

use std::cell::RefCell;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;

use super::check::{DuplicateCheck, READ_COLUMNS, RawRow, RowChecker};
use super::{CheckedRow, InvalidRow, ManifestError};
use crate::diff::Field;
use crate::model::Desired;

/// Where each known column sits in the header.
#[derive(Default)]
struct Columns {
    id: Option<usize>,
    /// By [`Field`], in its declared order.
    fields: [Option<usize>; crate::model::FIELDS],
    project: Option<usize>,
}

pub(super) fn read(
    path: &Path,
    input: impl Read,
    duplicates: DuplicateCheck,
    sink: &mut dyn FnMut(CheckedRow) -> ControlFlow<()>,
) -> Result<(), ManifestError> {
    let tap = Tap::new(input);
    let raw = Rc::clone(&tap.seen);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(::csv::Trim::Headers)
        .from_reader(tap);
    let columns = read_header(path, &mut reader)?;
    let mut checker = RowChecker::new(Desired::default()).with_duplicates(duplicates);
    let mut record = ::csv::StringRecord::new();
    loop {
        let line;
        let read = reader.read_record(&mut record);
        // Most rows have no spaces around any cell: the raw bytes (a copy) and which cells
        // were quoted matter only for one that has.
        if let Ok(true) = read
            && record.iter().any(|c| c.trim().len() != c.len())
        {
            let start = record.position().map_or(0, |p| p.byte());
            trim_unquoted(
                &mut record,
                &raw.borrow().record(start, reader.position().byte()),
            );
        }
        raw.borrow_mut().forget_before(reader.position().byte());
        let row = match read {
            Ok(false) => return Ok(()),
            Ok(true) => {
                line = record_line(&record, reader.position());
                if record.len() != reader.headers().map_or(0, |h| h.len()) {
                    Err(InvalidRow {
                        seq: 0,
                        line,
                        id: crate::inert::text(&cell(&record, columns.id).unwrap_or_default(), 100),
                        message: cell_count_message(
                            record.len(),
                            reader.headers().map_or(0, |h| h.len()),
                        ),
                    })
                } else {
                    checker.check(raw_row(line, &record, &columns))
                }
            }
            Err(err) => match err.kind() {
                ::csv::ErrorKind::Utf8 { pos, .. } => Err(InvalidRow {
                    seq: 0,
                    line: pos.as_ref().map_or(0, |p| p.line()),
                    id: String::new(),
                    message: "the row is not valid UTF-8".into(),
                }),
                _ => {
                    return Err(ManifestError::Csv {
                        path: path.to_owned(),
                        message: err.to_string(),
                    });
                }
            },
        };
        if sink(row).is_break() {
            return Ok(());
        }
    }
}

/// What the csv reader has read of the input and not yet passed: the bytes of the record
/// it just returned, and of the ones it has buffered past it.
struct Seen {
    /// Input offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
}

impl Seen {
    /// The raw bytes from input offset `start` to `end` (empty if not held).
    fn record(&self, start: u64, end: u64) -> Vec<u8> {
        let from = start.saturating_sub(self.base) as usize;
        let to = (end.saturating_sub(self.base) as usize).min(self.bytes.len());
        self.bytes
            .get(from..to)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Drops the bytes before input offset `at`: memory stays at the reader's buffer.
    fn forget_before(&mut self, at: u64) {
        let n = (at.saturating_sub(self.base) as usize).min(self.bytes.len());
        self.bytes.drain(..n);
        self.base += n as u64;
    }
}

/// Passes the input through, keeping a copy of what went by (see [`Seen`]).
struct Tap<R> {
    inner: R,
    seen: Rc<RefCell<Seen>>,
}

impl<R> Tap<R> {
    fn new(inner: R) -> Tap<R> {
        Tap {
            inner,
            seen: Rc::new(RefCell::new(Seen {
                base: 0,
                bytes: Vec::new(),
            })),
        }
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.borrow_mut().bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Which fields of one raw CSV record begin with a quote (the csv crate's rule: a quote
/// opens a quoted field only as its first byte; `""` inside one is a quote).
fn quoted_fields(raw: &[u8]) -> Vec<bool> {
    let mut quoted = Vec::new();
    let mut i = raw
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    loop {
        let opens = raw.get(i) == Some(&b'"');
        quoted.push(opens);
        if opens {
            i += 1;
            loop {
                match raw.get(i) {
                    None => return quoted,
                    Some(b'"') if raw.get(i + 1) == Some(&b'"') => i += 2,
                    // The closing quote: the scan below steps over it.
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
        }
        loop {
            match raw.get(i) {
                None | Some(b'\r' | b'\n') => return quoted,
                Some(b',') => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
    }
}

/// Trims the spaces around every cell that was not quoted.
fn trim_unquoted(record: &mut ::csv::StringRecord, raw: &[u8]) {
    let quoted = quoted_fields(raw);
    if record
        .iter()
        .enumerate()
        .all(|(i, c)| quoted.get(i).copied().unwrap_or(false) || c.trim().len() == c.len())
    {
        return;
    }
    let cells: Vec<String> = record
        .iter()
        .enumerate()
        .map(|(i, c)| match quoted.get(i) {
            Some(true) => c.to_owned(),
            _ => c.trim().to_owned(),
        })
        .collect();
    let position = record.position().cloned();
    *record = ::csv::StringRecord::from(cells);
    record.set_position(position);
}

/// A row whose cells do not match the header. More cells than the header: most often a
/// list written with commas (`OPUS,PCMU`) in a cell that is not quoted.
fn cell_count_message(cells: usize, header: usize) -> String {
    let hint = if cells > header {
        ": a list cell separates its values with `;` (OPUS;PCMU), or quote a cell that \
         holds a comma (\"OPUS,PCMU\")"
    } else {
        ""
    };
    format!("the row has {cells} cells but the header has {header}{hint}")
}

/// A header with no `id` column whose first line holds `id` with another delimiter: the
/// file was written with `;` (a spreadsheet's export in many locales) or tabs.
fn delimiter_hint(first: &str) -> String {
    let names = |sep: char| {
        first
            .split(sep)
            .any(|cell| cell.trim().trim_matches('"').eq_ignore_ascii_case("id"))
    };
    let looks = if first.contains(';') && names(';') {
        "`;`"
    } else if first.contains('\t') && names('\t') {
        "tab"
    } else {
        return String::new();
    };
    format!(
        "; the file looks {looks}-delimited: the delimiter is `,` (a list cell separates its \
         values with `;`, like OPUS;PCMU)"
    )
}

fn read_header<R: Read>(
    path: &Path,
    reader: &mut ::csv::Reader<R>,
) -> Result<Columns, ManifestError> {
    let header = reader.headers().map_err(|err| ManifestError::Csv {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let mut columns = Columns::default();
    let mut unknown = Vec::new();
    for (i, name) in header.iter().enumerate() {
        // `ID`, `Codecs`: a spreadsheet's capitals are not a different column.
        let lower = name.to_ascii_lowercase();
        let slot = match (lower.as_str(), Field::from_name(&lower)) {
            ("id", _) => &mut columns.id,
            ("project", None) => &mut columns.project,
            (_, Some(field)) => &mut columns.fields[field as usize],
            (other, None) => {
                let shown = crate::inert::text(other, 40);
                unknown.push(match crate::model::suggest(other, READ_COLUMNS) {
                    Some(s) => format!("`{shown}` (did you mean `{s}`?)"),
                    None => format!("`{shown}`"),
                });
                continue;
            }
        };
        if slot.replace(i).is_some() {
            return Err(ManifestError::RepeatedColumn {
                path: path.to_owned(),
                column: name.to_owned(),
            });
        }
    }
    if columns.id.is_none() {
        let first: String = header.iter().take(20).collect::<Vec<_>>().join(",");
        return Err(ManifestError::NoIdColumn {
            path: path.to_owned(),
            header: crate::inert::text(&first, 80),
            hint: delimiter_hint(&first),
        });
    }
    if !unknown.is_empty() {
        // A header of a million columns must not make a message of megabytes.
        const SHOWN: usize = 10;
        let more = unknown.len().saturating_sub(SHOWN);
        unknown.truncate(SHOWN);
        if more > 0 {
            unknown.push(format!("and {more} more"));
        }
        return Err(ManifestError::UnknownColumns {
            path: path.to_owned(),
            unknown: unknown.join(", "),
            known: READ_COLUMNS.join(", "),
        });
    }
    Ok(columns)
}

/// The line a record starts on. The csv crate's own start position points before any
/// blank lines it skipped, so count back from where the next record starts instead.
fn record_line(record: &::csv::StringRecord, next: &::csv::Position) -> u64 {
    let start = record.position().map_or(1, |p| p.line());
    let embedded: u64 = record.iter().map(|c| c.matches('\n').count() as u64).sum();
    let spanned = next.line().saturating_sub(start);
    // `spanned` = blank lines skipped + embedded newlines + 1 for the terminator (absent
    // only on a last line with no newline, where nothing was skipped either).
    let skipped = spanned.saturating_sub(embedded).saturating_sub(1);
    start + skipped
}

/// A cell's text, or `None` for an empty cell or an absent column. A cell written with a
/// leading `'` so that a spreadsheet shows it as text (see [`crate::inert::csv_cell`])
/// reads back as the value it was made from.
fn cell(record: &::csv::StringRecord, column: Option<usize>) -> Option<String> {
    column
        .and_then(|i| record.get(i))
        .filter(|s| !s.is_empty())
        .map(|s| crate::inert::csv_cell_back(s).to_owned())
}

fn raw_row(line: u64, record: &::csv::StringRecord, columns: &Columns) -> RawRow {
    let mut raw = RawRow::from_texts(line, cell(record, columns.id), |field| {
        cell(record, columns.fields[field as usize])
    });
    raw.project = cell(record, columns.project).map(|p| p.trim().to_owned());
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_keeps_only_what_the_reader_has_not_passed() {
        let mut seen = Seen {
            base: 0,
            bytes: b"id,name\na,b\nc,\"d\"\n".to_vec(),
        };
        assert_eq!(seen.record(8, 12), b"a,b\n");
        seen.forget_before(12);
        assert_eq!((seen.base, seen.bytes.len()), (12, 6), "memory stays flat");
        assert_eq!(seen.record(12, 18), b"c,\"d\"\n");
        assert_eq!(seen.record(0, 12), b"", "forgotten");
        seen.forget_before(100);
        assert_eq!((seen.base, seen.bytes.len()), (18, 0));
        // Through the reader, record after record: quoted cells kept, unquoted trimmed.
        let mut text = String::from("id,name\n");
        for i in 0..5000 {
            text.push_str(&format!("0823a606-0aff-4c90-9eba-{i:012},\" n{i} \"\n"));
        }
        text.push_str("1823a606-0aff-4c90-9eba-000000000000,  plain  \n");
        // Both in one record: the unquoted cell trimmed, the quoted one kept.
        text.push_str("2823a606-0aff-4c90-9eba-000000000000 ,\"  both \"\n");
        let mut names = Vec::new();
        read(
            Path::new("m.csv"),
            text.as_bytes(),
            DuplicateCheck::Off,
            &mut |row| {
                names.push(row.map(|r| r.desired.name).ok().flatten());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(names.len(), 5002);
        assert_eq!(
            names[4999].as_deref(),
            Some(" n4999 "),
            "quoted: kept as written"
        );
        assert_eq!(names[5000].as_deref(), Some("plain"));
        assert_eq!(names[5001].as_deref(), Some("  both "), "and its id read");
    }

    #[test]
    fn quoted_fields_are_told_from_unquoted_ones() {
        assert_eq!(quoted_fields(b"a,\"b\",c\n"), [false, true, false]);
        // A doubled quote inside a quoted field does not end it, even before a comma.
        assert_eq!(quoted_fields(b"\"a\"\",b\",c"), [true, false]);
        assert_eq!(quoted_fields(b"x,\"\"\"\",y"), [false, true, false]);
        assert_eq!(quoted_fields(b"\n\r\n\"a\"\"x\",  \"b\""), [true, false]);
        assert_eq!(quoted_fields(b"\"a,b\nc\",d\r\n"), [true, false]);
        assert_eq!(quoted_fields(b",,"), [false, false, false]);
        // A comma just before the closing quote is the field's, not a delimiter.
        assert_eq!(quoted_fields(b"\"a,\",b"), [true, false]);
        assert_eq!(quoted_fields(b"\"open"), [true]);
        assert_eq!(quoted_fields(b""), [false]);
    }
}
