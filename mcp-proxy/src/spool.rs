//! The spool: a bounded, append-only queue of encoded events on disk, so
//! that an ingest outage delays events and loses none.
//!
//! Layout of the spool folder:
//!
//! ```text
//! 00000000000000000007.seg   records: [u32 LE length][u32 LE CRC-32 of payload][payload]
//! 00000000000000000008.seg   (only the newest segment is appended to)
//! cursor                     16 bytes: segment number, offset of the first unacknowledged record
//! ```
//!
//! Appends are fsynced before they return (a whole batch with one fsync), so
//! an event the proxy has spooled survives a crash. Records are read in
//! order from the cursor, and the cursor moves (written to a temporary file,
//! fsynced, renamed) only after ingest answered for them; a crash between
//! the answer and the move sends them again, and ingest answers DUPLICATE,
//! which is delivery too. Segments behind the cursor are deleted. A torn
//! record at the end of the newest segment (a crash during a write) is cut
//! off when the spool is opened.
//!
//! The spool is bounded by the bytes it holds that ingest has not yet
//! acknowledged; an append past the bound is refused, record by record.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: u64 = 8;
/// A length beyond this is corruption, not a record.
const MAX_RECORD: u32 = 16 * 1024 * 1024;
const CURSOR: &str = "cursor";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "the spool at {dir} is full: {held} bytes held, the bound is {max} bytes ({written} of the batch written)"
    )]
    Full {
        dir: PathBuf,
        held: u64,
        max: u64,
        written: usize,
    },
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a record of {0} bytes is larger than the spool's record limit")]
    TooLarge(usize),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a record ends: acknowledging it moves the cursor here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
pub struct Record {
    pub end: Position,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    len: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: File,
    cursor: Position,
    records: u64,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut numbers: Vec<u64> = fs::read_dir(dir)
            .map_err(io_at(dir))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                name.to_str()?.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let cursor = read_cursor(dir)?.unwrap_or(Position {
            segment: numbers.first().copied().unwrap_or(0),
            offset: 0,
        });
        let mut segments = VecDeque::new();
        for number in numbers {
            let path = segment_path(dir, number);
            if number < cursor.segment {
                fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            let len = fs::metadata(&path).map_err(io_at(&path))?.len();
            segments.push_back(Segment { number, len });
        }
        if segments.is_empty() {
            segments.push_back(Segment {
                number: cursor.segment,
                len: 0,
            });
        }
        let last = segments.back_mut().expect("one segment at least");
        let last_path = segment_path(dir, last.number);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&last_path)
            .map_err(io_at(&last_path))?;
        // Cut a torn tail: keep the records that read back whole.
        let whole = valid_prefix(&last_path)?;
        if whole < last.len {
            tracing::warn!(
                segment = %last_path.display(),
                kept = whole,
                cut = last.len - whole,
                "cutting a torn record off the end of the spool (a crash during a write)"
            );
            writer.set_len(whole).map_err(io_at(&last_path))?;
            writer.sync_all().map_err(io_at(&last_path))?;
            last.len = whole;
        }
        sync_dir(dir)?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 8 * 1024 * 1024),
            segments,
            writer,
            cursor,
            records: 0,
        };
        spool.records = spool.count_records()?;
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes held that ingest has not acknowledged.
    pub fn held_bytes(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.len).sum();
        total.saturating_sub(self.cursor.offset)
    }

    /// Records held that ingest has not acknowledged.
    pub fn held_records(&self) -> u64 {
        self.records
    }

    /// Appends records in order and fsyncs once. Returns how many were
    /// written; when the bound is reached the rest are refused with
    /// [`SpoolError::Full`] (the written ones stay written).
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<usize, SpoolError> {
        let mut written = 0;
        let mut full = None;
        for payload in payloads {
            if payload.len() > MAX_RECORD as usize {
                return Err(SpoolError::TooLarge(payload.len()));
            }
            let size = HEADER + payload.len() as u64;
            if self.held_bytes() + size > self.max_bytes {
                full = Some(SpoolError::Full {
                    dir: self.dir.clone(),
                    held: self.held_bytes(),
                    max: self.max_bytes,
                    written,
                });
                break;
            }
            if self
                .segments
                .back()
                .is_some_and(|s| s.len >= self.segment_bytes)
            {
                self.rotate()?;
            }
            let mut record = Vec::with_capacity(size as usize);
            record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            record.extend_from_slice(&crc32(payload).to_le_bytes());
            record.extend_from_slice(payload);
            let path = self.current_path();
            self.writer.write_all(&record).map_err(io_at(&path))?;
            self.segments.back_mut().expect("a segment").len += size;
            self.records += 1;
            written += 1;
        }
        if written > 0 {
            let path = self.current_path();
            self.writer.sync_data().map_err(io_at(&path))?;
        }
        match full {
            Some(err) => Err(err),
            None => Ok(written),
        }
    }

    /// Up to `max` records from the cursor, in the order they were appended.
    pub fn read(&self, max: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        let mut at = self.cursor;
        for segment in self
            .segments
            .iter()
            .filter(|s| s.number >= self.cursor.segment)
        {
            if out.len() >= max {
                break;
            }
            if segment.number > at.segment {
                at = Position {
                    segment: segment.number,
                    offset: 0,
                };
            }
            if at.offset >= segment.len {
                continue;
            }
            let path = segment_path(&self.dir, segment.number);
            let mut file = File::open(&path).map_err(io_at(&path))?;
            file.seek(SeekFrom::Start(at.offset))
                .map_err(io_at(&path))?;
            let mut reader = BufReader::new(file.take(segment.len - at.offset));
            while out.len() < max && at.offset < segment.len {
                match read_record(&mut reader).map_err(io_at(&path))? {
                    Some(payload) => {
                        at.offset += HEADER + payload.len() as u64;
                        out.push(Record { end: at, payload });
                    }
                    None => {
                        tracing::error!(
                            segment = %path.display(),
                            offset = at.offset,
                            "the spool segment is corrupt past this offset; its remaining records cannot be read and are skipped"
                        );
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ingest answered for every record up to `end`: move the cursor past
    /// them (durably) and delete segments nothing points into any more.
    pub fn ack(&mut self, end: Position, records: u64) -> Result<(), SpoolError> {
        if end <= self.cursor {
            return Ok(());
        }
        self.cursor = end;
        self.records = self.records.saturating_sub(records);
        let last = self.segments.back().map(|s| (s.number, s.len));
        if last == Some((end.segment, end.offset)) && end.offset > 0 {
            // Everything is acknowledged: start afresh so the file can go.
            self.rotate()?;
            self.cursor = Position {
                segment: self.segments.back().expect("a segment").number,
                offset: 0,
            };
            self.records = 0;
        }
        write_cursor(&self.dir, self.cursor)?;
        while self
            .segments
            .front()
            .is_some_and(|s| s.number < self.cursor.segment)
        {
            let old = self.segments.pop_front().expect("a segment");
            let path = segment_path(&self.dir, old.number);
            fs::remove_file(&path).map_err(io_at(&path))?;
        }
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        segment_path(&self.dir, self.segments.back().expect("a segment").number)
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        let number = self.segments.back().map_or(0, |s| s.number + 1);
        let path = segment_path(&self.dir, number);
        self.writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { number, len: 0 });
        Ok(())
    }

    /// Counts the held records by walking their headers (at open only).
    fn count_records(&self) -> Result<u64, SpoolError> {
        let mut count = 0;
        for segment in &self.segments {
            let mut offset = if segment.number == self.cursor.segment {
                self.cursor.offset
            } else {
                0
            };
            let path = segment_path(&self.dir, segment.number);
            let mut file = BufReader::new(File::open(&path).map_err(io_at(&path))?);
            let mut header = [0u8; HEADER as usize];
            while offset + HEADER <= segment.len {
                file.seek(SeekFrom::Start(offset)).map_err(io_at(&path))?;
                file.read_exact(&mut header).map_err(io_at(&path))?;
                let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
                offset += HEADER + u64::from(len);
                count += 1;
            }
        }
        Ok(count)
    }
}

fn read_record(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER as usize];
    if let Err(err) = reader.read_exact(&mut header) {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(err),
        };
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(err) = reader.read_exact(&mut payload) {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(err),
        };
    }
    Ok((crc32(&payload) == crc).then_some(payload))
}

/// The length of the run of whole records at the start of a segment.
fn valid_prefix(path: &Path) -> Result<u64, SpoolError> {
    let file = File::open(path).map_err(io_at(path))?;
    let mut reader = BufReader::new(file);
    let mut whole = 0;
    while let Some(payload) = read_record(&mut reader).map_err(io_at(path))? {
        whole += HEADER + payload.len() as u64;
    }
    Ok(whole)
}

fn read_cursor(dir: &Path) -> Result<Option<Position>, SpoolError> {
    let path = dir.join(CURSOR);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 16 => Ok(Some(Position {
            segment: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            offset: u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
        })),
        Ok(bytes) => Err(SpoolError::Io {
            path,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the cursor file has {} bytes, not 16: the spool folder holds something else",
                    bytes.len()
                ),
            ),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SpoolError::Io { path, source: err }),
    }
}

fn write_cursor(dir: &Path, at: Position) -> Result<(), SpoolError> {
    let tmp = dir.join("cursor.tmp");
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&at.segment.to_le_bytes());
    bytes[8..].copy_from_slice(&at.offset.to_le_bytes());
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(&bytes).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    let path = dir.join(CURSOR);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it): crc32fast's.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|n| format!("event-{n}").into_bytes()).collect()
    }

    fn texts(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.payload.clone()).expect("utf-8"))
            .collect()
    }

    #[test]
    fn crc32_is_the_ieee_one_that_spools_were_written_with() {
        // The standard check value: records written by any version read back.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_drain_in_order_and_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().expect("a folder");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(spool.append(&payloads(0..5)).expect("append"), 5);
        let first = spool.read(2).expect("read");
        assert_eq!(texts(&first), ["event-0", "event-1"]);
        spool.ack(first[1].end, 2).expect("ack");
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.held_records(), 3);
        let rest = spool.read(10).expect("read");
        assert_eq!(texts(&rest), ["event-2", "event-3", "event-4"]);
        spool.ack(rest[2].end, 3).expect("ack");
        assert_eq!((spool.held_bytes(), spool.held_records()), (0, 0));
        assert!(spool.read(10).expect("read").is_empty());
    }

    #[test]
    fn a_read_without_an_ack_is_read_again() {
        let dir = tempfile::tempdir().expect("a folder");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        spool.append(&payloads(0..3)).expect("append");
        let once = texts(&spool.read(3).expect("read"));
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(texts(&spool.read(3).expect("read")), once);
    }

    #[test]
    fn a_full_spool_refuses_appends_until_records_are_acknowledged() {
        let dir = tempfile::tempdir().expect("a folder");
        // Each record is 8 bytes of header + 7 of payload.
        let mut spool = Spool::open(dir.path(), 45).expect("open");
        let err = spool
            .append(&payloads(0..4))
            .expect_err("the fourth does not fit");
        assert!(
            matches!(
                err,
                SpoolError::Full {
                    held: 45,
                    max: 45,
                    written: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(spool.held_records(), 3);
        let read = spool.read(1).expect("read");
        spool.ack(read[0].end, 1).expect("ack");
        assert_eq!(spool.append(&payloads(3..4)).expect("room again"), 1);
        assert_eq!(
            texts(&spool.read(10).expect("read")),
            ["event-1", "event-2", "event-3"]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().expect("a folder");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        spool.append(&payloads(0..2)).expect("append");
        let segment = spool.current_path();
        drop(spool);
        // A crash in the middle of writing a third record.
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open segment");
        file.write_all(&[9, 0, 0, 0, 1, 2])
            .expect("write a torn header");
        drop(file);
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.held_records(), 2);
        spool.append(&payloads(2..3)).expect("append after the cut");
        assert_eq!(
            texts(&spool.read(10).expect("read")),
            ["event-0", "event-1", "event-2"]
        );
    }

    #[test]
    fn segments_rotate_and_drained_ones_are_deleted() {
        let dir = tempfile::tempdir().expect("a folder");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        spool.segment_bytes = 40;
        spool.append(&payloads(0..10)).expect("append");
        let segments = |dir: &Path| {
            fs::read_dir(dir)
                .expect("list")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                })
                .count()
        };
        assert!(segments(dir.path()) > 1);
        let all = spool.read(100).expect("read");
        assert_eq!(texts(&all).len(), 10);
        spool.ack(all[6].end, 7).expect("ack part");
        assert_eq!(
            texts(&spool.read(100).expect("read")),
            ["event-7", "event-8", "event-9"]
        );
        spool.ack(all[9].end, 3).expect("ack the rest");
        assert_eq!(segments(dir.path()), 1);
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.held_records(), 0);
    }
}
