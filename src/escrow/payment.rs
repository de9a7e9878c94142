//! A signed MPE payment and the address that signed it.
//!
//! The signed message is `"__MPE_claim_message" ‖ MPE contract address (20
//! bytes) ‖ channel id ‖ nonce ‖ amount` (each a 32-byte big-endian
//! uint256), hashed with keccak-256, then wrapped as an Ethereum signed
//! message (`"\x19Ethereum Signed Message:\n32" ‖ hash`) and hashed again;
//! the 65-byte signature `r ‖ s ‖ v` (v in {0, 1, 27, 28}) recovers the
//! signer over secp256k1. docs/escrow.md says where this layout was checked.
//! Keccak, secp256k1 and EIP-55 are alloy-primitives' (with k256), none of
//! it is written here.

use alloy_primitives::{keccak256, Address, Signature, B256, U256};

/// The prefix of every MPE payment message.
pub const MESSAGE_PREFIX: &[u8] = b"__MPE_claim_message";

/// Why a payment's parts are refused; each says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("signature: {0}")]
    Signature(String),
    #[error("{what} {value:?}: {reason}")]
    Field {
        what: &'static str,
        value: String,
        reason: String,
    },
}

/// One payment: channel `channel_id` of contract `mpe_contract`, at
/// `nonce`, authorizing `amount` in all, signed by the channel's signer or
/// sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub mpe_contract: Address,
    pub channel_id: U256,
    pub nonce: U256,
    pub amount: U256,
    pub signature: [u8; 65],
}

/// keccak-256 of the payment message.
pub fn message_hash(mpe_contract: Address, channel_id: U256, nonce: U256, amount: U256) -> B256 {
    let mut m = Vec::with_capacity(MESSAGE_PREFIX.len() + 20 + 3 * 32);
    m.extend_from_slice(MESSAGE_PREFIX);
    m.extend_from_slice(mpe_contract.as_slice());
    m.extend_from_slice(&channel_id.to_be_bytes::<32>());
    m.extend_from_slice(&nonce.to_be_bytes::<32>());
    m.extend_from_slice(&amount.to_be_bytes::<32>());
    keccak256(&m)
}

/// The digest actually signed: `hash` as an Ethereum signed message.
pub fn signed_digest(hash: B256) -> B256 {
    let mut m = Vec::with_capacity(28 + 32);
    m.extend_from_slice(b"\x19Ethereum Signed Message:\n32");
    m.extend_from_slice(hash.as_slice());
    keccak256(&m)
}

impl Payment {
    /// The digest this payment's signature signs.
    pub fn digest(&self) -> B256 {
        signed_digest(message_hash(
            self.mpe_contract,
            self.channel_id,
            self.nonce,
            self.amount,
        ))
    }

    /// The address whose key made the signature.
    pub fn signer(&self) -> Result<Address, PaymentError> {
        let sig = &self.signature;
        let parity = match sig[64] {
            0 | 27 => false,
            1 | 28 => true,
            v => {
                return Err(PaymentError::Signature(format!(
                    "v is {v}; it must be 0, 1, 27 or 28"
                )))
            }
        };
        let r = U256::from_be_slice(&sig[..32]);
        let s = U256::from_be_slice(&sig[32..64]);
        Signature::new(r, s, parity)
            .recover_address_from_prehash(&self.digest())
            .map_err(|e| PaymentError::Signature(format!("recovers no key: {e}")))
    }
}

/// `0x`-prefixed (or bare) hex of exactly 65 bytes.
pub fn parse_signature(s: &str) -> Result<[u8; 65], PaymentError> {
    let bytes = parse_hex(s).map_err(PaymentError::Signature)?;
    <[u8; 65]>::try_from(bytes.as_slice()).map_err(|_| {
        PaymentError::Signature(format!(
            "{} bytes; a signature is 65 (r, s, v)",
            bytes.len()
        ))
    })
}

/// A 20-byte address in hex; mixed case must be a valid EIP-55 checksum.
pub fn parse_address(what: &'static str, s: &str) -> Result<Address, PaymentError> {
    let bad = |reason: String| PaymentError::Field {
        what,
        value: s.to_string(),
        reason,
    };
    let hex = s.strip_prefix("0x").unwrap_or(s);
    let bytes = parse_hex(hex).map_err(bad)?;
    let addr = <[u8; 20]>::try_from(bytes.as_slice())
        .map(Address::from)
        .map_err(|_| bad(format!("{} bytes; an address is 20", bytes.len())))?;
    let mixed =
        hex.chars().any(|c| c.is_ascii_lowercase()) && hex.chars().any(|c| c.is_ascii_uppercase());
    if mixed && addr.to_checksum(None)[2..] != *hex {
        return Err(bad(format!(
            "bad EIP-55 checksum (expected {})",
            addr.to_checksum(None)
        )));
    }
    Ok(addr)
}

/// A uint256 in decimal, or hex with `0x`.
pub fn parse_u256(what: &'static str, s: &str) -> Result<U256, PaymentError> {
    let bad = |reason: &str| PaymentError::Field {
        what,
        value: s.to_string(),
        reason: reason.to_string(),
    };
    let t = s.trim();
    let (digits, radix) = match t.strip_prefix("0x") {
        Some(h) => (h, 16),
        None => (t, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad("not a non-negative integer"));
    }
    U256::from_str_radix(digits, radix as u64).map_err(|_| bad("above 2^256-1"))
}

/// `0x`-prefixed lowercase hex of `bytes`: how signatures, group ids and
/// the like are written everywhere in escrow (store, gRPC, CLI).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Hex (`0x` optional) to bytes; the error says where it is not hex.
pub(crate) fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let h = s.trim();
    let h = h.strip_prefix("0x").unwrap_or(h);
    if !h.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", h.len()));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(h.get(i..i + 2).unwrap_or(""), 16)
                .map_err(|_| format!("not hex at character {}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_with_clear_reasons() {
        assert_eq!(
            parse_u256(
                "amount",
                "115792089237316195423570985008687907853269984665640564039457584007913129639935"
            )
            .unwrap(),
            U256::MAX
        );
        let e = parse_u256(
            "amount",
            "115792089237316195423570985008687907853269984665640564039457584007913129639936",
        )
        .unwrap_err();
        assert!(e.to_string().contains("above 2^256-1"), "{e}");
        assert!(parse_u256("nonce", "-1").is_err());
        assert_eq!(parse_u256("nonce", "0x10").unwrap(), U256::from(16));
        let e = parse_signature("0x1234").unwrap_err();
        assert_eq!(
            e.to_string(),
            "signature: 2 bytes; a signature is 65 (r, s, v)"
        );
        let e = parse_signature("zz").unwrap_err();
        assert!(e.to_string().contains("not hex"), "{e}");
        let e = parse_address("sender", "0x12").unwrap_err();
        assert!(e.to_string().contains("an address is 20"), "{e}");
        let good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert!(parse_address("sender", good).is_ok());
        assert!(parse_address("sender", &good.to_lowercase()).is_ok());
        let e = parse_address("sender", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").unwrap_err();
        assert!(e.to_string().contains("EIP-55"), "{e}");
    }

    /// Signed payments made by Python eth-account (tests/data/README.md):
    /// every one recovers its signer; changing any signed field, or the
    /// contract, recovers someone else.
    #[test]
    fn independent_vectors_recover_and_tampering_is_caught() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/escrow_vectors.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vectors = json["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 10);
        let mut forms = std::collections::BTreeSet::new();
        for v in vectors {
            let field = |k: &str| v[k].as_str().unwrap().to_string();
            let name = field("name");
            let p = Payment {
                mpe_contract: parse_address("mpe_contract", &field("mpe_contract")).unwrap(),
                channel_id: parse_u256("channel_id", &field("channel_id")).unwrap(),
                nonce: parse_u256("nonce", &field("nonce")).unwrap(),
                amount: parse_u256("amount", &field("amount")).unwrap(),
                signature: parse_signature(&field("signature")).unwrap(),
            };
            forms.insert(p.signature[64]);
            let hash = message_hash(p.mpe_contract, p.channel_id, p.nonce, p.amount);
            assert_eq!(format!("{hash}"), field("message_hash"), "{name}");
            assert_eq!(format!("{}", p.digest()), field("digest"), "{name}");
            let signer = p.signer().unwrap();
            assert_eq!(signer.to_checksum(None), field("signer"), "{name}");
            let one = U256::from(1);
            let tampered = [
                Payment {
                    amount: p.amount.wrapping_add(one),
                    ..p.clone()
                },
                Payment {
                    nonce: p.nonce.wrapping_add(one),
                    ..p.clone()
                },
                Payment {
                    channel_id: p.channel_id.wrapping_add(one),
                    ..p.clone()
                },
                Payment {
                    mpe_contract: Address::repeat_byte(0x11),
                    ..p.clone()
                },
            ];
            for t in tampered {
                assert_ne!(t.signer().ok(), Some(signer), "{name}: {t:?}");
            }
        }
        // Both notations of v, both parities.
        for v in [0u8, 1, 27, 28] {
            assert!(forms.contains(&v), "no vector with v = {v}: {forms:?}");
        }
    }

    #[test]
    fn a_bad_v_is_named() {
        let p = Payment {
            mpe_contract: Address::ZERO,
            channel_id: U256::ZERO,
            nonce: U256::ZERO,
            amount: U256::ZERO,
            signature: [7; 65],
        };
        let e = p.signer().unwrap_err();
        assert_eq!(
            e.to_string(),
            "signature: v is 7; it must be 0, 1, 27 or 28"
        );
    }
}
