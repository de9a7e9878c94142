//! raftcd's MVCC state machine against a model of etcd's semantics
//! (`tests/support/etcd_model.rs`): random sequences of puts, deletes,
//! txns (compares, both branches, nested), ranges and compactions, applied
//! the way a member applies them (`tests/support/model_check.rs`); every
//! answer, event and revision must agree. The `state_machine` fuzz target
//! runs the same check on libFuzzer's inputs (docs/testing.md, "Fuzzing").
//! Below the proptest, the disagreements it found, as regression tests.

#[path = "../support/etcd_model.rs"]
mod etcd_model;
#[path = "../support/model_check.rs"]
mod model_check;

use etcd_model::Request;
use model_check::{check, Step};
use proptest::prelude::*;
use raftcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftcd::pb::etcdserverpb::request_op::Request as Op;
use raftcd::pb::etcdserverpb::{Compare, PutRequest, RequestOp, TxnRequest};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// 256 sequences of at most 64 steps each.
    #[test]
    fn the_state_machine_agrees_with_the_etcd_model(
        data in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        if let Err(e) = model_check::run(&data, 64) {
            return Err(TestCaseError::fail(e));
        }
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.to_string().into(),
        value: value.to_string().into(),
        ..Default::default()
    }
}

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(put(key, "v"))),
    }
}

fn compare(target: CompareTarget, result: CompareResult, key: &str, union: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_string().into(),
        range_end: Vec::new().into(),
        target_union: Some(union),
    }
}

/// Found by the `state_machine` fuzz target: a compare whose value is of
/// another kind than its target (`CREATE` with a lease value) compared the
/// create revision with that value; etcd's `compareKV` compares with 0.
#[test]
fn a_compare_value_of_another_kind_counts_as_zero() {
    let txn = |c: Compare| {
        Step::One(Request::Txn(TxnRequest {
            compare: vec![c],
            success: vec![put_op("yes")],
            failure: vec![put_op("no")],
        }))
    };
    let steps = [
        Step::One(Request::Put(put("k", "v"))),
        // Version of "k" is 1: NOT_EQUAL 0 holds, NOT_EQUAL 1 would not.
        txn(compare(
            CompareTarget::Version,
            CompareResult::NotEqual,
            "k",
            TargetUnion::ModRevision(1),
        )),
        // Missing key: create revision 0 EQUAL 0 holds, whatever the lease value.
        txn(compare(
            CompareTarget::Create,
            CompareResult::Equal,
            "gone",
            TargetUnion::Lease(5),
        )),
        txn(compare(
            CompareTarget::Mod,
            CompareResult::Greater,
            "k",
            TargetUnion::Version(9),
        )),
        txn(compare(
            CompareTarget::Lease,
            CompareResult::Less,
            "k",
            TargetUnion::CreateRevision(3),
        )),
    ];
    check(&steps).unwrap();
}

fn txn_op(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestTxn(t)),
    }
}

fn branch(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success,
        failure: Vec::new(),
    }
}

/// Found by the fuzz target: two sibling nested txns putting the same key
/// were let through (both run, so the key was written twice in one
/// revision); etcd's `checkIntervals` refuses them, and a nested put after
/// a sibling's delete of the key, as duplicate keys.
#[test]
fn sibling_nested_txns_may_not_write_the_same_key() {
    let del_op = |k: &str| RequestOp {
        request: Some(Op::RequestDeleteRange(
            raftcd::pb::etcdserverpb::DeleteRangeRequest {
                key: k.to_string().into(),
                ..Default::default()
            },
        )),
    };
    let steps = [
        Step::One(Request::Txn(branch(vec![
            txn_op(branch(vec![put_op("a")])),
            txn_op(branch(vec![put_op("a")])),
        ]))),
        Step::One(Request::Txn(branch(vec![
            txn_op(branch(vec![del_op("a")])),
            txn_op(branch(vec![put_op("a")])),
        ]))),
        // The two branches of one nested txn may (only one runs).
        Step::One(Request::Txn(branch(vec![txn_op(TxnRequest {
            compare: Vec::new(),
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
        })]))),
    ];
    check(&steps).unwrap();
}

/// Found by the fuzz target: a txn whose branch holds both a put of a
/// missing key with `ignore_value` and a range at a future revision failed
/// with the error of whichever came first; etcd checks every put of the
/// branches taken first, then every range, so it is `key not found`.
#[test]
fn a_txn_reports_a_put_error_before_a_range_error() {
    let range = RequestOp {
        request: Some(Op::RequestRange(raftcd::pb::etcdserverpb::RangeRequest {
            key: "k".to_string().into(),
            revision: 9,
            ..Default::default()
        })),
    };
    let blind = RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: "missing".to_string().into(),
            ignore_value: true,
            ..Default::default()
        })),
    };
    let steps = [Step::One(Request::Txn(branch(vec![
        txn_op(branch(vec![range])),
        blind,
    ])))];
    check(&steps).unwrap();
}

/// Found by the fuzz target: a put with an unknown lease and
/// `ignore_value` on a missing key answered `key not found`; etcd looks the
/// lease up first (`requested lease not found`). In a txn etcd checks the
/// key first, and so does raftcd.
#[test]
fn a_put_with_an_unknown_lease_and_no_key_reports_the_lease() {
    let blind = PutRequest {
        key: "missing".to_string().into(),
        ignore_value: true,
        lease: 7,
        ..Default::default()
    };
    let steps = [
        Step::One(Request::Put(blind.clone())),
        Step::One(Request::Txn(branch(vec![RequestOp {
            request: Some(Op::RequestPut(blind)),
        }]))),
    ];
    check(&steps).unwrap();
}
