//! Inputs read against a stated cap, so a device or an endless file (`/dev/zero`, a FIFO
//! that never ends) named where a file belongs is refused instead of filling memory or
//! waiting forever.
//!
//! - [`open_at_once`]: every input is opened without waiting: a FIFO no process writes to
//!   opens at once (a plain open would wait for a writer, forever).
//! - [`Capped`]: an input read whole up to its cap; a pipe, FIFO or device within
//!   [`MAX_PIPE_WAIT`] too.
//! - [`read_small_file`]: a config or token file, read whole up to its cap.
//! - [`LineCap`]: a manifest read as a stream, no line longer than its cap (a row of five
//!   capped fields is a few KiB; a longer line is not a row, and the CSV and YAML parsers
//!   would hold all of it before any check could look at it).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest config file read.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// The longest token file read.
pub const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// The longest line of a manifest (or saved plan) read.
pub const MAX_MANIFEST_LINE: usize = 256 * 1024;
/// The most of stdin spooled as a manifest (`-`).
pub const MAX_STDIN_MANIFEST: u64 = 4 * 1024 * 1024 * 1024;
/// The longest a pipe, a FIFO or a device named as an input may take to reach its end
/// (a FIFO no process writes to never does).
pub const MAX_PIPE_WAIT: Duration = Duration::from_secs(30);

/// Opens a file to read without waiting for it: on Unix with `O_NONBLOCK`, so a FIFO no
/// process writes to opens at once instead of blocking the open until a writer comes.
/// Reads of a regular file are unaffected; read anything else through [`Capped`] (which
/// waits for it within a deadline) or refuse it.
pub fn open_at_once(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options.open(path)
}

/// Opens a file that must be a regular file (it is read again, or replaced by a rename):
/// a FIFO, a device or a directory is refused without waiting on it.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = open_at_once(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, a device or a directory)",
        ));
    }
    Ok(file)
}

/// An input read whole, at most `cap` bytes: past that the read fails. A pipe, a FIFO or
/// a device (anything but a regular file) is also read within [`MAX_PIPE_WAIT`] of its
/// opening: one that has not ended by then (no writer, or one that never stops) fails the
/// read, so no input waits forever.
pub struct Capped {
    file: File,
    cap: u64,
    read: u64,
    /// For a pipe, a FIFO or a device: the deadline, and the wait it was given.
    deadline: Option<(Instant, Duration)>,
}

impl Capped {
    pub fn open(path: &Path, cap: u64) -> io::Result<Capped> {
        Capped::open_within(path, cap, MAX_PIPE_WAIT)
    }

    /// [`Capped::open`] with another wait for a pipe (a test's).
    pub fn open_within(path: &Path, cap: u64, wait: Duration) -> io::Result<Capped> {
        Capped::new(open_at_once(path)?, cap, wait)
    }

    /// A file opened by [`open_at_once`], read with these caps.
    fn new(file: File, cap: u64, wait: Duration) -> io::Result<Capped> {
        let regular = file.metadata()?.is_file();
        Ok(Capped {
            file,
            cap,
            read: 0,
            deadline: (!regular).then(|| (Instant::now() + wait, wait)),
        })
    }

    fn too_large(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is larger than {} bytes (a device or an endless file?)",
                self.cap
            ),
        )
    }
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read > self.cap {
            return Err(self.too_large());
        }
        // One byte past the cap, to tell a file of exactly `cap` bytes from a longer one.
        let room = usize::try_from(self.cap + 1 - self.read).unwrap_or(usize::MAX);
        let buf_len = buf.len().min(room);
        let n = loop {
            if let Some((deadline, wait)) = self.deadline {
                wait_readable(&self.file, deadline, wait)?;
            }
            match self.file.read(&mut buf[..buf_len]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.read += n as u64;
        if self.read > self.cap {
            return Err(self.too_large());
        }
        Ok(n)
    }
}

/// Waits until `file` can be read (data, or its end), failing at `deadline`. A FIFO that
/// no process has opened to write is not readable (Linux reports no end before a writer
/// came), so it fails here rather than reading as empty.
#[cfg(unix)]
fn wait_readable(file: &File, deadline: Instant, wait: Duration) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut fd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for a descriptor `file` keeps open.
        let ready = unsafe { libc::poll(&mut fd, 1, ms) };
        match ready {
            n if n > 0 => return Ok(()),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "it is a pipe, a FIFO or a device that did not end within {} s (no \
                         process writes to it, or one that never stops?)",
                        wait.as_secs()
                    ),
                ));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(not(unix))]
fn wait_readable(_file: &File, _deadline: Instant, _wait: Duration) -> io::Result<()> {
    Ok(())
}

/// Reads a small text file whole: refused once past `cap` bytes, when a pipe or device
/// has not ended within [`MAX_PIPE_WAIT`], or when not UTF-8.
pub fn read_small_file(path: &Path, cap: u64) -> io::Result<String> {
    read_text(Capped::open(path, cap)?)
}

/// Reads a regular file whole, up to `cap` bytes (a file the tool wrote and reads back):
/// anything else is refused without waiting on it.
pub fn read_regular_file(path: &Path, cap: u64) -> io::Result<String> {
    read_text(Capped::new(open_regular(path)?, cap, MAX_PIPE_WAIT)?)
}

fn read_text(mut input: Capped) -> io::Result<String> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
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

/// A SHA-256 as lowercase hex: the fingerprint in a report's run file and a saved plan.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a file read again whole (a manifest a saved plan names, a finished
/// report of a chain); `None` when it cannot be read, or is no longer a regular file.
pub fn file_sha256(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut file = open_regular(path).ok()?;
    io::copy(&mut file, &mut hasher).ok()?;
    Some(hex(&hasher.finalize()))
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
        assert_eq!(MAX_PIPE_WAIT, Duration::from_secs(30), "30 s");
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

    #[cfg(unix)]
    fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let path = dir.join(name);
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        path
    }

    /// A FIFO with no writer opens at once and is refused at the deadline; one whose
    /// writer never stops is refused at the cap; one whose writer says nothing is refused
    /// at the deadline; one whose writer ends is read whole.
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_read_within_its_deadline_and_its_cap() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let wait = Duration::from_millis(300);
        let read = |path: &Path, cap| {
            let started = Instant::now();
            let mut out = Vec::new();
            let result =
                Capped::open_within(path, cap, wait).and_then(|mut c| c.read_to_end(&mut out));
            (result.map(|_| out), started.elapsed())
        };
        let nobody = fifo(dir.path(), "nobody");
        let (result, took) = read(&nobody, 1000);
        let err = result.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("did not end within"), "{err}");
        assert!(took < Duration::from_secs(5), "{took:?}");

        let endless = fifo(dir.path(), "endless");
        let writer = {
            let path = endless.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                while w.write_all(b"# more\n").is_ok() {}
            })
        };
        let (result, _) = read(&endless, 100_000);
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("larger than 100000")
        );
        writer.join().unwrap();

        let silent = fifo(dir.path(), "silent");
        let holder = {
            let path = silent.clone();
            std::thread::spawn(move || {
                let _w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                std::thread::sleep(Duration::from_secs(2));
            })
        };
        let (result, took) = read(&silent, 1000);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(took < Duration::from_secs(2), "{took:?}");
        holder.join().unwrap();

        let ends = fifo(dir.path(), "ends");
        let writer = {
            let path = ends.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                w.write_all(b"abc").unwrap();
                std::thread::sleep(Duration::from_millis(50));
                w.write_all(b"def").unwrap();
            })
        };
        let (result, _) = read(&ends, 6);
        assert_eq!(result.unwrap(), b"abcdef");
        writer.join().unwrap();

        // A file that must be regular: a FIFO or a device is refused without waiting.
        for special in [nobody.as_path(), Path::new("/dev/zero")] {
            let err = open_regular(special).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
            let err = read_regular_file(special, 1000).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }
}
