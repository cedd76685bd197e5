//! Inputs read against a stated cap, so a device or an endless file (`/dev/zero`, a FIFO
//! that never ends) named where a file belongs is refused instead of filling memory.
//!
//! - [`read_small_file`]: a config or token file, read whole up to its cap.
//! - [`LineCap`]: a manifest read as a stream, no line longer than its cap (a row of five
//!   capped fields is a few KiB; a longer line is not a row, and the CSV and YAML parsers
//!   would hold all of it before any check could look at it).

use std::io::{self, Read};
use std::path::Path;

/// The longest config file read.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// The longest token file read.
pub const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// The longest line of a manifest (or saved plan) read.
pub const MAX_MANIFEST_LINE: usize = 256 * 1024;
/// The most of stdin spooled as a manifest (`-`).
pub const MAX_STDIN_MANIFEST: u64 = 4 * 1024 * 1024 * 1024;

/// Reads a small text file whole: refused once past `cap` bytes, or when not UTF-8.
pub fn read_small_file(path: &Path, cap: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {cap} bytes (a device or an endless file?)"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// Passes bytes through while no line is longer than `cap`; then fails the read, naming
/// the line.
pub struct LineCap<R> {
    inner: R,
    cap: usize,
    /// Bytes since the last newline.
    run: usize,
    /// Newlines seen.
    lines: u64,
}

impl<R> LineCap<R> {
    pub fn new(inner: R, cap: usize) -> LineCap<R> {
        LineCap {
            inner,
            cap,
            run: 0,
            lines: 0,
        }
    }
}

impl<R: Read> Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        let mut start = 0;
        for at in memchr::memchr_iter(b'\n', chunk) {
            if self.run + (at - start) > self.cap {
                return Err(self.too_long());
            }
            self.run = 0;
            self.lines += 1;
            start = at + 1;
        }
        self.run += n - start;
        if self.run > self.cap {
            return Err(self.too_long());
        }
        Ok(n)
    }
}

impl<R> LineCap<R> {
    fn too_long(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "near line {}: a line longer than {} bytes (not a manifest row; a device or \
                 an endless file?)",
                self.lines + 1,
                self.cap
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], cap: usize, chunk: usize) -> io::Result<Vec<u8>> {
        /// Hands out at most `chunk` bytes a read, as a pipe may.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        LineCap::new(Trickle(bytes, chunk), cap).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn lines_up_to_the_cap_pass_and_a_longer_one_fails_wherever_it_falls() {
        let ok = b"id,name\n0123456789\n\n0123456789";
        for chunk in [1, 3, 7, 64] {
            assert_eq!(
                read_all(ok, 10, chunk).unwrap(),
                ok.to_vec(),
                "chunk {chunk}"
            );
        }
        for bad in [
            &b"id\n01234567890\nx\n"[..],
            &b"01234567890"[..],
            &b"a\nb\n012345678901234\nc"[..],
        ] {
            for chunk in [1, 4, 64] {
                let err = read_all(bad, 10, chunk).unwrap_err();
                assert!(err.to_string().contains("longer than 10 bytes"), "{err}");
            }
        }
        let err = read_all(b"a\nb\n012345678901234\n", 10, 64).unwrap_err();
        assert!(err.to_string().contains("near line 3"), "{err}");
    }

    /// The caps are part of the contract (the README states them).
    #[test]
    fn the_caps_are_the_ones_the_readme_states() {
        assert_eq!(MAX_CONFIG_FILE, 1 << 20, "1 MiB");
        assert_eq!(MAX_TOKEN_FILE, 64 << 10, "64 KiB");
        assert_eq!(MAX_MANIFEST_LINE, 256 << 10, "256 KiB");
        assert_eq!(MAX_STDIN_MANIFEST, 4 << 30, "4 GiB");
    }

    #[test]
    fn an_endless_file_is_refused_at_its_cap() {
        let err = read_small_file(Path::new("/dev/zero"), 1000).unwrap_err();
        assert!(err.to_string().contains("larger than 1000 bytes"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "x".repeat(1000)).unwrap();
        assert_eq!(read_small_file(&f, 1000).unwrap().len(), 1000);
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(read_small_file(&f, 1000).is_err());
        let mut out = Vec::new();
        let err = LineCap::new(std::fs::File::open("/dev/zero").unwrap(), 4096)
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
