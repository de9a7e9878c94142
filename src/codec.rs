//! The one encoding raftcd writes to disk and sends to peers: a
//! format-version byte, then the postcard encoding of the value.
//!
//! A later release reads today's bytes or refuses them with a clear message;
//! a record whose layout changes gets a new version byte ([`encode_as`]) and
//! its reader dispatches on [`split_version`]. Peers speak the same encoding
//! ([`decode_wire`]), so members of different releases refuse each other
//! clearly instead of misreading each other.
//!
//! Decoding is safe on hostile bytes: every type decoded here is
//! non-recursive (a Raft batch holds single commands, see
//! [`crate::mvcc::command`]), and postcard never preallocates more than the
//! input can fill.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version byte in front of every persisted record and peer message.
pub const FORMAT_V1: u8 = 1;
/// Version 2: used by records whose layout grew after version 1 (the
/// snapshot body, which gained the lease table).
pub const FORMAT_V2: u8 = 2;
/// Version 3: the snapshot body with the auth store.
pub const FORMAT_V3: u8 = 3;
/// The newest format version this build reads.
pub const FORMAT_LATEST: u8 = FORMAT_V3;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unsupported data format version {found} (this build reads versions up to {FORMAT_LATEST}); was it written by a newer raftcd?")]
    Version { found: u8 },
    #[error("{0}")]
    Malformed(String),
}

/// Encode a value with the format-version byte 1 in front.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_as(FORMAT_V1, value)
}

/// Encode a value with an explicit format-version byte in front.
pub fn encode_as<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let out = vec![version];
    // postcard only fails on writer errors, and a Vec writer cannot fail.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(e) => unreachable!("postcard into Vec failed: {e}"),
    }
}

/// The format version of `bytes` and its payload; refuses versions newer
/// than this build reads.
pub fn split_version(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    match bytes.split_first() {
        Some((&v, payload)) if (FORMAT_V1..=FORMAT_LATEST).contains(&v) => Ok((v, payload)),
        Some((&v, _)) => Err(CodecError::Version { found: v }),
        None => Err(CodecError::Empty),
    }
}

/// Decode a payload (the bytes after its version byte).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(payload).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decode a version-1 value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match split_version(bytes)? {
        (FORMAT_V1, payload) => decode_payload(payload),
        (v, _) => Err(CodecError::Version { found: v }),
    }
}

/// Decode a peer message: version 1 only, with a message a user can act on.
pub fn decode_wire<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.first() {
        Some(&FORMAT_V1) => decode_payload(&bytes[1..]).map_err(|e| e.to_string()),
        Some(&v) => Err(format!(
            "peer message format {v} is not supported (this build speaks {FORMAT_V1})"
        )),
        None => Err("empty peer message".into()),
    }
}
