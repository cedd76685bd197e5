//! Writing manifests (for `export` and `rollback`): every row carries every field, in a
//! form `apply` reads back unchanged. Rows are written as they come, so memory stays flat.

use std::borrow::Cow;
use std::io::{self, Write};

use super::Format;
use crate::model::{GatewayFields, Wire};

/// Writes manifest rows to any `Write`.
pub struct ManifestWriter<W: Write> {
    format: Format,
    csv: Option<CsvRows<W>>,
    yaml: Option<W>,
    /// Values escaped for a terminal ([`ManifestWriter::for_terminal`]).
    inert: bool,
    /// The CSV header waits for the first row or the end: a run that fails before either
    /// (refused credentials) leaves nothing on stdout that looks like an empty export.
    header_pending: bool,
    /// Rows carry a `project` column, last ([`ManifestWriter::with_projects`]).
    projects: bool,
}

/// CSV rows quoted where needed, or every cell of a row quoted when one of its values has
/// spaces around it (a reader drops those around an unquoted cell). Each row is formatted
/// into `line`, then copied to `out`.
struct CsvRows<W> {
    necessary: csv::Writer<Line>,
    always: csv::Writer<Line>,
    line: Line,
    out: W,
}

/// The row being formatted, shared by both CSV writers.
#[derive(Clone, Default)]
struct Line(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> CsvRows<W> {
    fn new(out: W) -> CsvRows<W> {
        let line = Line::default();
        let writer = |style| {
            csv::WriterBuilder::new()
                .has_headers(false)
                .quote_style(style)
                .from_writer(line.clone())
        };
        CsvRows {
            necessary: writer(csv::QuoteStyle::Necessary),
            always: writer(csv::QuoteStyle::Always),
            line,
            out,
        }
    }

    fn write<'a>(&mut self, cells: &[std::borrow::Cow<'a, str>]) -> io::Result<()> {
        let spaced = cells.iter().any(|c| c.trim().len() != c.len());
        let writer = if spaced {
            &mut self.always
        } else {
            &mut self.necessary
        };
        writer.write_record(cells.iter().map(|c| c.as_bytes()))?;
        writer.flush()?;
        let bytes = std::mem::take(&mut *self.line.0.borrow_mut());
        self.out.write_all(&bytes)
    }
}

impl<W: Write> ManifestWriter<W> {
    /// Starts a manifest: CSV (its header written with the first row, or at the end when
    /// there is none) or YAML (a plain list of rows).
    pub fn new(out: W, format: Format) -> io::Result<ManifestWriter<W>> {
        Self::with_projects(out, format, false)
    }

    /// [`ManifestWriter::new`], with a `project` column last when `projects` (rows of
    /// several projects: [`ManifestWriter::write_in`]).
    pub fn with_projects(out: W, format: Format, projects: bool) -> io::Result<ManifestWriter<W>> {
        Ok(match format {
            Format::Csv => ManifestWriter {
                format,
                csv: Some(CsvRows::new(out)),
                yaml: None,
                inert: false,
                header_pending: true,
                projects,
            },
            Format::Yaml => ManifestWriter {
                format,
                csv: None,
                yaml: Some(out),
                inert: false,
                header_pending: false,
                projects,
            },
            Format::Plan => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a manifest is written as CSV or YAML, not as a plan",
                ));
            }
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// For a terminal: the server's values are escaped ([`crate::inert::text`]), so a name
    /// cannot drive the terminal it is shown on. Not for files: those keep values exactly.
    pub fn for_terminal(mut self, on: bool) -> Self {
        self.inert = on;
        self
    }

    /// One row. An empty field (a gateway read without one) is written empty: "leave it".
    pub fn write(&mut self, id: &str, f: &GatewayFields) -> io::Result<()> {
        self.write_in(id, f, None)
    }

    /// One row of `project` (its id; written only by a writer [`with_projects`]).
    ///
    /// [`with_projects`]: ManifestWriter::with_projects
    pub fn write_in(
        &mut self,
        id: &str,
        f: &GatewayFields,
        project: Option<&str>,
    ) -> io::Result<()> {
        if self.inert {
            let shown = |v: &str| crate::inert::text(v, 1024);
            let project = project.map(&shown);
            return self.write_row(&shown(id), &f.map_wire(&shown), project.as_deref());
        }
        self.write_row(id, f, project)
    }

    /// The CSV header, once (with a `project` column, last, in a writer of projects).
    fn header(&mut self) -> io::Result<()> {
        if let Some(csv) = self.csv.as_mut().filter(|_| self.header_pending) {
            let project = self.projects.then_some("project");
            let header: Vec<Cow<str>> = super::KNOWN_COLUMNS
                .iter()
                .copied()
                .chain(project)
                .map(Cow::Borrowed)
                .collect();
            csv.write(&header)?;
            self.header_pending = false;
        }
        Ok(())
    }

    fn write_row(&mut self, id: &str, f: &GatewayFields, project: Option<&str>) -> io::Result<()> {
        self.header()?;
        let project = if self.projects {
            Some(project.unwrap_or(""))
        } else {
            None
        };
        if let Some(csv) = self.csv.as_mut() {
            // No cell may start a spreadsheet formula; `apply` reads each one back exactly.
            let mut cells = vec![crate::inert::csv_cell(id)];
            for (_, value) in f.wires() {
                let cell = match value {
                    Wire::Text(s) => Cow::Borrowed(s),
                    Wire::Choice(c) => Cow::Borrowed(c.unwrap_or("")),
                    Wire::List(items) => Cow::Owned(join(items.into_iter())),
                };
                cells.push(Cow::Owned(crate::inert::csv_cell(&cell).into_owned()));
            }
            if let Some(p) = project {
                cells.push(crate::inert::csv_cell(p));
            }
            csv.write(&cells)?;
        }
        if let Some(out) = self.yaml.as_mut() {
            // JSON strings are valid YAML scalars and quote everything that needs it.
            let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
            writeln!(out, "- id: {}", q(id))?;
            for (name, value) in f.wires() {
                match value {
                    Wire::Text(s) | Wire::Choice(Some(s)) if !s.is_empty() => {
                        writeln!(out, "  {name}: {}", q(s))?;
                    }
                    Wire::List(items) if !items.is_empty() => {
                        let items: Vec<String> = items.into_iter().map(q).collect();
                        writeln!(out, "  {name}: [{}]", items.join(", "))?;
                    }
                    _ => {}
                }
            }
            if let Some(p) = project.filter(|p| !p.is_empty()) {
                writeln!(out, "  project: {}", q(p))?;
            }
        }
        Ok(())
    }

    /// Flushes and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header()?;
        if let Some(mut csv) = self.csv {
            csv.out.flush()?;
            return Ok(csv.out);
        }
        match self.yaml {
            Some(mut out) => {
                out.flush()?;
                Ok(out)
            }
            None => Err(io::Error::other("the manifest writer has no output")),
        }
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::model::{Cipher, Codec, Encryption};
    use std::ops::ControlFlow;

    /// The CSV header comes with the first row, or at the end of a manifest of none: a
    /// writer dropped before either wrote nothing.
    #[test]
    fn the_csv_header_waits_for_the_first_row_or_the_end() {
        let header = format!("{}\n", crate::manifest::KNOWN_COLUMNS.join(","));
        let empty = ManifestWriter::new(Vec::new(), Format::Csv).unwrap();
        assert_eq!(String::from_utf8(empty.finish().unwrap()).unwrap(), header);
        let mut one = ManifestWriter::new(Vec::new(), Format::Csv).unwrap();
        assert!(
            one.csv.as_ref().unwrap().out.is_empty(),
            "nothing before a row"
        );
        one.write("g1", &GatewayFields::default()).unwrap();
        one.write("g2", &GatewayFields::default()).unwrap();
        let text = String::from_utf8(one.finish().unwrap()).unwrap();
        assert!(text.starts_with(&header), "{text}");
        assert_eq!(text.matches(&header).count(), 1, "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        let yaml = ManifestWriter::new(Vec::new(), Format::Yaml).unwrap();
        assert_eq!(yaml.finish().unwrap(), b"");
    }

    /// A manifest written and read back asks for exactly what was written.
    #[test]
    fn for_a_terminal_every_server_value_is_inert_and_for_a_file_exact() {
        let fields = GatewayFields {
            name: "\u{1b}]0;owned\u{7}".into(),
            uri: "sip:pbx\u{1b}[2J.example.com".into(),
            encryption: Some(Encryption::Other("x\u{1b}".into())),
            ciphers: vec![Cipher::Other("\u{9b}c".into())],
            codecs: vec![Codec::Other("\u{202e}d".into())],
        };
        for format in [Format::Csv, Format::Yaml] {
            let mut w = ManifestWriter::new(Vec::new(), format)
                .unwrap()
                .for_terminal(true);
            w.write("id\u{1b}", &fields).unwrap();
            let text = String::from_utf8(w.finish().unwrap()).unwrap();
            for raw in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
                assert!(!text.contains(raw), "{format:?}: {text:?}");
            }
            assert!(text.contains("\\u{1b}"), "{text}");
            let mut w = ManifestWriter::new(Vec::new(), format).unwrap();
            w.write("id", &fields).unwrap();
            let exact = String::from_utf8(w.finish().unwrap()).unwrap();
            assert!(
                exact.contains('\u{1b}') || exact.contains("\\u001b"),
                "{exact:?}"
            );
        }
    }

    #[test]
    fn a_value_with_spaces_around_it_comes_back_exactly() {
        for name in ["  lobby", "lobby ", " \"q\", x "] {
            let fields = GatewayFields {
                name: name.into(),
                uri: "sip:pbx.example.com".into(),
                encryption: None,
                ciphers: vec![],
                codecs: vec![Codec::Pcmu],
            };
            let id = "0823a606-0aff-4c90-9eba-f88ba118fe05";
            for format in [Format::Csv, Format::Yaml] {
                let mut w = ManifestWriter::new(Vec::new(), format).unwrap();
                w.write(id, &fields).unwrap();
                let other = "1823a606-0aff-4c90-9eba-f88ba118fe05";
                w.write(
                    other,
                    &GatewayFields {
                        name: "plain".into(),
                        ..fields.clone()
                    },
                )
                .unwrap();
                let bytes = w.finish().unwrap();
                if format == Format::Csv {
                    // Only the row that needs it is quoted: the rest stays as people write it.
                    let text = String::from_utf8(bytes.clone()).unwrap();
                    let plain = text.lines().find(|l| l.contains("plain")).unwrap();
                    assert!(!plain.contains('"'), "{plain}");
                    assert!(
                        text.lines().next().unwrap() == "id,name,uri,encryption,ciphers,codecs"
                    );
                }
                let mut names = Vec::new();
                Manifest::read_slice(format, &bytes, |r| {
                    names.push(r.map(|r| r.desired.name).map_err(|e| e.message));
                    ControlFlow::Continue(())
                })
                .unwrap();
                assert_eq!(names[0], Ok(Some(name.to_owned())), "{format:?}");
                assert_eq!(names[1], Ok(Some("plain".to_owned())), "{format:?}");
            }
        }
        // Unquoted cells are still trimmed: `a, b` is `a` and `b`.
        let text = "id , name\n0823a606-0aff-4c90-9eba-f88ba118fe05 ,  lobby  \n";
        let mut got = Vec::new();
        Manifest::read_slice(Format::Csv, text.as_bytes(), |r| {
            got.push(r.unwrap().desired.name);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(got, [Some("lobby".to_owned())]);
    }

    #[test]
    fn written_manifests_read_back_unchanged() {
        let fields = GatewayFields {
            name: "lobby: \"main\", #1".into(),
            uri: "sip:pbx.example.com;transport=tls".into(),
            encryption: Some(Encryption::Forbidden),
            ciphers: vec![Cipher::AeadAes256Gcm8],
            codecs: vec![Codec::Opus48000, Codec::Pcmu],
        };
        let id = "0823a606-0aff-4c90-9eba-f88ba118fe05";
        for (format, ext) in [(Format::Csv, "csv"), (Format::Yaml, "yaml")] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("m.{ext}"));
            let mut w = ManifestWriter::new(std::fs::File::create(&path).unwrap(), format).unwrap();
            w.write(id, &fields).unwrap();
            w.finish().unwrap();
            let mut rows = Vec::new();
            Manifest::open(&path, None)
                .unwrap()
                .read(|r| {
                    rows.push(r);
                    ControlFlow::Continue(())
                })
                .unwrap();
            let row = rows[0].as_ref().unwrap();
            assert_eq!(row.id.hyphenated().to_string(), id);
            assert_eq!(row.desired.name.as_deref(), Some(fields.name.as_str()));
            assert_eq!(row.desired.uri.as_deref(), Some(fields.uri.as_str()));
            assert_eq!(row.desired.encryption, fields.encryption);
            assert_eq!(row.desired.ciphers.as_ref(), Some(&fields.ciphers));
            assert_eq!(
                row.desired.codecs.as_ref(),
                Some(&fields.codecs),
                "{format:?}"
            );
        }
    }
}
