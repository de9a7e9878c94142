//! Files written whole and replaced atomically: the member's identity
//! (`member`), the Raft hard state (`raft`) and the state machine's image
//! at the last snapshot (`state`).
//!
//! ```text
//! magic (8 bytes, one per file) | version: u8 = 1
//! record kind 1 (data)  ... one per MiB of the contents
//! record kind 2 (end)   total length: u64le, CRC-32 of the contents: u32le
//! ```
//!
//! Records are [`super::frame`]s, so damage is found and named with its
//! offset; the end record proves the file was not cut short. A file is
//! written to `NAME.tmp`, synced, renamed over `NAME`, and the directory is
//! synced: a crash leaves the old file or the new one, never a mix. A
//! leftover `NAME.tmp` is an interrupted write and is removed at open.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::frame::{self, Parsed};
use super::{damaged, io, sync_failed, StorageError, Syncer};

const VERSION: u8 = 1;
const KIND_DATA: u8 = 1;
const KIND_END: u8 = 2;
/// Contents per data record.
const CHUNK: usize = 1 << 20;

/// The whole files of a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// Who this data dir belongs to: member id, cluster id, name, token.
    Member,
    /// Raft's hard state: vote, last purged log id, committed log id.
    Raft,
    /// The state machine at its last snapshot.
    State,
}

impl Blob {
    pub const ALL: [Blob; 3] = [Blob::Member, Blob::Raft, Blob::State];

    /// The file's name in the data dir.
    pub fn name(self) -> &'static str {
        match self {
            Blob::Member => "member",
            Blob::Raft => "raft",
            Blob::State => "state",
        }
    }

    fn magic(self) -> &'static [u8; 8] {
        match self {
            Blob::Member => b"RAFTCDmb",
            Blob::Raft => b"RAFTCDrf",
            Blob::State => b"RAFTCDst",
        }
    }
}

/// The temporary name a new version of `blob` is written under.
pub fn tmp_name(blob: Blob) -> String {
    format!("{}.tmp", blob.name())
}

/// Frames what is written to it as data records of [`CHUNK`] bytes, after
/// the magic and version; [`Framer::finish`] adds the end record.
struct Framer<W: Write> {
    out: W,
    buf: Vec<u8>,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Framer<W> {
    fn new(blob: Blob, mut out: W) -> std::io::Result<Self> {
        out.write_all(blob.magic())?;
        out.write_all(&[VERSION])?;
        Ok(Self {
            out,
            buf: Vec::with_capacity(CHUNK),
            len: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    fn emit(&mut self, n: usize) -> std::io::Result<()> {
        let mut record = Vec::with_capacity(n + frame::HEADER);
        frame::put(&mut record, KIND_DATA, &self.buf[..n]);
        self.out.write_all(&record)?;
        self.buf.drain(..n);
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() {
            self.emit(self.buf.len())?;
        }
        let mut end = Vec::with_capacity(12);
        end.extend_from_slice(&self.len.to_le_bytes());
        end.extend_from_slice(&self.crc.clone().finalize().to_le_bytes());
        let mut record = Vec::new();
        frame::put(&mut record, KIND_END, &end);
        self.out.write_all(&record)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Framer<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.len += data.len() as u64;
        self.crc.update(data);
        while self.buf.len() >= CHUNK {
            self.emit(CHUNK)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encode `contents` as the file `blob`.
#[cfg(test)]
fn encode(blob: Blob, contents: &[u8]) -> Vec<u8> {
    let mut framer = Framer::new(blob, Vec::new()).unwrap_or_else(|_| unreachable!());
    framer
        .write_all(contents)
        .unwrap_or_else(|_| unreachable!());
    framer.finish().unwrap_or_else(|_| unreachable!())
}

/// Check and decode the file `blob` read from `path`.
fn decode(blob: Blob, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, StorageError> {
    let magic = blob.magic();
    if bytes.len() < magic.len() + 1 || &bytes[..magic.len()] != magic {
        return Err(damaged(
            path,
            0,
            format!("not a raftcd `{}` file (wrong magic bytes)", blob.name()),
        ));
    }
    if bytes[magic.len()] != VERSION {
        return Err(damaged(
            path,
            magic.len() as u64,
            format!(
                "file format version {} (this build reads version {VERSION}); was it written by a newer raftcd?",
                bytes[magic.len()]
            ),
        ));
    }
    let mut at = magic.len() + 1;
    let mut contents = Vec::new();
    loop {
        match frame::parse(&bytes[at..], CHUNK) {
            Parsed::Record {
                kind: KIND_DATA,
                payload,
                size,
            } => {
                contents.extend_from_slice(payload);
                at += size;
            }
            Parsed::Record {
                kind: KIND_END,
                payload,
                size,
            } => {
                let (len, crc) = match payload {
                    [l @ .., c0, c1, c2, c3] if l.len() == 8 => (
                        u64::from_le_bytes(l.try_into().unwrap_or_default()),
                        u32::from_le_bytes([*c0, *c1, *c2, *c3]),
                    ),
                    _ => return Err(damaged(path, at as u64, "malformed end record")),
                };
                if len != contents.len() as u64 || crc != crc32fast::hash(&contents) {
                    return Err(damaged(
                        path,
                        at as u64,
                        "contents do not match the end record (records missing or reordered)",
                    ));
                }
                if at + size != bytes.len() {
                    return Err(damaged(
                        path,
                        (at + size) as u64,
                        "bytes after the end record",
                    ));
                }
                return Ok(contents);
            }
            Parsed::Record { kind, .. } => {
                return Err(damaged(
                    path,
                    at as u64,
                    format!("unknown record kind {kind}"),
                ))
            }
            Parsed::Incomplete => {
                return Err(damaged(
                    path,
                    at as u64,
                    "file ends before its end record (truncated)",
                ))
            }
            Parsed::Bad(reason) => return Err(damaged(path, at as u64, reason)),
        }
    }
}

/// Read the file `blob` of the data dir `dir`; `None` if it does not exist.
pub fn read(dir: &Path, blob: Blob) -> Result<Option<Vec<u8>>, StorageError> {
    let path = dir.join(blob.name());
    match std::fs::read(&path) {
        Ok(bytes) => decode(blob, &path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, "read")(e)),
    }
}

/// Replace the file `blob` of `dir` with `contents`, durably: when this
/// returns, a crash leaves the new contents.
pub fn write(
    dir: &Path,
    blob: Blob,
    contents: &[u8],
    syncer: &dyn Syncer,
) -> Result<(), StorageError> {
    write_with(dir, blob, syncer, |w| w.write_all(contents))
}

/// [`write`] with contents that `fill` writes (streamed to the file, never
/// held whole).
pub fn write_with(
    dir: &Path,
    blob: Blob,
    syncer: &dyn Syncer,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), StorageError> {
    let path = dir.join(blob.name());
    let tmp = dir.join(tmp_name(blob));
    let f = std::fs::File::create(&tmp).map_err(io(&tmp, "create"))?;
    let mut framer = Framer::new(blob, std::io::BufWriter::new(f)).map_err(io(&tmp, "write"))?;
    fill(&mut framer).map_err(io(&tmp, "write"))?;
    let f = framer
        .finish()
        .map_err(io(&tmp, "write"))?
        .into_inner()
        .map_err(|e| io(&tmp, "write")(e.into_error()))?;
    syncer.sync_all(&f).map_err(sync_failed(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path, "rename"))?;
    sync_dir(dir, syncer)
}

/// Make the names in `dir` (files created, renamed or removed) durable.
pub fn sync_dir(dir: &Path, syncer: &dyn Syncer) -> Result<(), StorageError> {
    let d = std::fs::File::open(dir).map_err(io(dir, "open"))?;
    syncer.sync_all(&d).map_err(sync_failed(dir))
}

/// The path of `blob` in `dir`.
pub fn path(dir: &Path, blob: Blob) -> PathBuf {
    dir.join(blob.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsSync;

    #[test]
    fn written_whole_and_every_damage_refused_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), Blob::State).unwrap().is_none());
        let contents: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        write(dir.path(), Blob::State, &contents, &OsSync).unwrap();
        assert_eq!(read(dir.path(), Blob::State).unwrap().unwrap(), contents);
        assert!(!dir.path().join("state.tmp").exists());
        let good = std::fs::read(dir.path().join("state")).unwrap();

        let refused = |bytes: &[u8]| {
            std::fs::write(dir.path().join("state"), bytes).unwrap();
            match read(dir.path(), Blob::State) {
                Err(StorageError::Damaged {
                    file,
                    offset,
                    reason,
                }) => {
                    assert!(file.ends_with("state"));
                    (offset, reason)
                }
                other => panic!("not refused: {other:?}"),
            }
        };
        // A flipped bit in the second chunk: named at that record.
        let mut bad = good.clone();
        bad[9 + frame::HEADER + CHUNK + 500] ^= 4;
        let (offset, reason) = refused(&bad);
        assert_eq!(offset, (9 + frame::HEADER + CHUNK) as u64);
        assert_eq!(reason, "checksum mismatch");
        // Cut short anywhere: refused.
        for cut in [
            good.len() - 1,
            good.len() - 30,
            9 + frame::HEADER + CHUNK,
            9,
            3,
        ] {
            let (_, reason) = refused(&good[..cut]);
            assert!(
                reason.contains("truncated") || reason.contains("magic"),
                "{cut}: {reason}"
            );
        }
        // A whole record dropped: the end record does not match.
        let second = 9 + frame::HEADER + CHUNK;
        let mut dropped = good[..second].to_vec();
        dropped.extend_from_slice(&good[second + frame::HEADER + CHUNK..]);
        assert!(refused(&dropped).1.contains("do not match"));
        // Another file in its place.
        assert!(refused(b"some other file").1.contains("wrong magic"));
        let member = encode(Blob::Member, b"x");
        assert!(refused(&member).1.contains("wrong magic"));
        // Nothing refused was changed.
        assert_eq!(std::fs::read(dir.path().join("state")).unwrap(), member);
    }
}
