//! The leader-side lessor: lease deadlines, keep-alives and expiry.
//!
//! The MVCC state machine must stay deterministic, so it never reads a clock
//! (see [`crate::mvcc::lease`]). Time lives here, on the leader only:
//!
//! * **Grant / revoke** go through Raft. The API layer picks the id (etcd's
//!   layout: the member id's low 16 bits, then a millisecond timestamp and a
//!   counter), raises the TTL to the minimum, and stamps the leader's wall
//!   clock into the `LeaseGrant` entry.
//! * **Keep-alive** only moves the deadline held in memory here (as in etcd,
//!   keep-alives are not replicated one by one) and marks the lease dirty.
//!   Every [`TICK`] the ticker proposes one `LeaseCheckpoint` entry carrying
//!   the latest refresh time of every dirty lease, so the persisted refresh
//!   time trails the real one by at most a tick, whatever the keep-alive rate.
//! * **Expiry** is decided by the ticker on the leader: a lease whose deadline
//!   has passed is revoked with a `LeaseRevoke` entry, so every replica
//!   deletes the same keys at the same revision. At most
//!   [`MAX_REVOKES_PER_TICK`] per tick, like etcd's revoke rate limit.
//! * **Restart and leader change**: deadlines are rebuilt from the persisted
//!   table as `refresh time + TTL - now` (so time spent down counts, and a
//!   lease's remaining TTL survives a restart), and every lease last
//!   refreshed before this leadership began gets the election timeout added
//!   on top (at least that much if it would already have expired), so
//!   clients can reconnect and keep their leases alive instead of losing all
//!   of them at once. Persisting the refresh time rather than a remaining
//!   duration keeps checkpoints rare (only on keep-alive); it relies on the
//!   replicas' clocks roughly agreeing, which the extension absorbs.
//!
//! A follower answers TTL questions from the persisted table alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::mvcc::command::LeaseRefresh;
use crate::mvcc::lease::Lease;
use crate::mvcc::View;

/// How often the leader looks for expired leases and persists refreshes.
pub const TICK: Duration = Duration::from_millis(250);
/// Most leases revoked per tick (etcd revokes at most 1000 per second).
pub const MAX_REVOKES_PER_TICK: usize = 250;

/// etcd's minimum lease TTL in seconds: one and a half election timeouts
/// (counted in whole heartbeat ticks), rounded up to a second. 2 s with the
/// default 100 ms heartbeat and 1000 ms election timeout.
pub fn min_ttl_secs(election_timeout_ms: u64, heartbeat_interval_ms: u64) -> i64 {
    let hb = heartbeat_interval_ms.max(1);
    let election_ticks = election_timeout_ms / hb;
    let min_ms = (3 * election_ticks / 2) * hb;
    min_ms.div_ceil(1000) as i64
}

/// The two clocks the lessor uses: a monotonic one for deadlines and the
/// wall clock (unix ms) that is persisted in Raft entries.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub wall_ms: i64,
}

impl Clock {
    pub fn now() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            now: Instant::now(),
            wall_ms,
        }
    }
}

/// Why a keep-alive was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewError {
    /// No such lease, or it has expired and is being revoked.
    NotFound,
    /// This member is not the leader.
    NotLeader,
}

/// What one tick found to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickWork {
    /// Expired leases to revoke, earliest deadline first.
    pub revoke: Vec<i64>,
    /// Keep-alive refreshes to persist.
    pub checkpoint: Vec<LeaseRefresh>,
}

#[derive(Default)]
struct State {
    /// The leader term the deadlines belong to; `None` when not leader.
    term: Option<u64>,
    /// Wall clock when this leadership was first seen.
    promoted_ms: i64,
    deadlines: HashMap<i64, Instant>,
    /// Refreshes not yet persisted: lease id → wall clock of the keep-alive.
    dirty: BTreeMap<i64, i64>,
}

impl State {
    /// Follow a change of leadership: deadlines of another term are void.
    fn observe(&mut self, leader_term: Option<u64>, clock: Clock) {
        if self.term != leader_term {
            self.term = leader_term;
            self.promoted_ms = clock.wall_ms;
            self.deadlines.clear();
            self.dirty.clear();
        }
    }

    fn deadline(&mut self, id: i64, lease: &Lease, clock: Clock, extend: Duration) -> Instant {
        let promoted_ms = self.promoted_ms;
        *self
            .deadlines
            .entry(id)
            .or_insert_with(|| persisted_deadline(lease, clock, Some((promoted_ms, extend))))
    }
}

/// The deadline the persisted table gives `lease`. With `promotion =
/// Some((promoted_ms, extend))`, a lease last refreshed before the promotion
/// gets `extend` on top of what it has left (at least `extend`).
fn persisted_deadline(lease: &Lease, clock: Clock, promotion: Option<(i64, Duration)>) -> Instant {
    let ttl_ms = lease.ttl.saturating_mul(1000);
    let mut left_ms = lease
        .refreshed_ms
        .saturating_add(ttl_ms)
        .saturating_sub(clock.wall_ms);
    if let Some((promoted_ms, extend)) = promotion {
        if lease.refreshed_ms < promoted_ms {
            let extend_ms = i64::try_from(extend.as_millis()).unwrap_or(i64::MAX);
            left_ms = left_ms.max(0).saturating_add(extend_ms);
        }
    }
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    clock
        .now
        .checked_add(left)
        .unwrap_or_else(|| clock.now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The lessor of one member.
pub struct Lessor {
    state: Mutex<State>,
    /// Added to every lease's remaining time when leadership is taken.
    extend: Duration,
    min_ttl: i64,
    id_prefix: u64,
    id_seq: AtomicU64,
}

const ID_SUFFIX_BITS: u32 = 48;

impl Lessor {
    pub fn new(member_id: u64, config: &Config) -> Self {
        Self::with_timing(
            member_id,
            config.election_timeout_ms,
            config.heartbeat_interval_ms,
            Clock::now(),
        )
    }

    pub fn with_timing(
        member_id: u64,
        election_timeout_ms: u64,
        heartbeat_interval_ms: u64,
        clock: Clock,
    ) -> Self {
        let ts = (clock.wall_ms.max(0) as u64) & ((1 << 40) - 1);
        Self {
            state: Mutex::new(State::default()),
            extend: Duration::from_millis(election_timeout_ms),
            min_ttl: min_ttl_secs(election_timeout_ms, heartbeat_interval_ms),
            id_prefix: (member_id & 0xffff) << ID_SUFFIX_BITS,
            id_seq: AtomicU64::new(ts << 8),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every operation, so a panic
        // elsewhere while holding the lock does not make it unusable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The smallest TTL a lease is granted with, in seconds.
    pub fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    /// A fresh, positive lease id not in `view`.
    pub fn next_id(&self, view: &View) -> i64 {
        loop {
            let seq = self.id_seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id =
                ((self.id_prefix | (seq & ((1 << ID_SUFFIX_BITS) - 1))) & (i64::MAX as u64)) as i64;
            if id != 0 && !view.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// A keep-alive: restart lease `id`'s TTL. Returns the granted TTL.
    pub fn renew(
        &self,
        id: i64,
        view: &View,
        leader_term: Option<u64>,
        clock: Clock,
    ) -> Result<i64, RenewError> {
        if leader_term.is_none() {
            return Err(RenewError::NotLeader);
        }
        let lease = view.leases.get(&id).ok_or(RenewError::NotFound)?;
        let mut st = self.lock();
        st.observe(leader_term, clock);
        if st.deadline(id, lease, clock, self.extend) <= clock.now {
            // Expired: the revoke is on its way.
            return Err(RenewError::NotFound);
        }
        let ttl = Duration::from_secs(u64::try_from(lease.ttl).unwrap_or(0));
        let deadline = clock.now.checked_add(ttl).unwrap_or(clock.now);
        st.deadlines.insert(id, deadline);
        st.dirty.insert(id, clock.wall_ms);
        Ok(lease.ttl)
    }

    /// Time lease `id` has left; `None` if `view` has no such lease.
    pub fn remaining(
        &self,
        id: i64,
        view: &View,
        leader_term: Option<u64>,
        clock: Clock,
    ) -> Option<Duration> {
        let lease = view.leases.get(&id)?;
        let deadline = match leader_term {
            Some(_) => {
                let mut st = self.lock();
                st.observe(leader_term, clock);
                st.deadline(id, lease, clock, self.extend)
            }
            None => persisted_deadline(lease, clock, None),
        };
        Some(deadline.saturating_duration_since(clock.now))
    }

    /// Every lease of `view`, the one expiring first first (ties by id).
    pub fn by_expiry(&self, view: &View, leader_term: Option<u64>, clock: Clock) -> Vec<i64> {
        let mut all: Vec<(Instant, i64)> = match leader_term {
            Some(_) => {
                let mut st = self.lock();
                st.observe(leader_term, clock);
                view.leases
                    .iter()
                    .map(|(id, l)| (st.deadline(*id, l, clock, self.extend), *id))
                    .collect()
            }
            None => view
                .leases
                .iter()
                .map(|(id, l)| (persisted_deadline(l, clock, None), *id))
                .collect(),
        };
        all.sort();
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// One tick of the leader's bookkeeping: forget revoked leases, find the
    /// expired ones (at most `max_revokes`) and the refreshes to persist.
    pub fn tick(
        &self,
        view: &View,
        leader_term: Option<u64>,
        clock: Clock,
        max_revokes: usize,
    ) -> TickWork {
        let mut st = self.lock();
        st.observe(leader_term, clock);
        if leader_term.is_none() {
            return TickWork::default();
        }
        st.deadlines.retain(|id, _| view.leases.contains_key(id));
        let mut expired: Vec<(Instant, i64)> = Vec::new();
        for (id, lease) in view.leases.iter() {
            let d = st.deadline(*id, lease, clock, self.extend);
            if d <= clock.now {
                expired.push((d, *id));
            }
        }
        expired.sort();
        expired.truncate(max_revokes);
        let dirty = std::mem::take(&mut st.dirty);
        let checkpoint = dirty
            .into_iter()
            .filter(|(id, _)| view.leases.contains_key(id))
            .map(|(id, refreshed_ms)| LeaseRefresh { id, refreshed_ms })
            .collect();
        TickWork {
            revoke: expired.into_iter().map(|(_, id)| id).collect(),
            checkpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(base: Instant, wall0: i64, after_ms: u64) -> Clock {
        Clock {
            now: base + Duration::from_millis(after_ms),
            wall_ms: wall0 + after_ms as i64,
        }
    }

    fn view_with(leases: &[(i64, i64, i64)]) -> View {
        let mut v = View::default();
        for (id, ttl, at) in leases {
            v.leases.insert(*id, Lease::new(*ttl, *at));
        }
        v
    }

    #[test]
    fn min_ttl_follows_etcd() {
        assert_eq!(min_ttl_secs(1000, 100), 2);
        assert_eq!(min_ttl_secs(5000, 500), 8);
        assert_eq!(min_ttl_secs(500, 100), 1);
    }

    #[test]
    fn ids_are_unique_positive_and_member_prefixed() {
        let base = Instant::now();
        let l = Lessor::with_timing(
            0xb71f_7532_0dc0_6a6c,
            1000,
            100,
            clock(base, 1_700_000_000_000, 0),
        );
        let mut v = View::default();
        let a = l.next_id(&v);
        v.leases.insert(a + 1, Lease::new(5, 0));
        let b = l.next_id(&v);
        assert!(a > 0 && b > a + 1, "{a:x} {b:x}");
        assert_eq!((a as u64) >> 48, 0x6a6c);
        let neg = Lessor::with_timing(0xffff, 1000, 100, clock(base, 1, 0));
        assert!(neg.next_id(&v) > 0);
    }

    #[test]
    fn keepalive_moves_deadline_and_expiry_is_found_by_tick() {
        let base = Instant::now();
        let wall0 = 1_000_000;
        let l = Lessor::with_timing(1, 1000, 100, clock(base, wall0, 0));
        let term = Some(2);
        // Granted in this term, 2 s TTL, at wall0.
        let v = view_with(&[(7, 2, wall0), (8, 10, wall0)]);
        assert_eq!(
            l.tick(&v, term, clock(base, wall0, 0), 10),
            TickWork::default()
        );
        let rem = l.remaining(7, &v, term, clock(base, wall0, 500)).unwrap();
        assert_eq!(rem, Duration::from_millis(1500));
        assert_eq!(l.renew(7, &v, term, clock(base, wall0, 1500)), Ok(2));
        assert_eq!(
            l.renew(9, &v, term, clock(base, wall0, 1500)),
            Err(RenewError::NotFound)
        );
        assert_eq!(
            l.renew(7, &v, None, clock(base, wall0, 1500)),
            Err(RenewError::NotLeader)
        );
        let w = l.tick(&v, term, clock(base, wall0, 2500), 10);
        assert!(w.revoke.is_empty());
        assert_eq!(
            w.checkpoint,
            vec![LeaseRefresh {
                id: 7,
                refreshed_ms: wall0 + 1500
            }]
        );
        assert_eq!(l.by_expiry(&v, term, clock(base, wall0, 2500)), vec![7, 8]);
        let w = l.tick(&v, term, clock(base, wall0, 3500), 10);
        assert_eq!(w.revoke, vec![7]);
        assert!(w.checkpoint.is_empty());
        // Expired but not yet revoked: keep-alive no longer saves it.
        assert_eq!(
            l.renew(7, &v, term, clock(base, wall0, 3600)),
            Err(RenewError::NotFound)
        );
    }

    #[test]
    fn new_leadership_rebuilds_from_refresh_time_plus_extension() {
        let base = Instant::now();
        let wall0 = 5_000_000;
        let l = Lessor::with_timing(1, 1000, 100, clock(base, wall0, 0));
        // Lease 1: 30 s granted 10 s before; lease 2: long expired (cluster
        // was down); both were refreshed before this leadership began.
        let v = view_with(&[(1, 30, wall0 - 10_000), (2, 5, wall0 - 60_000)]);
        let c = clock(base, wall0, 0);
        assert_eq!(
            l.remaining(1, &v, Some(3), c),
            Some(Duration::from_millis(21_000))
        );
        assert_eq!(
            l.remaining(2, &v, Some(3), c),
            Some(Duration::from_millis(1000))
        );
        assert!(l.tick(&v, Some(3), c, 10).revoke.is_empty());
        assert_eq!(
            l.tick(&v, Some(3), clock(base, wall0, 1000), 10).revoke,
            vec![2]
        );
        // A follower reads the persisted table without extension.
        assert_eq!(
            l.remaining(1, &v, None, c),
            Some(Duration::from_millis(20_000))
        );
        // A grant made after the promotion is not extended.
        let v2 = view_with(&[(3, 10, wall0 + 100)]);
        let l2 = Lessor::with_timing(1, 1000, 100, c);
        assert!(l2.tick(&View::default(), Some(4), c, 10).revoke.is_empty());
        assert_eq!(
            l2.remaining(3, &v2, Some(4), clock(base, wall0, 100)),
            Some(Duration::from_secs(10))
        );
    }
}
