//! The CRI container log: `<timestamp> <stream> <F|P> <content>\n`.
//!
//! Framing follows containerd's `internal/cri/io/logger.go`: a trailing
//! `\r\n` counts as the newline; a line longer than the limit is cut into
//! `P` (partial) entries of exactly the limit, its remainder ending in an
//! `F` (full) entry; bytes still pending at end of stream are written as a
//! `P` entry, because the container never ended that line. Timestamps are
//! RFC 3339 in UTC with nanoseconds. A failing write (disk full, log
//! directory removed) drops the entry and counts it: the monitor keeps
//! draining the container's pipes whatever happens to the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// kubelet's and containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

const FULL: &[u8] = b"F";
const PARTIAL: &[u8] = b"P";

pub struct CriLogWriter {
    path: PathBuf,
    file: Option<File>,
    /// The unfinished line of each stream (never longer than `max_line`).
    pending: [Vec<u8>; 2],
    max_line: usize,
    /// Entries framed by the current call, written with one `write`.
    out: Vec<u8>,
    dropped_entries: u64,
    /// Whether the last write failed: only a change is worth reporting.
    failing: bool,
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl CriLogWriter {
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::with_max_line(path, MAX_LINE)
    }

    pub fn with_max_line(path: &Path, max_line: usize) -> io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(open_log(path)?),
            pending: [Vec::new(), Vec::new()],
            max_line: max_line.max(1),
            out: Vec::new(),
            dropped_entries: 0,
            failing: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries lost to write failures so far.
    pub fn dropped_entries(&self) -> u64 {
        self.dropped_entries
    }

    /// Logs a chunk read from `stream`; complete lines are written now,
    /// the rest waits for more data (or [`finish`](Self::finish)).
    pub fn write(&mut self, stream: Stream, mut data: &[u8], now: SystemTime) {
        let timestamp = format_timestamp(now);
        let pending = &mut self.pending[stream.index()];
        let mut entries = 0;
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let mut line = &data[..newline];
            if !pending.is_empty() {
                pending.extend_from_slice(line);
                line = pending;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            entries += frame_line(&mut self.out, &timestamp, stream, line, self.max_line);
            pending.clear();
            data = &data[newline + 1..];
        }
        pending.extend_from_slice(data);
        if pending.len() > self.max_line {
            // Cut whole chunks off the front, keeping the remainder
            // (at most `max_line`) for the next newline.
            let cut = (pending.len() - 1) / self.max_line * self.max_line;
            for chunk in pending[..cut].chunks(self.max_line) {
                entries += frame(&mut self.out, &timestamp, stream, PARTIAL, chunk);
            }
            pending.drain(..cut);
        }
        self.flush(entries);
    }

    /// End of `stream`: an unfinished line is written as a partial entry.
    pub fn finish(&mut self, stream: Stream, now: SystemTime) {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() {
            return;
        }
        let timestamp = format_timestamp(now);
        let entries = frame(&mut self.out, &timestamp, stream, PARTIAL, &pending);
        self.flush(entries);
    }

    /// Opens the log path anew (kubelet renamed the old file). On failure
    /// the old file stays in use, so nothing is lost that could be kept.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = Some(open_log(&self.path)?);
        self.failing = false;
        Ok(())
    }

    fn flush(&mut self, entries: u64) {
        if self.out.is_empty() {
            return;
        }
        let result = match &mut self.file {
            Some(file) => file.write_all(&self.out),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        self.out.clear();
        match result {
            Ok(()) => {
                if self.failing {
                    eprintln!(
                        "wharf-monitor: writing {} again ({} entries dropped so far)",
                        self.path.display(),
                        self.dropped_entries
                    );
                }
                self.failing = false;
            }
            Err(e) => {
                self.dropped_entries += entries;
                if !self.failing {
                    eprintln!(
                        "wharf-monitor: writing {}: {e}; dropping entries",
                        self.path.display()
                    );
                }
                self.failing = true;
            }
        }
    }
}

/// Frames a complete line: `P` chunks of `max_line`, then an `F` entry.
fn frame_line(
    out: &mut Vec<u8>,
    timestamp: &[u8],
    stream: Stream,
    line: &[u8],
    max_line: usize,
) -> u64 {
    let mut entries = 0;
    let mut rest = line;
    while rest.len() > max_line {
        entries += frame(out, timestamp, stream, PARTIAL, &rest[..max_line]);
        rest = &rest[max_line..];
    }
    entries + frame(out, timestamp, stream, FULL, rest)
}

fn frame(out: &mut Vec<u8>, timestamp: &[u8], stream: Stream, tag: &[u8], content: &[u8]) -> u64 {
    for part in [
        timestamp,
        b" ",
        stream.tag(),
        b" ",
        tag,
        b" ",
        content,
        b"\n",
    ] {
        out.extend_from_slice(part);
    }
    1
}

/// Length of `2006-01-02T15:04:05.999999999Z`.
pub const TIMESTAMP_LEN: usize = 30;

/// RFC 3339 in UTC with all nine fractional digits (fixed width, so the
/// log sorts as text; kubelet parses any RFC 3339 form).
pub fn format_timestamp(time: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; TIMESTAMP_LEN];
    let mut at = 0;
    let mut put = |value: u64, width: usize, separator: u8| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out[at + width] = separator;
        at += width + 1;
    };
    put(year, 4, b'-');
    put(month, 2, b'-');
    put(day, 2, b'T');
    put(second_of_day / 3600, 2, b':');
    put(second_of_day / 60 % 60, 2, b':');
    put(second_of_day % 60, 2, b'.');
    put(u64::from(since_epoch.subsec_nanos()), 9, b'Z');
    out
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(seconds, nanos)
    }

    fn text(time: SystemTime) -> String {
        String::from_utf8(format_timestamp(time).to_vec()).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        assert_eq!(text(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            text(at(1_704_164_645, 123_456_789)),
            "2024-01-02T03:04:05.123456789Z"
        );
        // Leap day, end of a century, far future.
        assert_eq!(text(at(951_782_400, 1)), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(
            text(at(4_107_542_399, 999_999_999)),
            "2100-02-28T23:59:59.999999999Z"
        );
        assert_eq!(
            text(at(253_402_300_799, 0)),
            "9999-12-31T23:59:59.000000000Z"
        );
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        writer: CriLogWriter,
    }

    fn fixture(max_line: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let writer = CriLogWriter::with_max_line(&path, max_line).unwrap();
        Fixture {
            _dir: dir,
            path,
            writer,
        }
    }

    /// The log without timestamps: `stream tag content` per entry.
    fn entries(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let (timestamp, rest) = line.split_at(TIMESTAMP_LEN);
                assert!(timestamp.ends_with('Z'), "{line}");
                rest[1..].to_owned()
            })
            .collect()
    }

    #[test]
    fn lines_are_framed_per_stream_and_crlf_is_a_newline() {
        let mut f = fixture(MAX_LINE);
        let now = at(1, 0);
        f.writer.write(Stream::Stdout, b"hello\nwor", now);
        f.writer.write(Stream::Stderr, b"err\r\n\n", now);
        f.writer.write(Stream::Stdout, b"ld\r\n", now);
        assert_eq!(
            entries(&f.path),
            [
                "stdout F hello",
                "stderr F err",
                "stderr F ",
                "stdout F world"
            ]
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_entries() {
        let mut f = fixture(4);
        let now = at(1, 0);
        // Whole chunks go out as soon as more than the limit is pending;
        // the newline then ends the remainder "ijk".
        f.writer.write(Stream::Stdout, b"abcdefghij", now);
        f.writer.write(Stream::Stdout, b"k\n12345678\n1234\n", now);
        // A line of exactly the limit is one full entry.
        f.writer.write(Stream::Stdout, b"abcdefgh", now);
        f.writer.write(Stream::Stdout, b"\n", now);
        assert_eq!(
            entries(&f.path),
            [
                "stdout P abcd",
                "stdout P efgh",
                "stdout F ijk",
                "stdout P 1234",
                "stdout F 5678",
                "stdout F 1234",
                "stdout P abcd",
                "stdout F efgh",
            ]
        );
    }

    #[test]
    fn unfinished_line_at_eof_is_partial() {
        let mut f = fixture(MAX_LINE);
        f.writer
            .write(Stream::Stdout, b"done\nno newline", at(1, 0));
        f.writer.finish(Stream::Stdout, at(2, 0));
        f.writer.finish(Stream::Stderr, at(2, 0));
        assert_eq!(entries(&f.path), ["stdout F done", "stdout P no newline"]);
    }

    #[test]
    fn write_failures_drop_entries_and_reopen_recovers() {
        let mut f = fixture(MAX_LINE);
        let now = at(1, 0);
        f.writer.write(Stream::Stdout, b"one\n", now);
        // kubelet rotates: rename, then asks for a reopen.
        let rotated = f.path.with_extension("log.1");
        std::fs::rename(&f.path, &rotated).unwrap();
        f.writer.write(Stream::Stdout, b"two\n", now);
        f.writer.reopen().unwrap();
        f.writer.write(Stream::Stdout, b"three\n", now);
        assert_eq!(entries(&rotated), ["stdout F one", "stdout F two"]);
        assert_eq!(entries(&f.path), ["stdout F three"]);

        // The directory disappears: entries are dropped, counted, and the
        // writer keeps accepting data.
        let dir = f.path.parent().unwrap().to_path_buf();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(f.writer.reopen().is_err());
        f.writer.file = None;
        f.writer.write(Stream::Stderr, b"lost\nlost too\n", now);
        assert_eq!(f.writer.dropped_entries(), 2);
    }
}
