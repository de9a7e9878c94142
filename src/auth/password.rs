//! Password hashing as etcd does it: bcrypt (`golang.org/x/crypto/bcrypt`),
//! cost 10 by default (`--bcrypt-cost`), written in the `$2a$` form Go
//! writes. Both calls are slow on purpose (tens of milliseconds at cost 10):
//! callers run them on the blocking pool.

/// etcd's default `--bcrypt-cost` (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The range Go's bcrypt (and so etcd) accepts.
pub const MIN_BCRYPT_COST: u32 = 4;
pub const MAX_BCRYPT_COST: u32 = 31;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// The bcrypt hash of `password` at `cost` (bcrypt reads at most 72 bytes
/// of it, as Go's did in etcd 3.4).
pub fn hash(password: &str, cost: u32) -> Result<String, HashError> {
    bcrypt::hash_with_result(password, cost)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `hash` (a malformed hash matches nothing).
pub fn verify(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_look_like_go_s() {
        let h = hash("s3cret", MIN_BCRYPT_COST).unwrap();
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cre", &h));
        assert!(!verify("s3cret", "not a hash"));
    }
}
