//! The write-ahead journal beside the report (`REPORT.journal`): each row's `before`,
//! on disk before its PATCH leaves, read back by `--resume` for rows whose report line a
//! crash lost, and cut down at the end of a run to the writes still unsettled.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::side_file::{RemoveOnDrop, create_side, ends_torn, open_side};
use super::{IdSet, LedgerError, journal_path};
use crate::diff::{FieldSet, with_fields_from};
use crate::model::GatewayFields;

/// The write-ahead journal beside the report (`REPORT.journal`): the `before` of every
/// gateway, on disk before its PATCH leaves. A crash can lose a report line, never the
/// before-value that `rollback` needs.
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    id: String,
    before: GatewayFields,
    /// The fields the write asks to change (`a;b`); absent from an older version's entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<String>,
}

/// A row's journaled writes: the gateway before the first, and the fields they asked to
/// change (unknown when an entry did not say).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Journaled {
    pub before: GatewayFields,
    pub fields: Option<FieldSet>,
}

impl Journaled {
    /// A later entry of the same row: a field it adds is undone to what it was just
    /// before that write, the others to what they were before the first.
    fn add(&mut self, before: GatewayFields, fields: Option<FieldSet>) {
        match (self.fields, fields) {
            (Some(known), Some(more)) => {
                self.before = with_fields_from(&self.before, &before, more.without(known));
                self.fields = Some(known.union(more));
            }
            _ => self.fields = None,
        }
    }
}

impl Journal {
    /// The journal, emptied for a new run or kept for a resumed one. A kept journal whose
    /// last entry was torn by a crash gets a newline first, so the next entry is never
    /// glued onto the fragment.
    pub(super) fn open(report: &Path, fresh: bool) -> Result<Journal, LedgerError> {
        let path = journal_path(report);
        let file = open_side(
            &path,
            OpenOptions::new().create(true).read(true).append(true),
        )
        .and_then(|mut f| {
            if fresh {
                f.set_len(0)?;
            } else if ends_torn(&mut f)? {
                f.write_all(b"\n")?;
            }
            Ok(f)
        })
        .map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Journal {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// The journal's file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one before-value and hands it to the OS before returning.
    pub fn record(
        &self,
        id: &uuid::Uuid,
        before: &GatewayFields,
        fields: FieldSet,
    ) -> io::Result<()> {
        let mut line = serde_json::to_vec(&JournalLine {
            id: id.hyphenated().to_string(),
            before: before.clone(),
            fields: Some(fields.to_string()),
        })?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
    }
}

/// Journaled before-values of rows the report does not hold as finished.
pub(super) fn recovered(
    report: &Path,
    done: &IdSet,
) -> Result<HashMap<u128, Journaled>, LedgerError> {
    let path = journal_path(report);
    let file = match open_side(&path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => return Err(LedgerError::Io { path, source }),
    };
    let mut out = HashMap::new();
    for line in io::BufReader::new(file).lines() {
        let line = line.map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
        // A torn entry (a crash mid-write) is skipped, never merged with the next one.
        let Ok(entry) = serde_json::from_str::<JournalLine>(&line) else {
            if !line.trim().is_empty() {
                tracing::warn!(
                    journal = %path.display(),
                    "skipped a torn journal entry (a crash mid-write)"
                );
            }
            continue;
        };
        if let Ok(id) = uuid::Uuid::try_parse(&entry.id)
            && !done.contains(&id.as_u128())
        {
            let fields = entry.fields.as_deref().map(FieldSet::parse);
            // The first before-value is the one from before any write of this report.
            match out.entry(id.as_u128()) {
                Entry::Vacant(v) => {
                    v.insert(Journaled {
                        before: entry.before,
                        fields,
                    });
                }
                Entry::Occupied(mut o) => o.get_mut().add(entry.before, fields),
            }
        }
    }
    Ok(out)
}

/// Ends a run's journal: removed when every before-value it holds is settled in the
/// report, else rewritten (through a temporary file and a rename) to hold only the entries
/// of `unsettled` rows, whose writes may have landed without an answer: a later
/// `--resume` needs them.
pub fn settle_journal(report: &Path, unsettled: &[u128]) -> io::Result<()> {
    let path = journal_path(report);
    if unsettled.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let keep: std::collections::HashSet<u128> = unsettled.iter().copied().collect();
    let tmp = path.with_extension("journal.tmp");
    let _cleanup = RemoveOnDrop(&tmp);
    let mut out = io::BufWriter::new(create_side(&tmp)?);
    let mut kept = std::collections::HashSet::new();
    let journal = open_side(&path, OpenOptions::new().read(true))?;
    for line in io::BufReader::new(journal).lines() {
        let line = line?;
        if let Ok(entry) = serde_json::from_str::<JournalLine>(&line)
            && let Ok(id) = uuid::Uuid::try_parse(&entry.id)
            && keep.contains(&id.as_u128())
            && kept.insert(id.as_u128())
        {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_entry_adds_its_new_fields_as_they_were_just_before_it() {
        let first = crate::sandbox::starting_fields(1);
        let mut second = first.clone();
        second.codecs.reverse();
        second.uri = "sip:moved.example.com".into();
        let mut j = Journaled {
            before: first.clone(),
            fields: Some(FieldSet::parse("codecs")),
        };
        j.add(second.clone(), Some(FieldSet::parse("codecs;uri")));
        assert_eq!(j.fields, Some(FieldSet::parse("uri;codecs")));
        assert_eq!(j.before.codecs, first.codecs, "from before the first write");
        assert_eq!(
            j.before.uri, second.uri,
            "from just before the write that added it"
        );
        j.add(first.clone(), None);
        assert_eq!(
            j.fields, None,
            "an entry that does not say makes them unknown"
        );
    }
}
