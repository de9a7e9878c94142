//! raftcd's MVCC state machine against the etcd model: the input is read
//! as a sequence of up to 256 steps (puts, deletes, txns with compares and
//! nested txns, ranges, compactions, group-commit batches), applied to
//! both as `tests/support/model_check.rs` describes; any disagreement in an
//! answer, an event, a revision, or a read of any revision at the end is a
//! crash. The proptest `tests/it/model.rs` runs the same check in the
//! normal suite.
#![no_main]
#[path = "../../tests/support/etcd_model.rs"]
mod etcd_model;
#[path = "../../tests/support/model_check.rs"]
mod model_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = model_check::run(data, 256) {
        panic!("{e}");
    }
});
