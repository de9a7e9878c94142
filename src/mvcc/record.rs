//! How the MVCC store is persisted: the record of one key revision, the
//! record of one lease, their storage keys, and the whole store as one
//! snapshot body (Raft snapshots and backup files carry it).
//!
//! These layouts are the data dir's and the backup file's format: a change
//! to any of them needs a new format version (see [`crate::codec`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::MvccError;
use super::key::IndexKey;
use super::lease::Lease;
use super::view::{Rev, View};
use crate::auth::AuthState;
use crate::codec::{
    decode_payload, encode_as, split_version, CodecError, FORMAT_V1, FORMAT_V2, FORMAT_V3,
};
use crate::storage::spill::Spill;

/// How one key revision is persisted (keyed by main and sub revision).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Option<serde_bytes::ByteBuf>,
}

/// Storage key of a record: main revision then sub revision, big endian, so
/// records sort in revision order.
pub fn record_key(main: i64, sub: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&(main as u64).to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// Inverse of [`record_key`].
pub fn parse_record_key(k: &[u8]) -> Option<(i64, u32)> {
    if k.len() != 12 {
        return None;
    }
    let main = u64::from_be_bytes(k[..8].try_into().ok()?) as i64;
    let sub = u32::from_be_bytes(k[8..].try_into().ok()?);
    Some((main, sub))
}

impl Record {
    pub fn from_rev(key: &Bytes, r: &Rev) -> Self {
        Record {
            key: key.to_vec(),
            create: r.create,
            version: r.version,
            lease: r.lease,
            value: r
                .value
                .as_ref()
                .map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
        }
    }

    pub fn into_rev(self, main: i64, sub: u32) -> (Bytes, Rev) {
        (
            Bytes::from(self.key),
            Rev {
                main,
                sub,
                create: self.create,
                version: self.version,
                lease: self.lease,
                value: self.value.map(|v| Bytes::from(v.into_vec())),
            },
        )
    }
}

/// How a lease is persisted (in `Space::Lease` and in snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl: i64,
    pub refreshed_ms: i64,
}

impl LeaseRecord {
    /// How `lease` is persisted (its keys are rebuilt from the records).
    pub fn of(lease: &Lease) -> Self {
        Self {
            ttl: lease.ttl,
            refreshed_ms: lease.refreshed_ms,
        }
    }
}

/// Storage key of a lease record.
pub fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// Inverse of [`lease_key`].
pub fn parse_lease_key(k: &[u8]) -> Option<i64> {
    Some(u64::from_be_bytes(k.try_into().ok()?) as i64)
}

/// The whole state machine as shipped in a snapshot (format version 3).
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub revision: i64,
    pub compact_revision: i64,
    pub records: Vec<(i64, u32, Record)>,
    /// The lease table; attached keys are rebuilt from the records.
    pub leases: Vec<(i64, LeaseRecord)>,
    /// The auth store (version 3 on; empty and disabled before).
    pub auth: AuthState,
}

/// Format version 2 of the snapshot body: before the auth store.
#[derive(Deserialize)]
struct SnapshotBodyV2 {
    revision: i64,
    compact_revision: i64,
    records: Vec<(i64, u32, Record)>,
    leases: Vec<(i64, LeaseRecord)>,
}

/// Format version 1 of the snapshot body: before leases.
#[derive(Deserialize)]
struct SnapshotBodyV1 {
    revision: i64,
    compact_revision: i64,
    records: Vec<(i64, u32, Record)>,
}

impl SnapshotBody {
    /// The versioned encoding of the body.
    pub fn encode(&self) -> Vec<u8> {
        encode_as(FORMAT_V3, self)
    }

    /// Decode a body of any supported format version.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match split_version(bytes)? {
            (FORMAT_V1, payload) => {
                let v1: SnapshotBodyV1 = decode_payload(payload)?;
                Ok(Self {
                    revision: v1.revision,
                    compact_revision: v1.compact_revision,
                    records: v1.records,
                    leases: Vec::new(),
                    auth: AuthState::default(),
                })
            }
            (FORMAT_V2, payload) => {
                let v2: SnapshotBodyV2 = decode_payload(payload)?;
                Ok(Self {
                    revision: v2.revision,
                    compact_revision: v2.compact_revision,
                    records: v2.records,
                    leases: v2.leases,
                    auth: AuthState::default(),
                })
            }
            (FORMAT_V3, payload) => decode_payload(payload),
            (found, _) => Err(CodecError::Version { found }),
        }
    }

    /// The whole of `view` as an owned body (tests and tools; the snapshot
    /// and backup paths encode straight from the view with [`encode_view`]).
    pub fn from_view(view: &View) -> Result<Self, MvccError> {
        let records = view
            .revisions()?
            .iter()
            .map(|(k, r)| (r.main, r.sub, Record::from_rev(k, r)))
            .collect();
        Ok(Self {
            revision: view.revision,
            compact_revision: view.compact_revision,
            records,
            leases: view
                .leases
                .iter()
                .map(|(id, l)| (*id, LeaseRecord::of(l)))
                .collect(),
            auth: (*view.auth).clone(),
        })
    }

    /// The store this body holds, its old revisions kept in memory.
    pub fn into_view(self) -> View {
        self.into_view_in(Spill::memory())
    }

    /// The store this body holds, its old revisions spilled to `spill`.
    pub fn into_view_in(self, spill: Spill) -> View {
        let mut view = View {
            revision: self.revision,
            compact_revision: self.compact_revision,
            auth: std::sync::Arc::new(self.auth),
            spill,
            ..View::default()
        };
        for (main, sub, rec) in self.records {
            let (key, rev) = rec.into_rev(main, sub);
            view.push_revision(IndexKey::new(key), rev);
        }
        view.spill.flush();
        for (id, r) in self.leases {
            view.leases.insert(id, Lease::new(r.ttl, r.refreshed_ms));
        }
        let orphans = view.attach_lease_keys();
        if orphans > 0 {
            tracing::warn!(orphans, "snapshot has live keys naming unknown leases");
        }
        view
    }
}

/// Encode `view` as a version-3 [`SnapshotBody`] without first copying it
/// into one: records are written straight from the index, key by key, each
/// key's history oldest first (the order [`SnapshotBody::into_view`] needs).
/// Fails only if an old revision cannot be read back from the spill.
pub fn encode_view(view: &View) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_view(view, &mut out)?;
    Ok(out)
}

/// [`encode_view`] streamed into `w`.
pub fn write_view(view: &View, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    w.write_all(&[FORMAT_V3])?;
    postcard::to_io(&BodyRef(view), w)
        .map(|_| ())
        .map_err(std::io::Error::other)
}

/// Serializes like [`SnapshotBody`] (same fields, same order), borrowing.
struct BodyRef<'a>(&'a View);

/// Serializes like [`Record`], borrowing.
struct RecordRef<'a> {
    key: &'a [u8],
    rev: &'a Rev,
}

/// The `records` field of [`BodyRef`].
struct RecordsRef<'a>(&'a View);

/// The `leases` field of [`BodyRef`].
struct LeasesRef<'a>(&'a View);

impl Serialize for BodyRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("SnapshotBody", 5)?;
        st.serialize_field("revision", &self.0.revision)?;
        st.serialize_field("compact_revision", &self.0.compact_revision)?;
        st.serialize_field("records", &RecordsRef(self.0))?;
        st.serialize_field("leases", &LeasesRef(self.0))?;
        st.serialize_field("auth", &*self.0.auth)?;
        st.end()
    }
}

impl Serialize for RecordsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let count = self.0.index.values().map(|h| h.len()).sum();
        let mut seq = s.serialize_seq(Some(count))?;
        for (key, history) in self.0.index.iter() {
            for rev in history.revs(&self.0.spill) {
                let rev = rev.map_err(serde::ser::Error::custom)?;
                let rev = &*rev;
                seq.serialize_element(&(
                    rev.main,
                    rev.sub,
                    RecordRef {
                        key: key.bytes(),
                        rev,
                    },
                ))?;
            }
        }
        seq.end()
    }
}

impl Serialize for RecordRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Record", 5)?;
        st.serialize_field("key", serde_bytes::Bytes::new(self.key))?;
        st.serialize_field("create", &self.rev.create)?;
        st.serialize_field("version", &self.rev.version)?;
        st.serialize_field("lease", &self.rev.lease)?;
        st.serialize_field(
            "value",
            &self.rev.value.as_deref().map(serde_bytes::Bytes::new),
        )?;
        st.end()
    }
}

impl Serialize for LeasesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.leases.len()))?;
        for (id, lease) in self.0.leases.iter() {
            seq.serialize_element(&(*id, LeaseRecord::of(lease)))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_bodies_load_without_auth_and_version_3_keeps_it() {
        #[derive(Serialize)]
        struct V2 {
            revision: i64,
            compact_revision: i64,
            records: Vec<(i64, u32, Record)>,
            leases: Vec<(i64, LeaseRecord)>,
        }
        let old = encode_as(
            FORMAT_V2,
            &V2 {
                revision: 5,
                compact_revision: -1,
                records: Vec::new(),
                leases: vec![(
                    3,
                    LeaseRecord {
                        ttl: 9,
                        refreshed_ms: 1,
                    },
                )],
            },
        );
        let view = SnapshotBody::decode(&old).unwrap().into_view();
        assert_eq!((view.revision, view.leases.len()), (5, 1));
        assert_eq!(*view.auth, AuthState::default());
        let mut auth = AuthState::default();
        auth.apply(&crate::auth::AuthChange::RoleAdd { name: "r".into() })
            .unwrap();
        let view = View {
            auth: std::sync::Arc::new(auth.clone()),
            ..view
        };
        let back = SnapshotBody::decode(&encode_view(&view).unwrap()).unwrap();
        assert_eq!(back.auth, auth);
        assert_eq!(*back.into_view().auth, auth);
    }

    #[test]
    fn version_1_snapshot_bodies_still_load() {
        #[derive(Serialize)]
        struct V1 {
            revision: i64,
            compact_revision: i64,
            records: Vec<(i64, u32, Record)>,
        }
        let rec = Record {
            key: b"k".to_vec(),
            create: 2,
            version: 1,
            lease: 0,
            value: Some(serde_bytes::ByteBuf::from(b"v".to_vec())),
        };
        let old = crate::codec::encode(&V1 {
            revision: 2,
            compact_revision: -1,
            records: vec![(2, 0, rec)],
        });
        let body = SnapshotBody::decode(&old).unwrap();
        assert!(body.leases.is_empty());
        let view = body.into_view();
        assert_eq!((view.revision, view.live_keys()), (2, 1));
        let mut v3 = SnapshotBody::from_view(&view).unwrap().encode();
        assert_eq!(v3[0], FORMAT_V3);
        v3[0] = 4;
        assert!(matches!(
            SnapshotBody::decode(&v3),
            Err(CodecError::Version { found: 4 })
        ));
    }
}
