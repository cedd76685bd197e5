//! `--shard K/N`: split one manifest across N processes with no coordinator. A row belongs
//! to the shard its id hashes to, so the split is the same whatever the row order or the
//! manifest format, and the N shards together hold every row exactly once.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether this shard owns the row with this id (as written; case and surrounding
    /// space do not matter, so `ABC` and `abc` land together).
    pub fn owns(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

/// FNV-1a over the lowercased id: stable across platforms, versions and runs (unlike
/// std's `DefaultHasher`), and well spread even for ids that share long prefixes.
pub fn shard_of(id: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.trim().bytes() {
        hash ^= u64::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(count.max(1))) as u32
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard `{s}`: expected K/N, like 0/4"))?;
        let index: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("shard `{s}`: `{k}` is not a number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("shard `{s}`: `{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard `{s}`: need 0 <= K < N"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n_and_refuses_nonsense() {
        assert_eq!("1/3".parse(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn shards_are_disjoint_cover_everything_and_spread() {
        let ids: Vec<String> = crate::sandbox::generated_ids(10_000, 9)
            .iter()
            .map(|u| u.hyphenated().to_string())
            .collect();
        for n in [1u32, 2, 3, 7] {
            let mut sizes = vec![0usize; n as usize];
            for id in &ids {
                let owners: Vec<u32> = (0..n)
                    .filter(|k| {
                        Shard {
                            index: *k,
                            count: n,
                        }
                        .owns(id)
                    })
                    .collect();
                assert_eq!(owners.len(), 1, "{id} in {owners:?} of {n}");
                sizes[owners[0] as usize] += 1;
            }
            let even = ids.len() / n as usize;
            assert!(
                sizes.iter().all(|s| s.abs_diff(even) < even / 10 + 20),
                "{sizes:?}"
            );
        }
        assert_eq!(shard_of("ABC", 7), shard_of("abc", 7));
    }

    #[test]
    fn a_shard_prints_as_it_is_written() {
        let s: Shard = "3/8".parse().unwrap();
        assert_eq!(s.to_string(), "3/8");
    }
}
