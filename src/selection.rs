//! `--only` and `--skip`: run a few rows of a manifest, or all but a few, without editing
//! it (Terraform's `-target`). A row not chosen is reported `skipped` (`not_selected`)
//! and is never read or written.
//!
//! Each flag takes a gateway id or `@FILE`, a file of ids (one a line; blank lines, `#`
//! comments and a header line `id` are passed over), and may be given again. A row is
//! chosen when `--only` names it (or no `--only` was given) and `--skip` does not.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The rows chosen by `--only` and `--skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `None`: every row not skipped.
    only: Option<HashSet<u128>>,
    skip: HashSet<u128>,
}

/// The report's `error_code` for a row not chosen.
pub const NOT_SELECTED: &str = "not_selected";

/// Why a row is not chosen: the report's `error`.
pub const NOT_IN_ONLY: &str = "not selected: its id is not named by --only";
pub const IN_SKIP: &str = "not selected: its id is named by --skip";

impl Selection {
    /// The selection the flags' values make (`ID` or `@FILE` each), or `None` when neither
    /// was given. A value that is not an id, or a file that cannot be read, is refused
    /// with the flag, the file and line, and the value; so is a selection that can choose
    /// no row whatever the manifest (`--skip` names every id `--only` names).
    pub fn from_flags(only: &[String], skip: &[String]) -> Result<Option<Selection>, String> {
        if only.is_empty() && skip.is_empty() {
            return Ok(None);
        }
        let only = match only.is_empty() {
            true => None,
            false => Some(ids_of("--only", only)?),
        };
        let skip = ids_of("--skip", skip)?;
        match &only {
            Some(only) if only.is_empty() => {
                return Err(
                    "--only names no id (its files hold none): it leaves no row to \
                            run; nothing was done"
                        .into(),
                );
            }
            Some(only) if only.iter().all(|id| skip.contains(id)) => {
                return Err(format!(
                    "--only and --skip leave no row to run: --skip names every id --only \
                     names ({} of them); nothing was done",
                    only.len()
                ));
            }
            _ => {}
        }
        Ok(Some(Selection { only, skip }))
    }

    /// Why the row with this id (as written in the manifest) is not chosen, if it is not.
    /// An id that is not a UUID is chosen only when no `--only` was given.
    pub fn passes_over(&self, id: &str) -> Option<&'static str> {
        self.why_not(uuid::Uuid::try_parse(id.trim()).ok())
    }

    /// The same for a row whose id is a UUID already (a valid row): nothing to parse.
    pub fn passes_over_uuid(&self, id: uuid::Uuid) -> Option<&'static str> {
        self.why_not(Some(id))
    }

    fn why_not(&self, id: Option<uuid::Uuid>) -> Option<&'static str> {
        let id = id.map(|u| u.as_u128());
        match (&self.only, id) {
            (Some(only), Some(id)) if !only.contains(&id) => return Some(NOT_IN_ONLY),
            (Some(_), None) => return Some(NOT_IN_ONLY),
            _ => {}
        }
        match id {
            Some(id) if self.skip.contains(&id) => Some(IN_SKIP),
            _ => None,
        }
    }

    /// The ids `--only` names, for checking that each is in the manifest.
    pub fn only(&self) -> Option<&HashSet<u128>> {
        self.only.as_ref()
    }

    /// A digest of what is chosen (the run file records it: `--resume` continues the same
    /// selection). The same for the same ids, however they were spelled or ordered.
    pub fn digest(&self) -> String {
        let sorted = |set: &HashSet<u128>| {
            let mut ids: Vec<u128> = set.iter().copied().collect();
            ids.sort_unstable();
            ids
        };
        let mut hasher = Sha256::new();
        match &self.only {
            Some(only) => {
                hasher.update(b"only");
                for id in sorted(only) {
                    hasher.update(id.to_be_bytes());
                }
            }
            None => hasher.update(b"all"),
        }
        hasher.update(b"skip");
        for id in sorted(&self.skip) {
            hasher.update(id.to_be_bytes());
        }
        format!("{:x}", hasher.finalize())
    }
}

/// The ids a flag's values name.
fn ids_of(flag: &str, values: &[String]) -> Result<HashSet<u128>, String> {
    let mut ids = HashSet::new();
    for value in values {
        match value.strip_prefix('@') {
            Some(file) => ids_in_file(flag, Path::new(file), &mut ids)?,
            None => {
                let id = uuid::Uuid::try_parse(value.trim()).map_err(|_| {
                    format!("{flag} {value:?}: not a gateway id (a UUID), nor @FILE")
                })?;
                ids.insert(id.as_u128());
            }
        }
    }
    Ok(ids)
}

/// Ids are a few bytes a line: a file far larger than a manifest's ids is not one.
const MAX_FILE: u64 = 256 * 1024 * 1024;
/// The longest line of a file of ids (an id, or a comment).
const MAX_LINE: u64 = 64 * 1024;

/// Reads a file of ids as a stream, through its caps ([`crate::bounded::Capped`]: a pipe
/// or a device too): memory grows with the ids it names, never with its bytes.
fn ids_in_file(flag: &str, path: &Path, ids: &mut HashSet<u128>) -> Result<(), String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("{flag} @{shown}: cannot read it: {e}");
    let input = crate::bounded::Capped::open(path, MAX_FILE).map_err(cannot)?;
    let mut input = std::io::BufReader::new(input);
    let mut bytes = Vec::new();
    for n in 1u64.. {
        bytes.clear();
        let read = (&mut input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut bytes)
            .map_err(cannot)?;
        if read == 0 {
            break;
        }
        if bytes.len() as u64 > MAX_LINE {
            return Err(format!(
                "{flag} @{shown}, line {n}: longer than {MAX_LINE} bytes (not a list of ids)"
            ));
        }
        let line = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{flag} @{shown}, line {n}: not UTF-8 text"))?;
        // A byte-order mark (some Windows editors write one) opens the text, not its id.
        let line = match n {
            1 => line.strip_prefix('\u{feff}').unwrap_or(line),
            _ => line,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.eq_ignore_ascii_case("id") {
            continue;
        }
        let id = uuid::Uuid::try_parse(line).map_err(|_| {
            format!(
                "{flag} @{shown}, line {n}: \"{}\" is not a gateway id (a UUID)",
                crate::inert::text(line, 100)
            )
        })?;
        ids.insert(id.as_u128());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0b6e3f2c-1c84-4f3e-9d55-0d1e7a1f0a01";
    const B: &str = "0b6e3f2c-1c84-4f3e-9d55-0d1e7a1f0a02";
    const C: &str = "0b6e3f2c-1c84-4f3e-9d55-0d1e7a1f0a03";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_flags_choose_every_row() {
        assert_eq!(Selection::from_flags(&[], &[]), Ok(None));
    }

    #[test]
    fn only_chooses_its_ids_and_skip_takes_its_ids_away() {
        let s = Selection::from_flags(&strings(&[A, B]), &strings(&[B]))
            .unwrap()
            .unwrap();
        assert_eq!(s.passes_over(A), None);
        assert_eq!(
            s.passes_over(&A.to_uppercase()),
            None,
            "case does not matter"
        );
        assert_eq!(s.passes_over(B), Some(IN_SKIP));
        assert_eq!(s.passes_over(C), Some(NOT_IN_ONLY));
        assert_eq!(s.passes_over("not-an-id"), Some(NOT_IN_ONLY));
        let skip_only = Selection::from_flags(&[], &strings(&[C])).unwrap().unwrap();
        assert_eq!(skip_only.passes_over(A), None);
        assert_eq!(skip_only.passes_over("not-an-id"), None);
        assert_eq!(skip_only.passes_over(C), Some(IN_SKIP));
        assert!(skip_only.only().is_none());
    }

    #[test]
    fn a_file_of_ids_reads_like_the_ids_given_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.txt");
        std::fs::write(&file, format!("id\n# the failed ones\n\n {A} \n{B}\n")).unwrap();
        let from_file = Selection::from_flags(&[format!("@{}", file.display())], &[]).unwrap();
        let given = Selection::from_flags(&strings(&[B, A]), &[]).unwrap();
        assert_eq!(from_file, given);
        let (from_file, given) = (from_file.unwrap(), given.unwrap());
        assert_eq!(from_file.digest(), given.digest());
        assert_eq!(from_file.only().map(|o| o.len()), Some(2));
    }

    #[test]
    fn the_digest_tells_selections_apart() {
        let digest = |only: &[&str], skip: &[&str]| {
            Selection::from_flags(&strings(only), &strings(skip))
                .unwrap()
                .unwrap()
                .digest()
        };
        let all = [
            digest(&[A], &[]),
            digest(&[], &[A]),
            digest(&[A, B], &[]),
            digest(&[A], &[B]),
            digest(&[B], &[]),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(digest(&[A, B], &[C]), digest(&[B, A, A], &[C]));
    }

    #[test]
    fn a_bad_value_is_refused_with_its_flag_file_line_and_value() {
        let err = Selection::from_flags(&strings(&["gw-1"]), &[]).unwrap_err();
        assert!(err.contains("--only") && err.contains("gw-1"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.txt");
        std::fs::write(&file, format!("{A}\noops\n")).unwrap();
        let err = Selection::from_flags(&[], &[format!("@{}", file.display())]).unwrap_err();
        assert!(
            err.contains("--skip") && err.contains("line 2") && err.contains("oops"),
            "{err}"
        );
        // Far larger than any list of ids (sparse: no disk is used).
        let huge = dir.path().join("huge.txt");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_FILE + 1)
            .unwrap();
        let err = Selection::from_flags(&[format!("@{}", huge.display())], &[]).unwrap_err();
        assert!(err.contains("not a list of ids"), "{err}");
        let missing = dir.path().join("none.txt");
        let err = Selection::from_flags(&[format!("@{}", missing.display())], &[]).unwrap_err();
        assert!(
            err.contains("cannot read") && err.contains("none.txt"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_opens_a_file_of_ids_and_is_not_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.txt");
        std::fs::write(&file, format!("\u{feff}{A}\r\n{B}\r\n")).unwrap();
        let from_file = Selection::from_flags(&[format!("@{}", file.display())], &[]);
        assert_eq!(from_file, Selection::from_flags(&strings(&[A, B]), &[]));
        std::fs::write(&file, format!("\u{feff}id\n{A}\n")).unwrap();
        let from_file = Selection::from_flags(&[format!("@{}", file.display())], &[]);
        assert_eq!(from_file, Selection::from_flags(&strings(&[A]), &[]));
        // Only at the top: elsewhere it is a character of the line, refused.
        std::fs::write(&file, format!("{A}\n\u{feff}{B}\n")).unwrap();
        let err = Selection::from_flags(&[format!("@{}", file.display())], &[]).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_selection_that_can_choose_nothing_is_refused_naming_the_flags() {
        let err = Selection::from_flags(&strings(&[A]), &strings(&[A])).unwrap_err();
        assert!(err.contains("--only") && err.contains("--skip"), "{err}");
        let err = Selection::from_flags(&strings(&[A, B]), &strings(&[B, A, C])).unwrap_err();
        assert!(err.contains("leave no row"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.txt");
        std::fs::write(&file, "id\n# none today\n").unwrap();
        let err = Selection::from_flags(&[format!("@{}", file.display())], &[]).unwrap_err();
        assert!(err.contains("--only names no id"), "{err}");
        // One id left: a selection.
        assert!(Selection::from_flags(&strings(&[A, B]), &strings(&[A])).is_ok());
        // --skip alone leaves whatever the manifest holds beyond it: known only then.
        assert!(Selection::from_flags(&[], &strings(&[A])).is_ok());
    }
}
