//! Writing manifests (for `export` and `rollback`): every row carries all five fields, in a
//! form `apply` reads back unchanged. Rows are written as they come, so memory stays flat.

use std::io::{self, Write};

use super::Format;
use crate::model::GatewayFields;

/// Writes manifest rows to any `Write`.
pub struct ManifestWriter<W: Write> {
    format: Format,
    csv: Option<csv::Writer<W>>,
    yaml: Option<W>,
}

impl<W: Write> ManifestWriter<W> {
    /// Starts a manifest: the CSV header, or nothing for YAML (a plain list of rows).
    pub fn new(out: W, format: Format) -> io::Result<ManifestWriter<W>> {
        Ok(match format {
            Format::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(out);
                csv.write_record(["id", "name", "uri", "encryption", "ciphers", "codecs"])?;
                ManifestWriter {
                    format,
                    csv: Some(csv),
                    yaml: None,
                }
            }
            Format::Yaml => ManifestWriter {
                format,
                csv: None,
                yaml: Some(out),
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

    /// One row. An empty field (a gateway read without one) is written empty: "leave it".
    pub fn write(&mut self, id: &str, f: &GatewayFields) -> io::Result<()> {
        let encryption = f.encryption.as_ref().map_or("", |e| e.as_str());
        if let Some(csv) = self.csv.as_mut() {
            // No cell may start a spreadsheet formula; `apply` reads each one back exactly.
            use crate::inert::csv_cell;
            let ciphers = join(f.ciphers.iter().map(|c| c.as_str()));
            let codecs = join(f.codecs.iter().map(|c| c.as_str()));
            let cells = [id, &f.name, &f.uri, encryption, &ciphers, &codecs].map(csv_cell);
            csv.write_record(cells.iter().map(|c| c.as_bytes()))?;
        }
        if let Some(out) = self.yaml.as_mut() {
            // JSON strings are valid YAML scalars and quote everything that needs it.
            let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
            writeln!(out, "- id: {}", q(id))?;
            if !f.name.is_empty() {
                writeln!(out, "  name: {}", q(&f.name))?;
            }
            if !f.uri.is_empty() {
                writeln!(out, "  uri: {}", q(&f.uri))?;
            }
            if !encryption.is_empty() {
                writeln!(out, "  encryption: {}", q(encryption))?;
            }
            if !f.ciphers.is_empty() {
                let items: Vec<String> = f.ciphers.iter().map(|c| q(c.as_str())).collect();
                writeln!(out, "  ciphers: [{}]", items.join(", "))?;
            }
            if !f.codecs.is_empty() {
                let items: Vec<String> = f.codecs.iter().map(|c| q(c.as_str())).collect();
                writeln!(out, "  codecs: [{}]", items.join(", "))?;
            }
        }
        Ok(())
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> io::Result<W> {
        if let Some(csv) = self.csv {
            return csv.into_inner().map_err(|e| e.into_error());
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

    /// A manifest written and read back asks for exactly what was written.
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
