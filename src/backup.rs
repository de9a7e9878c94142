//! The backup file format streamed by Maintenance.Snapshot and read by
//! `raftcd snapshot restore`.
//!
//! Layout: the magic `RAFTCDBK`, the versioned encoding of the state machine
//! ([`SnapshotBody`]), zero padding to a multiple of 512 bytes, then the
//! SHA-256 of everything before it. That is the shape `etcdctl snapshot
//! save` checks (size % 512 == 32, a SHA-256 trailer).

use sha2::{Digest, Sha256};

use crate::codec::CodecError;
use crate::mvcc::record::{encode_view, SnapshotBody};
use crate::mvcc::View;

const MAGIC: &[u8; 8] = b"RAFTCDBK";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a raftcd backup (bad magic)")]
    BadMagic,
    #[error("backup is truncated or not padded to 512 bytes")]
    BadSize,
    #[error("backup checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backup body: {0}")]
    Body(#[from] CodecError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Serialize `view` as a backup file (fails only if an old revision cannot
/// be read back from the spill).
pub fn write_backup(view: &View) -> std::io::Result<Vec<u8>> {
    let body = encode_view(view)?;
    let mut out = Vec::with_capacity(body.len() + 560);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
    let padded = out.len().div_ceil(512) * 512;
    out.resize(padded, 0);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Check and parse a backup file.
pub fn read_backup(bytes: &[u8]) -> Result<View, BackupError> {
    if bytes.len() < 512 + 32 || bytes.len() % 512 != 32 {
        return Err(BackupError::BadSize);
    }
    let (data, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(data).as_slice() != sum {
        return Err(BackupError::Checksum);
    }
    if &data[..8] != MAGIC {
        return Err(BackupError::BadMagic);
    }
    let len =
        u64::from_be_bytes(data[8..16].try_into().map_err(|_| BackupError::BadSize)?) as usize;
    let body = data
        .get(16..)
        .and_then(|rest| rest.get(..len))
        .ok_or(BackupError::BadSize)?;
    let body = SnapshotBody::decode(body)?;
    Ok(body.into_view())
}

/// `raftcd snapshot restore`: check `file` and seed a new data dir with it.
/// Returns the restored revision.
pub fn restore(file: &std::path::Path, data_dir: &std::path::Path) -> Result<i64, BackupError> {
    let bytes = std::fs::read(file).map_err(|source| BackupError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let mut view = read_backup(&bytes)?;
    // A restored lease starts its TTL afresh, as etcd's do: the clients that
    // kept it alive cannot have done so while the backup sat on disk.
    let now_ms = crate::lessor::Clock::now().wall_ms;
    let ids: Vec<i64> = view.leases.keys().copied().collect();
    for id in ids {
        if let Some(l) = view.leases.get_mut(&id) {
            l.refreshed_ms = now_ms;
        }
    }
    let storage =
        crate::storage::Storage::open(data_dir, std::sync::Arc::new(crate::storage::OsSync))?;
    crate::raft::state_machine::StateMachine::seed(&storage, &view)?;
    Ok(view.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::apply::apply;
    use crate::mvcc::Command;
    use crate::pb::etcdserverpb::PutRequest;

    #[test]
    fn backup_roundtrip_and_etcdctl_shape() {
        let v = View::default();
        let v = apply(
            &v,
            &Command::LeaseGrant {
                id: 9,
                ttl: 20,
                granted_ms: 5,
            },
        )
        .view;
        let v = apply(
            &v,
            &Command::Put(PutRequest {
                key: "k".into(),
                value: "v".into(),
                lease: 9,
                ..Default::default()
            }),
        )
        .view;
        let b = write_backup(&v).unwrap();
        assert_eq!(b.len() % 512, 32);
        let back = read_backup(&b).unwrap();
        assert_eq!(back.revision, 2);
        assert_eq!(back.hash_kv(0).unwrap(), v.hash_kv(0).unwrap());
        assert_eq!(back.leases, v.leases);
        assert_eq!(back.leases[&9].keys.len(), 1);
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(matches!(read_backup(&bad), Err(BackupError::Checksum)));
    }

    /// Found by the `read_backup` fuzz target: a checksummed file whose
    /// length field is near `u64::MAX` overflowed `16 + len` (a panic in
    /// debug builds) instead of being refused.
    #[test]
    fn a_huge_length_field_is_refused() {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&(u64::MAX - 3).to_be_bytes());
        file.resize(512, 0);
        let sum = Sha256::digest(&file);
        file.extend_from_slice(&sum);
        assert!(matches!(read_backup(&file), Err(BackupError::BadSize)));
    }
}
