//! Decoding a Raft entry payload from arbitrary bytes never panics nor
//! overflows the stack, and checking what decodes never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raftcd::codec::decode;
use raftcd::mvcc::command::Proposal;
use raftcd::mvcc::validate::{check_command, Limits, Origin};

fuzz_target!(|data: &[u8]| {
    let Ok(proposal) = decode::<Proposal>(data) else {
        return;
    };
    let limits = Limits {
        max_request_bytes: 1536 * 1024,
        max_txn_ops: 128,
    };
    for cmd in proposal.commands() {
        for origin in [Origin::Client, Origin::Peer, Origin::Internal] {
            let _ = check_command(cmd, origin, &limits);
        }
    }
});
