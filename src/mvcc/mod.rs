//! The MVCC key-value store: etcd's data model, deterministic and free of
//! networking.
//!
//! * [`View`] is an immutable, cheaply clonable snapshot of the whole store:
//!   an ordered map from key to that key's revision history. Readers take the
//!   current view from an `ArcSwap` without any lock and answer ranges at any
//!   uncompacted revision from it, so history never slows latest reads and a
//!   write never blocks a read.
//! * [`apply`] executes committed commands (put, delete-range, txn, compact)
//!   against a working copy of the view and collects the records to persist;
//!   the Raft state machine writes those in one atomic batch together with the
//!   last applied log id and then publishes the new view.
//! * [`lease`] is the lease table: granted leases and their attached keys.
//!   Grants, revokes (which delete the attached keys in one revision) and
//!   refresh checkpoints are commands like any other; the clock never is.
//! * [`record`] is the persisted form: key revision and lease records, and
//!   the snapshot body that Raft snapshots and backups carry.
//! * [`auth`] applies auth changes and checks a request against the auth
//!   store (held in the view, [`crate::auth::AuthState`]) when applied.
//! * [`validate`] holds the request checks etcd makes before proposing
//!   (empty keys, duplicate keys in a txn, too many txn ops).
//!
//! The command language is etcd's own request messages (`etcdserverpb`), as in
//! etcd's applier; nothing here knows gRPC or Raft.

pub mod apply;
pub mod auth;
pub mod command;
pub mod history;
pub mod key;
pub mod lease;
pub mod record;
pub mod validate;
pub mod view;

pub use command::{Command, MvccError, Reply};
pub use view::{ReadView, Rev, View};

/// The range end selecting every key with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> bytes::Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return bytes::Bytes::from(end);
        }
        end.pop();
    }
    bytes::Bytes::from_static(&[0])
}
