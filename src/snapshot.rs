//! Snapshot reads (`--read-mode list`): page through the space once and diff every
//! manifest row against what the pages said, instead of one GET a row.
//!
//! ```text
//!  first pass: the ids this run needs (sorted 64-bit keys) ──▶ page through the space
//!  (export's bounded, host-checked paging) ──▶ a gateway the run needs: its fields to a
//!  temporary file, its offset beside its key ──▶ the engine looks each row up
//! ```
//!
//! Memory: 16 bytes for each id the run needs (its 64-bit key and an offset), whatever the size
//! of the space; the listed fields live in an unlinked temporary file (about 200 bytes a
//! gateway the manifest names), gone when the process is, even after a kill -9.
//!
//! A snapshot is only ever a hint. A row it does not hold (not listed, listed after paging
//! stopped, or its key shared with another id) is read by GET as in `get` mode; a row that
//! differs is read again by GET just before its PATCH (see [`crate::engine`]). So a
//! partial snapshot (paging failed, auto's page cap was reached, an interrupt) is still
//! correct, only slower.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::ReadClient;
use crate::export::{self, ExportError, ExportStats, PagingLimits};
use crate::manifest::id_hash;
use crate::model::{GatewayFields, GatewayResource};

/// The largest page the list endpoint takes.
pub const PAGE_SIZE: u32 = 1000;

/// How plan and apply read the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReadMode {
    /// One GET a row.
    Get,
    /// Page through the whole space first; GET only the rows that differ (before their
    /// PATCH) and the ones the pages did not hold.
    List,
    /// List while the pages cost fewer round trips than one GET a row would (rows ÷
    /// concurrency), then GET the rows the pages did not reach.
    #[default]
    Auto,
}

impl ReadMode {
    /// The most pages to read for `rows` rows at `concurrency`: `None` reads no page,
    /// `Some(u64::MAX)` every page.
    ///
    /// `auto` stops paging once the pages read cost as many sequential round trips as
    /// the GETs of every row would at this concurrency: a run in a space much larger than
    /// its manifest then takes at most about twice as long as `get` mode would have,
    /// and a manifest that covers the space is read in pages.
    pub fn max_pages(self, rows: u64, concurrency: usize) -> Option<u64> {
        match self {
            ReadMode::Get => None,
            ReadMode::List => Some(u64::MAX),
            ReadMode::Auto if rows < AUTO_MIN_ROWS => None,
            ReadMode::Auto => Some(rows.div_ceil(concurrency.max(1) as u64)),
        }
    }
}

/// Below this many rows `auto` reads by GET: one page would cost as much as the GETs.
pub const AUTO_MIN_ROWS: u64 = 1000;

/// What taking a snapshot did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub pages: u64,
    /// Gateways the pages held.
    pub listed: u64,
    /// Of those, the ones the run needs (kept).
    pub kept: u64,
    /// Every page was read: an id the snapshot lacks was not in the space when listed.
    pub complete: bool,
    pub elapsed: Duration,
    /// Why paging stopped early, when it did (the rows it missed are read by GET).
    pub stopped_early: Option<String>,
}

/// The ids a run needs, collected in the first pass; then filled from the pages.
pub struct SnapshotBuilder {
    /// Sorted, unique keys ([`id_hash`]) of the ids the run needs.
    keys: Arc<Vec<u64>>,
    /// Beside each key: where its gateway is in `spill`, plus one (0: not listed).
    at: Vec<u64>,
    spill: BufWriter<File>,
    written: u64,
    stats: SnapshotStats,
}

/// The fields of every listed gateway the run needs, looked up by id.
pub struct Snapshot {
    keys: Arc<Vec<u64>>,
    at: Vec<u64>,
    spill: File,
    pub stats: SnapshotStats,
}

impl SnapshotBuilder {
    /// The keys of these ids ([`SnapshotBuilder::key`]), sorted and without repeats, as
    /// [`SnapshotBuilder::wanting`] takes them.
    pub fn keys(mut keys: Vec<u64>) -> Arc<Vec<u64>> {
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        Arc::new(keys)
    }

    /// A snapshot of the ids with these keys (from [`SnapshotBuilder::keys`]: shared, not
    /// copied, by every pass over the same manifest). Creates the temporary file.
    pub fn wanting(keys: Arc<Vec<u64>>) -> std::io::Result<SnapshotBuilder> {
        Ok(SnapshotBuilder {
            at: vec![0; keys.len()],
            keys,
            spill: BufWriter::with_capacity(1 << 16, tempfile::tempfile()?),
            written: 0,
            stats: SnapshotStats::default(),
        })
    }

    /// The key of an id, as [`SnapshotBuilder::wanting`] takes it.
    pub fn key(id: &Uuid) -> u64 {
        id_hash(id)
    }

    /// Keeps a listed gateway when the run needs it. An id listed twice (or two ids with
    /// one key) is not believed from the pages: which listing is right cannot be told, so
    /// that row is read by GET.
    pub fn offer(&mut self, gateway: &GatewayResource) -> std::io::Result<()> {
        self.stats.listed += 1;
        // An id that is not a UUID names no manifest row.
        let Ok(id) = Uuid::try_parse(&gateway.id) else {
            return Ok(());
        };
        let Ok(i) = self.keys.binary_search(&Self::key(&id)) else {
            return Ok(());
        };
        let json = serde_json::to_vec(&gateway.sip_gateway)?;
        let len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
        self.spill.write_all(&len.to_le_bytes())?;
        self.spill.write_all(id.as_bytes())?;
        self.spill.write_all(&json)?;
        if self.at[i] == 0 {
            self.stats.kept += 1;
            self.at[i] = self.written + 1;
        } else {
            self.at[i] = LISTED_TWICE;
        }
        self.written += 4 + 16 + json.len() as u64;
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<Snapshot> {
        let spill = self.spill.into_inner().map_err(|e| e.into_error())?;
        Ok(Snapshot {
            keys: self.keys,
            at: self.at,
            spill,
            stats: self.stats,
        })
    }
}

/// `at` of a key listed more than once: the snapshot does not answer for it.
const LISTED_TWICE: u64 = u64::MAX;

impl Snapshot {
    /// The gateway as listed, if the snapshot holds this very id. `None` for anything
    /// else (not listed, another id with the same key, a read error): the caller GETs.
    pub fn get(&self, id: &Uuid) -> Option<GatewayFields> {
        let i = self.keys.binary_search(&SnapshotBuilder::key(id)).ok()?;
        if self.at[i] == LISTED_TWICE {
            return None;
        }
        let at = self.at[i].checked_sub(1)?;
        let mut head = [0u8; 20];
        self.spill.read_exact_at(&mut head, at).ok()?;
        let (len, listed_id) = head.split_at(4);
        if listed_id != id.as_bytes() {
            return None;
        }
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let mut json = vec![0u8; len];
        self.spill.read_exact_at(&mut json, at + 20).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// Pages through the space (at most `page_cap` pages, within `limits`) and keeps what the
/// run needs. Paging that fails or is cut short leaves a partial snapshot, never an
/// error: the rows it lacks are read by GET. Only the temporary file failing is an error.
pub async fn take(
    client: &ReadClient,
    mut builder: SnapshotBuilder,
    page_cap: u64,
    limits: PagingLimits,
    stop: &CancellationToken,
) -> std::io::Result<Snapshot> {
    let started = tokio::time::Instant::now();
    let capped = PagingLimits {
        max_pages: limits.max_pages.min(page_cap),
        ..limits
    };
    let mut paged = ExportStats::default();
    let result = {
        let paging = export::pages(client, PAGE_SIZE, capped, &mut paged, |g| {
            builder.offer(g)?;
            if builder.stats.listed.is_multiple_of(50_000) {
                tracing::info!(
                    listed = builder.stats.listed,
                    found = builder.stats.kept,
                    "reading the space in pages"
                );
            }
            Ok(())
        });
        // The stop first: the client's reads end with it too, as errors of their own.
        tokio::select! {
            biased;
            () = stop.cancelled() => Err(None),
            r = paging => r.map_err(Some),
        }
    };
    builder.stats.pages = paged.pages;
    builder.stats.elapsed = started.elapsed();
    match result {
        Ok(()) => builder.stats.complete = true,
        Err(Some(ExportError::Write(e))) => return Err(e),
        Err(Some(ExportError::TooLong { .. }))
            if page_cap < limits.max_pages && paged.pages >= page_cap =>
        {
            builder.stats.stopped_early = Some(format!("its budget of {page_cap} pages was spent"));
        }
        Err(Some(e)) => {
            let why = crate::inert::text(&format!("{:#}", anyhow::Error::new(e)), 300);
            tracing::warn!(
                "listing the space stopped early ({why}); the rows not listed are read one by one"
            );
            builder.stats.stopped_early = Some(why);
        }
        Err(None) => builder.stats.stopped_early = Some("interrupted".into()),
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Encryption;

    fn gateway(id: &Uuid, name: &str) -> GatewayResource {
        serde_json::from_value(serde_json::json!({
            "id": id.to_string(),
            "sip_gateway": {"name": name, "uri": "sip:a.example.com", "encryption": "required",
                            "ciphers": [], "codecs": ["PCMU"]},
        }))
        .unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    #[test]
    fn keeps_only_the_ids_asked_for_and_returns_them_exactly() {
        let wanted: Vec<Uuid> = (1..=50).map(id).collect();
        let mut keys: Vec<u64> = wanted.iter().map(SnapshotBuilder::key).collect();
        keys.extend(keys.clone()); // repeats are fine
        let mut b = SnapshotBuilder::wanting(SnapshotBuilder::keys(keys)).unwrap();
        for n in 1..=200 {
            b.offer(&gateway(&id(n), &format!("gw-{n}"))).unwrap();
        }
        b.offer(&gateway(&id(7), "listed-again")).unwrap();
        let s = b.finish().unwrap();
        assert_eq!((s.stats.listed, s.stats.kept), (201, 50));
        for n in (1..=50).filter(|n| *n != 7) {
            let got = s.get(&id(n)).unwrap();
            assert_eq!(got.name, format!("gw-{n}"));
            assert_eq!(got.encryption, Some(Encryption::Required));
        }
        assert_eq!(
            s.get(&id(7)),
            None,
            "listed twice: read by GET, not last-wins"
        );
        assert_eq!(s.get(&id(51)), None, "listed, but not asked for");
        assert_eq!(s.get(&id(999)), None, "never listed");
    }

    #[test]
    fn an_id_sharing_a_key_with_a_listed_one_is_not_taken_for_it() {
        let listed = id(1);
        // Another id with the same key: the snapshot must not answer for it.
        let twin = {
            let v = listed.as_u128();
            let (hi, lo) = ((v >> 64) as u64, v as u64);
            let other_hi = hi ^ 0xffff;
            Uuid::from_u128(((other_hi as u128) << 64) | u128::from(lo ^ 0xffff))
        };
        assert_ne!(twin, listed);
        assert_eq!(SnapshotBuilder::key(&twin), SnapshotBuilder::key(&listed));
        let mut b =
            SnapshotBuilder::wanting(SnapshotBuilder::keys(vec![SnapshotBuilder::key(&twin)]))
                .unwrap();
        b.offer(&gateway(&listed, "someone-else")).unwrap();
        let s = b.finish().unwrap();
        assert_eq!(s.get(&twin), None);
        assert!(s.get(&listed).is_some());
    }

    #[test]
    fn a_listed_id_that_is_not_a_uuid_is_passed_over() {
        let mut b =
            SnapshotBuilder::wanting(SnapshotBuilder::keys(vec![SnapshotBuilder::key(&id(1))]))
                .unwrap();
        let mut g = gateway(&id(1), "x");
        g.id = "not-a-uuid".into();
        b.offer(&g).unwrap();
        let s = b.finish().unwrap();
        assert_eq!((s.stats.listed, s.stats.kept), (1, 0));
    }

    #[test]
    fn auto_reads_pages_while_they_cost_less_than_the_gets() {
        assert_eq!(ReadMode::Get.max_pages(1_000_000, 32), None);
        assert_eq!(ReadMode::List.max_pages(1, 32), Some(u64::MAX));
        assert_eq!(ReadMode::Auto.max_pages(AUTO_MIN_ROWS - 1, 32), None);
        assert_eq!(ReadMode::Auto.max_pages(AUTO_MIN_ROWS, 32), Some(32));
        assert_eq!(ReadMode::Auto.max_pages(100_000, 32), Some(3125));
        assert_eq!(ReadMode::Auto.max_pages(100_001, 32), Some(3126));
        assert_eq!(ReadMode::Auto.max_pages(5000, 0), Some(5000));
    }
}
