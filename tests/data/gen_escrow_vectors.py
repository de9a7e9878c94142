#!/usr/bin/env python3
"""Generate MPE (MultiPartyEscrow) payment-signature test vectors for raftcd.

Independent reference implementation: Python eth-account (PyPI).
Output: escrow_vectors.json next to this script. Fully deterministic
(fixed keys, RFC 6979 deterministic ECDSA as used by eth-keys), so re-running
with the same package versions reproduces the file byte for byte.

Signed payment layout (as in snet-daemon / MultiPartyEscrow.sol channelClaim):
    message  = b"__MPE_claim_message" || mpe_contract (20 raw bytes)
               || channel_id (uint256, 32 B big-endian)
               || nonce      (uint256, 32 B big-endian)
               || amount     (uint256, 32 B big-endian)
    hash1    = keccak256(message)
    digest   = keccak256(b"\\x19Ethereum Signed Message:\\n32" || hash1)
    signature = r (32) || s (32) || v (1)

Test private keys: key_N = keccak256(b"raftcd-escrow-test-key-N"), N = 1, 2, 3.
Test contract addresses: last 20 bytes of keccak256(b"raftcd-escrow-test-mpe-X"), X = A, B.
"""
import json
import os
from importlib.metadata import version

from eth_account import Account
from eth_account.messages import encode_defunct, _hash_eip191_message
from eth_keys import keys as eth_keys_keys
from eth_utils import keccak, to_checksum_address

PREFIX = b"__MPE_claim_message"
ETH_PREFIX = b"\x19Ethereum Signed Message:\n32"
U256_MAX = 2**256 - 1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "escrow_vectors.json")


def u256(x: int) -> bytes:
    assert 0 <= x <= U256_MAX
    return x.to_bytes(32, "big")


def hx(b: bytes) -> str:
    return "0x" + bytes(b).hex()


KEYS = [keccak(f"raftcd-escrow-test-key-{n}".encode()) for n in (1, 2, 3)]
ACCOUNTS = [Account.from_key(k) for k in KEYS]
MPE_A = to_checksum_address(keccak(b"raftcd-escrow-test-mpe-A")[12:])
MPE_B = to_checksum_address(keccak(b"raftcd-escrow-test-mpe-B")[12:])

# (name, contract, channel_id, nonce, amount, signer index, v_form)
CASES = [
    ("basic_small_values",         MPE_A, 1, 0, 100, 0, "27/28"),
    ("channel0_nonce0_amount0",    MPE_A, 0, 0, 0, 0, "27/28"),
    ("amount_u256_max",            MPE_A, 7, 3, U256_MAX, 1, "27/28"),
    ("channel_above_u64",          MPE_A, 2**64, 1, 12345678901234567890, 1, "27/28"),
    ("channel_u256_max",           MPE_B, U256_MAX, 0, 1, 2, "27/28"),
    ("large_nonce",                MPE_B, 42, 2**200 + 17, 10**18, 2, "27/28"),
    ("contract_b_typical",         MPE_B, 1234, 5, 80000000, 0, "27/28"),
    ("all_u256_max",               MPE_B, U256_MAX, U256_MAX, U256_MAX, 1, "27/28"),
    ("channel_u64_max_plus_2",     MPE_A, 2**64 + 1, 9, 2**64, 2, "27/28"),
    ("agix_cogs_amount",           MPE_A, 356, 2, 4 * 10**8, 1, "27/28"),
    # 0/1 form: v byte = v - 27
    ("v01_basic",                  MPE_A, 1, 0, 200, 0, "0/1"),
    ("v01_amount0",                MPE_B, 3, 1, 0, 1, "0/1"),
    ("v01_channel_above_u64",      MPE_A, 2**128 + 5, 0, 999, 2, "0/1"),
    ("v01_channel_u256_max",       MPE_B, U256_MAX, 4, 10**9, 0, "0/1"),
    ("v01_large_nonce_amount_max", MPE_A, 77, 2**255, U256_MAX, 2, "0/1"),
    ("v01_contract_b_typical",     MPE_B, 1234, 6, 80000001, 1, "0/1"),
]


def make_vector(name, contract, channel_id, nonce, amount, signer_idx, v_form):
    acct = ACCOUNTS[signer_idx]
    message = PREFIX + bytes.fromhex(contract[2:]) + u256(channel_id) + u256(nonce) + u256(amount)
    assert len(message) == 19 + 20 + 96
    hash1 = keccak(message)
    digest = keccak(ETH_PREFIX + hash1)

    # Path 1: EIP-191 "personal_sign" over the 32-byte hash1.
    signable = encode_defunct(primitive=hash1)
    assert _hash_eip191_message(signable) == digest
    s1 = Account.sign_message(signable, private_key=acct.key)
    # Path 2: raw signing of the precomputed digest.
    s2 = Account.unsafe_sign_hash(digest, private_key=acct.key)
    assert bytes(s1.message_hash) == digest == bytes(s2.message_hash)
    assert bytes(s1.signature) == bytes(s2.signature), name
    sig = bytes(s1.signature)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert s1.v == sig[64] and s1.r == int.from_bytes(sig[:32], "big") and s1.s == int.from_bytes(sig[32:64], "big")
    # low-s (EIP-2) as produced by eth-keys
    assert s1.s <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

    # Recovery checks (from the 27/28 form)
    assert Account.recover_message(signable, signature=sig) == acct.address
    assert Account._recover_hash(digest, signature=sig) == acct.address
    # Independent recovery via eth-keys with v in {0,1}
    pub = eth_keys_keys.Signature(sig[:64] + bytes([sig[64] - 27])).recover_public_key_from_msg_hash(digest)
    assert pub.to_checksum_address() == acct.address

    if v_form == "0/1":
        sig = sig[:64] + bytes([sig[64] - 27])
        assert sig[64] in (0, 1)
    else:
        assert v_form == "27/28"

    return {
        "name": name,
        "mpe_contract": contract,
        "channel_id": str(channel_id),
        "nonce": str(nonce),
        "amount": str(amount),
        "message_hash": hx(hash1),
        "digest": hx(digest),
        "signature": hx(sig),
        "v_form": v_form,
        "signer": acct.address,
    }


def main():
    vectors = [make_vector(*c) for c in CASES]
    vs = {(v["v_form"], int(v["signature"][-2:], 16)) for v in vectors}
    for need in [("27/28", 27), ("27/28", 28), ("0/1", 0), ("0/1", 1)]:
        assert need in vs, f"no vector with {need}; adjust CASES"
    assert len({v["signer"] for v in vectors}) >= 3
    assert len({v["mpe_contract"] for v in vectors}) >= 2

    pkgs = ["eth-account", "eth-keys", "eth-utils", "eth-hash", "pycryptodome"]
    generator = "tests/data/gen_escrow_vectors.py using " + ", ".join(f"{p}=={version(p)}" for p in pkgs)
    doc = {"generator": generator, "vectors": vectors}
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")
    print("v distribution:", sorted(vs))


if __name__ == "__main__":
    main()
