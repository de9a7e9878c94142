//! Auth tokens: etcd's `--auth-token` providers.
//!
//! * **simple** (the default): a random 16-letter string, a dot, and the
//!   Raft index of the `Authenticate` entry that issued it. Authenticate
//!   goes through Raft, so every member registers the token when it applies
//!   that entry ([`SimpleTokens::register`]); a member that has not applied
//!   it yet sees from the index how long to wait. Each member keeps the
//!   tokens in memory with a time to live (`--auth-token-ttl`) that every
//!   successful use starts again, as etcd's TTL keeper does; they are gone
//!   after a restart, and deleting a user, changing its password or
//!   disabling auth drops its tokens.
//! * **jwt**: see [`super::jwt`]; self-verifying, nothing is kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// etcd's default `--auth-token-ttl`, in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300;
/// Letters in the random part of a simple token (etcd's
/// `defaultSimpleTokenLength`).
pub const SIMPLE_TOKEN_LENGTH: usize = 16;

/// A fresh random token prefix: 16 ASCII letters (`None` if the system's
/// random source failed).
pub fn random_prefix() -> Option<String> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; SIMPLE_TOKEN_LENGTH];
    let rng = ring::rand::SystemRandom::new();
    ring::rand::SecureRandom::fill(&rng, &mut bytes).ok()?;
    // 256 % 52 != 0: the bias is below one letter in 50, harmless for a
    // 16-letter token (about 91 bits).
    Some(
        bytes
            .iter()
            .map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char)
            .collect(),
    )
}

/// The Raft index a simple token names, if it has the token's shape.
pub fn token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.len() != SIMPLE_TOKEN_LENGTH || !prefix.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    index.parse().ok()
}

struct Entry {
    user: String,
    deadline: Instant,
}

/// Every simple token this member knows, with its user and deadline.
pub struct SimpleTokens {
    ttl: Duration,
    tokens: Mutex<HashMap<String, Entry>>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves a consistent map: go on.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `token` for `user`, applied now; `issued_ms` is the wall
    /// clock of the member that issued it: a token whose time to live ran
    /// out before this member applied its entry (a log replayed after a
    /// restart) is not registered.
    pub fn register(&self, token: String, user: String, issued_ms: i64, now_ms: i64) {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        if issued_ms.saturating_add(ttl_ms) < now_ms {
            return;
        }
        let now = Instant::now();
        let mut tokens = self.lock();
        tokens.retain(|_, e| e.deadline > now);
        tokens.insert(
            token,
            Entry {
                user,
                deadline: now + self.ttl,
            },
        );
    }

    /// The user of a live token, its time to live started again; `None`
    /// for an unknown or expired one.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut tokens = self.lock();
        let entry = tokens.get_mut(token)?;
        if entry.deadline <= now {
            tokens.remove(token);
            return None;
        }
        entry.deadline = now + self.ttl;
        Some(entry.user.clone())
    }

    /// Drop every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.lock().retain(|_, e| e.user != user);
    }

    /// Drop every token (auth disabled).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many tokens are held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_indices() {
        let p = random_prefix().unwrap();
        assert_eq!(p.len(), 16);
        assert_ne!(Some(&p), random_prefix().as_ref());
        assert_eq!(token_index(&format!("{p}.42")), Some(42));
        assert_eq!(token_index("short.42"), None);
        assert_eq!(token_index(&format!("{p}42")), None);
        assert_eq!(token_index(&format!("{p}.x")), None);
    }

    #[test]
    fn use_refreshes_and_idleness_expires() {
        let t = SimpleTokens::new(Duration::from_millis(200));
        t.register("a".into(), "alice".into(), 1_000, 1_000);
        t.register("b".into(), "bob".into(), 1_000, 1_000);
        // Too old when applied: not registered.
        t.register("c".into(), "carol".into(), 0, 1_000);
        assert_eq!(t.user_of("c"), None);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(120));
            assert_eq!(t.user_of("a").as_deref(), Some("alice"));
        }
        assert_eq!(t.user_of("b"), None, "unused for longer than the TTL");
        t.invalidate_user("alice");
        assert_eq!(t.user_of("a"), None);
    }
}
