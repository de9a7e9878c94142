//! Any protobuf-decodable Txn, validated as the API validates it, applies
//! without panicking, and a rejected one changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use raftcd::mvcc::apply::apply;
use raftcd::mvcc::{validate, Command, Reply, View};
use raftcd::pb::etcdserverpb::TxnRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(txn) = TxnRequest::decode(data) else {
        return;
    };
    if validate::check_txn(&txn, 128).is_err() {
        return;
    }
    let view = View::default();
    let applied = apply(&view, &Command::Txn(txn));
    if let Reply::Error(_) = applied.reply {
        assert!(applied.events.is_empty() && applied.view.index.is_empty());
        assert_eq!(applied.view.revision, view.revision);
    }
});
