//! The lease table of the MVCC store: the deterministic half of etcd's
//! leases.
//!
//! A lease here is what every replica agrees on: its id, the TTL it was
//! granted with, the wall-clock time (unix ms, stamped by the leader into the
//! Raft entry, never read at apply time) of its grant or last persisted
//! keep-alive, and the keys attached to it. Expiry itself is not decided
//! here: the leader's lessor (`crate::lessor`) keeps the live deadlines and
//! proposes a `LeaseRevoke` through Raft when one passes, so every replica
//! deletes the same keys at the same revision.
//!
//! Attached keys are not persisted separately: a key belongs to the lease
//! recorded in its latest live revision, so [`super::View::attach_lease_keys`]
//! rebuilds the key sets from the key index after a restart or a snapshot.

use bytes::Bytes;
use imbl::OrdSet;

/// The largest TTL a lease may be granted with, in seconds (etcd's
/// `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// One lease as every replica knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// Leader wall clock (unix ms) at the grant or the last persisted refresh.
    pub refreshed_ms: i64,
    /// Keys whose latest revision is attached to this lease, in key order.
    pub keys: OrdSet<Bytes>,
}

impl Lease {
    pub fn new(ttl: i64, refreshed_ms: i64) -> Self {
        Self {
            ttl,
            refreshed_ms,
            keys: OrdSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::apply::{apply, Applied};
    use crate::mvcc::View;
    use crate::mvcc::{Command, MvccError, Reply};
    use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
    use crate::pb::mvccpb::event::EventType;

    fn run(v: &View, cmd: Command) -> Applied {
        apply(v, &cmd)
    }

    fn ok(v: &View, cmd: Command) -> View {
        let a = run(v, cmd);
        assert!(!matches!(a.reply, Reply::Error(_)), "{:?}", a.reply);
        a.view
    }

    fn put(key: &str, lease: i64) -> Command {
        Command::Put(PutRequest {
            key: key.to_string().into(),
            value: "v".into(),
            lease,
            ..Default::default()
        })
    }

    fn grant(id: i64, ttl: i64) -> Command {
        Command::LeaseGrant {
            id,
            ttl,
            granted_ms: 1000,
        }
    }

    fn keys(v: &View, id: i64) -> Vec<String> {
        v.leases[&id]
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn grant_checks_id_ttl_and_duplicates_without_a_new_revision() {
        let v = View::default();
        let a = run(&v, grant(7, 30));
        let Reply::LeaseGrant(g) = &a.reply else {
            panic!("{:?}", a.reply)
        };
        assert_eq!(
            (g.id, g.ttl, g.header.as_ref().map(|h| h.revision)),
            (7, 30, Some(1))
        );
        let lease = &a.view.leases[&7];
        assert_eq!((lease.ttl, lease.refreshed_ms), (30, 1000));
        let v = a.view;
        assert_eq!(v.revision, 1);
        assert!(matches!(
            run(&v, grant(7, 5)).reply,
            Reply::Error(MvccError::LeaseExists)
        ));
        assert!(matches!(
            run(&v, grant(0, 5)).reply,
            Reply::Error(MvccError::LeaseNotFound)
        ));
        assert!(matches!(
            run(&v, grant(8, MAX_LEASE_TTL + 1)).reply,
            Reply::Error(MvccError::LeaseTtlTooLarge)
        ));
        assert!(matches!(
            run(&v, grant(8, MAX_LEASE_TTL)).reply,
            Reply::LeaseGrant(_)
        ));
    }

    #[test]
    fn put_attaches_moves_and_delete_detaches() {
        let v = ok(&View::default(), grant(1, 30));
        let v = ok(&v, grant(2, 30));
        // Unknown lease: rejected, nothing changes.
        let bad = run(&v, put("a", 9));
        assert!(matches!(bad.reply, Reply::Error(MvccError::LeaseNotFound)));
        assert!(bad.view.index.is_empty() && bad.events.is_empty());
        assert_eq!(bad.view.revision, v.revision);

        let v = ok(&v, put("a", 1));
        let v = ok(&v, put("b", 1));
        assert_eq!(keys(&v, 1), ["a", "b"]);
        // Moving a key to another lease, then to none.
        let v = ok(&v, put("a", 2));
        assert_eq!(
            (keys(&v, 1), keys(&v, 2)),
            (vec!["b".to_string()], vec!["a".to_string()])
        );
        let v = ok(&v, put("a", 0));
        assert!(keys(&v, 2).is_empty());
        // ignore_lease keeps the key's lease.
        let v = ok(
            &v,
            Command::Put(PutRequest {
                key: "b".into(),
                value: "w".into(),
                ignore_lease: true,
                ..Default::default()
            }),
        );
        assert_eq!(keys(&v, 1), ["b"]);
        let kv = &v
            .range(
                &RangeRequest {
                    key: "b".into(),
                    ..Default::default()
                },
                v.revision,
            )
            .unwrap()
            .kvs[0];
        assert_eq!((kv.lease, &kv.value[..]), (1, &b"w"[..]));
        // Deleting detaches.
        let v = ok(
            &v,
            Command::DeleteRange(DeleteRangeRequest {
                key: "b".into(),
                ..Default::default()
            }),
        );
        assert!(keys(&v, 1).is_empty());
    }

    #[test]
    fn revoke_deletes_every_attached_key_in_one_revision() {
        let v = ok(&View::default(), grant(1, 30));
        let v = ok(&v, put("x", 1));
        let v = ok(&v, put("y", 1));
        let v = ok(&v, put("z", 0));
        let rev = v.revision;
        let a = run(&v, Command::LeaseRevoke { id: 1 });
        let Reply::LeaseRevoke(r) = &a.reply else {
            panic!("{:?}", a.reply)
        };
        assert_eq!(r.header.as_ref().map(|h| h.revision), Some(rev + 1));
        assert_eq!(a.view.revision, rev + 1);
        assert!(!a.view.leases.contains_key(&1));
        let deleted: Vec<_> = a
            .events
            .iter()
            .map(|e| (e.r#type, e.kv.as_ref().map(|kv| kv.key.clone())))
            .collect();
        assert_eq!(
            deleted,
            vec![
                (EventType::Delete as i32, Some("x".into())),
                (EventType::Delete as i32, Some("y".into()))
            ]
        );
        assert!(a
            .events
            .iter()
            .all(|e| e.kv.as_ref().map(|k| k.mod_revision) == Some(rev + 1)));
        assert_eq!(a.view.live_keys(), 1);
        assert!(matches!(
            run(&a.view, Command::LeaseRevoke { id: 1 }).reply,
            Reply::Error(MvccError::LeaseNotFound)
        ));
        // A lease without keys: revoked without a new revision.
        let v = ok(&a.view, grant(2, 5));
        let b = run(&v, Command::LeaseRevoke { id: 2 });
        assert!(matches!(b.reply, Reply::LeaseRevoke(_)));
        assert_eq!(b.view.revision, v.revision);
    }

    #[test]
    fn checkpoint_records_newer_refreshes_of_existing_leases() {
        use crate::mvcc::command::LeaseRefresh;
        let v = ok(&View::default(), grant(1, 30));
        let a = run(
            &v,
            Command::LeaseCheckpoint {
                refreshes: vec![
                    LeaseRefresh {
                        id: 1,
                        refreshed_ms: 5000,
                    },
                    LeaseRefresh {
                        id: 2,
                        refreshed_ms: 5000,
                    },
                ],
            },
        );
        assert!(matches!(a.reply, Reply::LeaseCheckpoint(1)));
        assert_eq!(a.view.leases[&1].refreshed_ms, 5000);
        assert_eq!(a.view.revision, v.revision);
        let older = run(
            &a.view,
            Command::LeaseCheckpoint {
                refreshes: vec![LeaseRefresh {
                    id: 1,
                    refreshed_ms: 10,
                }],
            },
        );
        assert_eq!(older.view.leases[&1].refreshed_ms, 5000);
        assert!(matches!(older.reply, Reply::LeaseCheckpoint(0)));
    }

    #[test]
    fn key_sets_rebuild_from_the_index() {
        let v = ok(&View::default(), grant(1, 30));
        let v = ok(&v, put("a", 1));
        let v = ok(&v, put("b", 1));
        let v = ok(&v, put("b", 0));
        let mut copy = v.clone();
        copy.leases.insert(1, Lease::new(30, 1000));
        assert_eq!(copy.attach_lease_keys(), 0);
        assert_eq!(copy.leases, v.leases);
        copy.leases.remove(&1);
        assert_eq!(copy.attach_lease_keys(), 1);
    }
}
