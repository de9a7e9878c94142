//! `raftcd escrow recover`: the signer of every independent test vector
//! (tests/data/escrow_vectors.json, made with Python eth-account), printed
//! as an EIP-55 address; bad input is a non-zero exit that says what is
//! wrong.

use std::process::Command;

use crate::common::raftcd_bin;

fn recover(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(raftcd_bin())
        .args(["escrow", "recover"])
        .args(args)
        .output()
        .expect("run raftcd escrow recover");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/escrow_vectors.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["vectors"].as_array().unwrap().clone()
}

fn args(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, key) in [
        ("--mpe-contract", "mpe_contract"),
        ("--channel-id", "channel_id"),
        ("--nonce", "nonce"),
        ("--amount", "amount"),
        ("--signature", "signature"),
    ] {
        out.push(flag.to_string());
        out.push(v[key].as_str().unwrap().to_string());
    }
    out
}

#[test]
fn recover_prints_the_signer_of_every_vector() {
    for v in vectors() {
        let a = args(&v);
        let (code, stdout, stderr) = recover(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, Some(0), "{}: {stderr}", v["name"]);
        assert_eq!(stdout, v["signer"].as_str().unwrap(), "{}", v["name"]);
    }
}

#[test]
fn recover_says_what_is_wrong_with_bad_input() {
    let v = &vectors()[0];
    let with = |flag: &str, value: &str| {
        let mut a = args(v);
        let i = a.iter().position(|x| x == flag).unwrap();
        a[i + 1] = value.to_string();
        recover(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, _, err) = with("--signature", "0xabcd");
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "raftcd: error: escrow recover: signature: 2 bytes; a signature is 65 (r, s, v)"
    );
    let mut sig = v["signature"].as_str().unwrap().to_string();
    sig.replace_range(sig.len() - 2.., "05");
    let (code, _, err) = with("--signature", &sig);
    assert_eq!(code, Some(1));
    assert!(err.contains("v is 5; it must be 0, 1, 27 or 28"), "{err}");
    let (code, _, err) = with("--signature", "not-hex");
    assert_eq!(code, Some(1));
    assert!(err.contains("signature:"), "{err}");
    let too_big = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
    let (code, _, err) = with("--amount", too_big);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--amount") && err.contains("above 2^256-1"),
        "{err}"
    );
    let (code, _, err) = with("--mpe-contract", "0x1234");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--mpe-contract") && err.contains("an address is 20"),
        "{err}"
    );
    // A tampered amount recovers some other address: not the signer.
    let amount = v["amount"].as_str().unwrap().parse::<u128>().unwrap() + 1;
    let (code, stdout, _) = with("--amount", &amount.to_string());
    assert_eq!(code, Some(0));
    assert_ne!(stdout, v["signer"].as_str().unwrap());
}

mod store {
    //! The escrow operations on an embedded node (`Node::escrow`), with
    //! payments signed here by k256 keys.

    use std::sync::Arc;

    use alloy_primitives::{Address, U256};
    use k256::ecdsa::SigningKey;
    use raftcd::escrow::channel::{Channel, ChannelKey};
    use raftcd::escrow::payment::Payment;
    use raftcd::escrow::{EscrowError, Refusal, Updated};
    use raftcd::{Config, Node};

    struct Key(SigningKey);

    impl Key {
        fn new(seed: u8) -> Key {
            Key(SigningKey::from_bytes(&[seed; 32].into()).expect("key"))
        }

        fn address(&self) -> Address {
            Address::from_public_key(self.0.verifying_key())
        }

        fn pay(&self, contract: Address, channel: u64, nonce: u64, amount: u64) -> Payment {
            let mut p = Payment {
                mpe_contract: contract,
                channel_id: U256::from(channel),
                nonce: U256::from(nonce),
                amount: U256::from(amount),
                signature: [0; 65],
            };
            let (sig, recid) = self
                .0
                .sign_prehash_recoverable(p.digest().as_slice())
                .expect("sign");
            p.signature[..64].copy_from_slice(&sig.to_bytes());
            p.signature[64] = 27 + recid.to_byte();
            p
        }
    }

    fn contract() -> Address {
        Address::repeat_byte(0xc0)
    }

    fn channel(id: u64, signer: Address, sender: Address) -> Channel {
        Channel {
            channel_id: U256::from(id),
            nonce: U256::ZERO,
            sender,
            signer,
            recipient: Address::repeat_byte(0x77),
            group_id: [5; 32],
            value: U256::from(1000),
            expiration: U256::from(500),
            authorized_amount: U256::ZERO,
            signature: Vec::new(),
        }
    }

    async fn node() -> (Node, tempfile::TempDir, crate::common::Machine) {
        let machine = crate::common::machine_share();
        let tmp = tempfile::tempdir().unwrap();
        let node = Node::start(Config::embedded(tmp.path().join("escrow")))
            .await
            .expect("start");
        (node, tmp, machine)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn payments_follow_the_rules_and_claims_move_the_nonce() {
        let (node, _tmp, _m) = node().await;
        let e = node.escrow();
        let (signer, sender, stranger) = (Key::new(1), Key::new(2), Key::new(3));
        let ch = channel(7, signer.address(), sender.address());
        assert_eq!(
            e.update_channel(contract(), ch.clone()).await.unwrap(),
            Ok(Updated::Created)
        );
        let block = U256::from(100);
        let ok = |amount: u64| Ok(U256::from(amount));
        assert_eq!(
            e.accept_payment(&signer.pay(contract(), 7, 0, 10), block)
                .await
                .unwrap(),
            ok(10)
        );
        // The sender may sign too; amounts must grow.
        assert_eq!(
            e.accept_payment(&sender.pay(contract(), 7, 0, 20), block)
                .await
                .unwrap(),
            ok(20)
        );
        let refused = |r: Result<Result<U256, Refusal>, EscrowError>| r.unwrap().unwrap_err();
        assert!(matches!(
            refused(
                e.accept_payment(&signer.pay(contract(), 7, 0, 20), block)
                    .await
            ),
            Refusal::NotMore { .. }
        ));
        assert!(matches!(
            refused(
                e.accept_payment(&stranger.pay(contract(), 7, 0, 30), block)
                    .await
            ),
            Refusal::WrongSigner { .. }
        ));
        assert!(matches!(
            refused(
                e.accept_payment(&signer.pay(contract(), 7, 1, 30), block)
                    .await
            ),
            Refusal::WrongNonce { .. }
        ));
        assert!(matches!(
            refused(
                e.accept_payment(&signer.pay(contract(), 7, 0, 1001), block)
                    .await
            ),
            Refusal::AboveValue { .. }
        ));
        assert!(matches!(
            refused(
                e.accept_payment(&signer.pay(contract(), 7, 0, 30), U256::from(500))
                    .await
            ),
            Refusal::Expired { .. }
        ));
        assert!(matches!(
            e.accept_payment(&signer.pay(contract(), 8, 0, 30), block)
                .await,
            Err(EscrowError::NotFound(_))
        ));
        // A tampered amount recovers someone else.
        let mut forged = signer.pay(contract(), 7, 0, 30);
        forged.amount = U256::from(900);
        assert!(matches!(
            refused(e.accept_payment(&forged, block).await),
            Refusal::WrongSigner { .. }
        ));
        let key = ChannelKey {
            mpe_contract: contract(),
            channel_id: U256::from(7),
        };
        let stored = e.channel(&key).await.unwrap().unwrap();
        assert_eq!(stored.authorized_amount, U256::from(20));

        // A claim takes the accepted payment and moves to the next nonce.
        let claim = e.start_claim(&key).await.unwrap().unwrap();
        assert_eq!((claim.nonce, claim.amount), (U256::ZERO, U256::from(20)));
        let stored = e.channel(&key).await.unwrap().unwrap();
        assert_eq!(
            (stored.nonce, stored.authorized_amount),
            (U256::from(1), U256::ZERO)
        );
        assert!(matches!(
            refused(
                e.accept_payment(&signer.pay(contract(), 7, 0, 40), block)
                    .await
            ),
            Refusal::WrongNonce { .. }
        ));
        assert_eq!(
            e.accept_payment(&signer.pay(contract(), 7, 1, 5), block)
                .await
                .unwrap(),
            ok(5)
        );
        assert!(matches!(
            e.start_claim(&ChannelKey {
                channel_id: U256::from(9),
                ..key
            })
            .await,
            Err(EscrowError::NotFound(_))
        ));
        let claims = e.claims(contract(), None).await.unwrap();
        assert_eq!(claims, vec![claim.clone()]);
        let settled = e.settle_claim(&key, U256::ZERO).await.unwrap().unwrap();
        assert!(settled.settled);
        assert!(matches!(
            e.settle_claim(&key, U256::ZERO).await.unwrap(),
            Err(Refusal::Settled { .. })
        ));

        // Updates from the chain: a deposit, a stale one, a raised nonce.
        let mut chain = e.channel(&key).await.unwrap().unwrap();
        chain.value = U256::from(2000);
        assert_eq!(
            e.update_channel(contract(), chain.clone()).await.unwrap(),
            Ok(Updated::Changed)
        );
        assert_eq!(
            e.update_channel(contract(), chain.clone()).await.unwrap(),
            Ok(Updated::Unchanged)
        );
        let mut stale = chain.clone();
        stale.nonce = U256::ZERO;
        assert!(matches!(
            e.update_channel(contract(), stale).await.unwrap(),
            Err(Refusal::Stale(_))
        ));
        let mut raised = chain.clone();
        raised.nonce = U256::from(2);
        assert_eq!(
            e.update_channel(contract(), raised).await.unwrap(),
            Ok(Updated::Changed)
        );
        let stored = e.channel(&key).await.unwrap().unwrap();
        assert_eq!(
            (stored.nonce, stored.authorized_amount, stored.value),
            (U256::from(2), U256::ZERO, U256::from(2000))
        );
        node.shutdown().await.unwrap();
    }

    /// A holder that dies holding a channel lock loses it within the lease
    /// TTL; an unlock frees it at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_holders_channel_lock_goes_with_its_lease() {
        let (node, _tmp, _m) = node().await;
        let e = node.escrow();
        let key = ChannelKey {
            mpe_contract: contract(),
            channel_id: U256::from(5),
        };
        let short = std::time::Duration::from_millis(500);
        let held = e
            .lock_channel(&key, "replica-1", 2, short)
            .await
            .unwrap()
            .expect("free");
        assert!(e
            .lock_channel(&key, "replica-2", 2, short)
            .await
            .unwrap()
            .is_none());
        // The holder crashes: nobody keeps its lease alive any more.
        let died = std::time::Instant::now();
        held.abandon();
        let next = e
            .lock_channel(&key, "replica-2", 2, std::time::Duration::from_secs(10))
            .await
            .unwrap()
            .expect("released with the lease");
        let waited = died.elapsed();
        assert!(
            waited < std::time::Duration::from_millis(2000 + 1500),
            "{waited:?}"
        );
        let holder = node
            .client()
            .get(raftcd::escrow::lock::lock_key(&key))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&holder.value[..], b"replica-2");
        // Kept alive, it outlives its TTL; unlocked, it is free at once.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert!(e
            .lock_channel(&key, "replica-3", 2, short)
            .await
            .unwrap()
            .is_none());
        next.unlock().await.unwrap();
        assert!(e
            .lock_channel(&key, "replica-3", 2, short)
            .await
            .unwrap()
            .is_some());
        node.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_same_payment_raced_many_times_is_accepted_once() {
        let (node, _tmp, _m) = node().await;
        let e = node.escrow();
        let signer = Key::new(4);
        e.update_channel(contract(), channel(1, signer.address(), signer.address()))
            .await
            .unwrap()
            .unwrap();
        for amount in [10u64, 11, 50] {
            let p = Arc::new(signer.pay(contract(), 1, 0, amount));
            let racers: Vec<_> = (0..16)
                .map(|_| {
                    let (e, p) = (e.clone(), p.clone());
                    tokio::spawn(async move { e.accept_payment(&p, U256::from(1)).await })
                })
                .collect();
            let mut accepted = 0;
            for r in racers {
                match r.await.unwrap().unwrap() {
                    Ok(a) => {
                        assert_eq!(a, U256::from(amount));
                        accepted += 1;
                    }
                    Err(Refusal::NotMore { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
            }
            assert_eq!(accepted, 1, "amount {amount}");
        }
        node.shutdown().await.unwrap();
    }
}

/// `raftcd escrow` over the gRPC service of a real member: open a channel
/// for a vector's signer, pay, read, claim, settle; exit codes say
/// accepted (0), refused (1) and unknown (2).
#[test]
fn the_escrow_commands_work_against_a_member() {
    let server = crate::common::Server::start();
    let endpoint = server.endpoint();
    let escrow = |args: &[&str]| {
        let out = Command::new(raftcd_bin())
            .arg("escrow")
            .args(args)
            .args(["--endpoints", &endpoint])
            .output()
            .expect("run raftcd escrow");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let v = &vectors()[0];
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    let (contract, channel, signer) = (s("mpe_contract"), s("channel_id"), s("signer"));
    let (nonce, amount, signature) = (s("nonce"), s("amount"), s("signature"));
    let group = format!("0x{}", "11".repeat(32));
    let id = ["--mpe-contract", &contract, "--channel-id", &channel];
    let open = [
        &id[..],
        &["--nonce", &nonce, "--sender", &signer, "--signer", &signer],
        &["--recipient", "0x00000000000000000000000000000000000000aa"],
        &[
            "--group-id",
            &group,
            "--value",
            "1000",
            "--expiration",
            "500",
        ],
    ]
    .concat();
    let (code, out, err) = escrow(&[&["open-channel"], &open[..]].concat());
    assert_eq!((code, out.as_str()), (Some(0), "created"), "{err}");
    let pay = [
        &id[..],
        &[
            "--nonce",
            &nonce,
            "--amount",
            &amount,
            "--signature",
            &signature,
            "--block",
            "10",
        ],
    ]
    .concat();
    let (code, out, err) = escrow(&[&["pay"], &pay[..]].concat());
    assert_eq!((code, out.as_str()), (Some(0), "accepted"), "{err}");
    let (code, out, _) = escrow(&[&["pay"], &pay[..]].concat());
    assert_eq!(code, Some(1));
    assert!(
        out.starts_with("refused: amount 100 is not above the authorized amount 100"),
        "{out}"
    );
    let (code, out, _) = escrow(&[&["channel"], &id[..], &["-w", "json"]].concat());
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["nonce"], "0");
    assert_eq!(json["authorized_amount"], amount);
    // Bad input: refused before anything changes.
    let mut bad = pay.clone();
    let sig = bad.iter().position(|a| *a == "--signature").unwrap() + 1;
    bad[sig] = "0x1234";
    let (code, _, err) = escrow(&[&["pay"], &bad[..]].concat());
    assert_eq!(code, Some(1));
    assert!(err.contains("2 bytes; a signature is 65"), "{err}");
    // Claim, then the old nonce is refused, then settle.
    let (code, out, err) = escrow(&[&["start-claim"], &id[..]].concat());
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "claim of nonce 0 for 100"),
        "{err}"
    );
    let (code, out, _) = escrow(&[&["pay"], &pay[..]].concat());
    assert_eq!(code, Some(1));
    assert!(
        out.contains("nonce 0 is not the channel's nonce 1"),
        "{out}"
    );
    let (code, out, _) = escrow(&["claims", "--mpe-contract", &contract, "-w", "json"]);
    assert_eq!(code, Some(0));
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims.as_array().unwrap().len(), 1);
    assert_eq!(claims[0]["amount"], "100");
    let (code, out, _) = escrow(&[&["settle"], &id[..], &["--nonce", "0"]].concat());
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "claim of nonce 0 for 100, settled")
    );
    // An unknown channel is NotFound; a dead endpoint an unknown outcome.
    let (code, _, err) = escrow(&[
        "channel",
        "--mpe-contract",
        &contract,
        "--channel-id",
        "999",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no channel 999"), "{err}");
    let dead = format!("127.0.0.1:{}", crate::common::free_port());
    let out = Command::new(raftcd_bin())
        .args(["escrow", "pay"])
        .args(&pay)
        .args(["--endpoints", &dead])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("outcome unknown"));
    // etcdctl sees the state under /raftcd/escrow/.
    let keys = server.etcdctl(&["get", "/raftcd/escrow/", "--prefix", "--keys-only"]);
    assert_eq!(
        keys.stdout.lines().filter(|l| !l.is_empty()).count(),
        2,
        "{keys:?}"
    );
}

mod race {
    //! Three members, three daemon-like clients (one per member), 64 tasks
    //! paying increasingly on the same 10 channels through the gRPC
    //! service, the leader killed once mid-run. Checked on the channel
    //! keys' whole history: per channel the authorized amount only grows
    //! (no amount accepted twice), every accepted payment is in it, the
    //! final amount is the largest ever accepted, and every member reads the
    //! same final channels.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use alloy_primitives::{Address, U256};
    use k256::ecdsa::SigningKey;
    use raftcd::escrow::payment::Payment;
    use raftcd::pb::escrowpb::escrow_client::EscrowClient;
    use raftcd::pb::escrowpb::{self, ChannelId, PaymentRequest};

    use crate::common::base64_decode;
    use crate::common::cluster::Cluster;

    const CHANNELS: u64 = 10;
    const TASKS: usize = 64;

    fn contract() -> Address {
        Address::repeat_byte(0x5e)
    }

    fn sign(key: &SigningKey, channel: u64, amount: u64) -> String {
        let mut p = Payment {
            mpe_contract: contract(),
            channel_id: U256::from(channel),
            nonce: U256::ZERO,
            amount: U256::from(amount),
            signature: [0; 65],
        };
        let (sig, recid) = key.sign_prehash_recoverable(p.digest().as_slice()).unwrap();
        p.signature[..64].copy_from_slice(&sig.to_bytes());
        p.signature[64] = 27 + recid.to_byte();
        raftcd::escrow::payment::to_hex(&p.signature)
    }

    async fn client(port: u16) -> EscrowClient<tonic::transport::Channel> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        EscrowClient::new(ch)
    }

    fn id(channel: u64) -> ChannelId {
        ChannelId {
            mpe_contract: contract().to_string(),
            channel_id: channel.to_string(),
        }
    }

    #[test]
    fn racing_payments_through_three_members_with_the_leader_killed() {
        let mut cluster = Cluster::start(3, &[]);
        let leader = cluster.wait_leader(Duration::from_secs(20));
        let ports: Vec<u16> = cluster.members.iter().map(|m| m.client_port).collect();
        let key = SigningKey::from_bytes(&[42u8; 32].into()).unwrap();
        let signer = Address::from_public_key(key.verifying_key());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // accepted (channel, amount) as the clients saw them.
        let accepted: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        rt.block_on(async {
            let mut c = client(ports[0]).await;
            for ch in 0..CHANNELS {
                let r = c
                    .open_channel(escrowpb::Channel {
                        mpe_contract: contract().to_string(),
                        channel_id: ch.to_string(),
                        nonce: "0".into(),
                        sender: signer.to_string(),
                        signer: signer.to_string(),
                        recipient: Address::repeat_byte(1).to_string(),
                        group_id: format!("0x{}", "00".repeat(32)),
                        value: "1000000000".into(),
                        expiration: "1000000".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.result, "created");
            }
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (key, accepted, stop) = (key.clone(), accepted.clone(), stop.clone());
                    let port = ports[t % 3];
                    tokio::spawn(async move {
                        let mut c = client(port).await;
                        let mut n = t as u64;
                        while !stop.load(Ordering::Relaxed) {
                            n = n
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let ch = (n >> 33) % CHANNELS;
                            let Ok(cur) = c.get_channel(id(ch)).await else {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            };
                            let cur: u64 = cur.into_inner().authorized_amount.parse().unwrap();
                            let amount = cur + 1 + (n >> 60) % 3;
                            let req = PaymentRequest {
                                mpe_contract: contract().to_string(),
                                channel_id: ch.to_string(),
                                nonce: "0".into(),
                                amount: amount.to_string(),
                                signature: sign(&key, ch, amount),
                                current_block: "1".into(),
                            };
                            match c.accept_payment(req).await {
                                Ok(r) if r.get_ref().accepted => {
                                    accepted.lock().unwrap().push((ch, amount));
                                }
                                // Refused (someone else got there) or an
                                // unknown outcome across the leader change.
                                Ok(_) | Err(_) => {}
                            }
                        }
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(3)).await;
            cluster.members[leader].kill();
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.unwrap();
            }
        });
        let accepted = accepted.lock().unwrap().clone();
        assert!(accepted.len() > 100, "only {} accepted", accepted.len());
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        // The history of every channel key, from one survivor.
        let watcher = &cluster.members[survivors[0]];
        let mut history: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for ch in 0..CHANNELS {
            let key = raftcd::escrow::channel::ChannelKey {
                mpe_contract: contract(),
                channel_id: U256::from(ch),
            }
            .key();
            let latest = watcher.etcdctl(&["get", &key, "-w", "json"]);
            let v: serde_json::Value = serde_json::from_str(&latest.stdout).unwrap();
            let kv = &v["kvs"][0];
            let (create, modr) = (
                kv["create_revision"].as_i64().unwrap(),
                kv["mod_revision"].as_i64().unwrap(),
            );
            let mut amounts = Vec::new();
            let mut rev = modr;
            // Walk back through the key's revisions.
            while rev >= create {
                let at = watcher.etcdctl(&["get", &key, &format!("--rev={rev}"), "-w", "json"]);
                let v: serde_json::Value = serde_json::from_str(&at.stdout).unwrap();
                let kv = &v["kvs"][0];
                let value = base64_decode(kv["value"].as_str().unwrap());
                let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
                amounts.push(
                    json["authorized_amount"]
                        .as_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
                let prev = kv["mod_revision"].as_i64().unwrap();
                rev = prev - 1;
                if kv["version"].as_i64().unwrap() == 1 {
                    break;
                }
            }
            amounts.reverse();
            history.insert(ch, amounts);
        }
        for (ch, amounts) in &history {
            assert!(
                amounts.windows(2).all(|w| w[0] < w[1]),
                "channel {ch}: {amounts:?}"
            );
            let mine: Vec<u64> = accepted
                .iter()
                .filter(|(c, _)| c == ch)
                .map(|(_, a)| *a)
                .collect();
            for a in &mine {
                assert!(
                    amounts.contains(a),
                    "channel {ch}: accepted {a} is not in {amounts:?}"
                );
            }
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                mine.len(),
                "channel {ch}: an amount accepted twice"
            );
            let last = *amounts.last().unwrap();
            assert!(mine.iter().all(|a| *a <= last));
            // Every survivor reads the same final channel.
            for i in &survivors {
                let got = cluster.members[*i].etcdctl(&[
                    "get",
                    &raftcd::escrow::channel::ChannelKey {
                        mpe_contract: contract(),
                        channel_id: U256::from(*ch),
                    }
                    .key(),
                    "--print-value-only",
                ]);
                let json: serde_json::Value = serde_json::from_str(got.stdout.trim()).unwrap();
                assert_eq!(
                    json["authorized_amount"],
                    last.to_string(),
                    "member {i}, channel {ch}"
                );
            }
        }
    }

    fn sign_at(key: &SigningKey, channel: u64, nonce: u64, amount: u64) -> String {
        let mut p = Payment {
            mpe_contract: contract(),
            channel_id: U256::from(channel),
            nonce: U256::from(nonce),
            amount: U256::from(amount),
            signature: [0; 65],
        };
        let (sig, recid) = key.sign_prehash_recoverable(p.digest().as_slice()).unwrap();
        p.signature[..64].copy_from_slice(&sig.to_bytes());
        p.signature[64] = recid.to_byte();
        raftcd::escrow::payment::to_hex(&p.signature)
    }

    fn pay(channel: u64, nonce: u64, amount: u64, signature: String) -> PaymentRequest {
        PaymentRequest {
            mpe_contract: contract().to_string(),
            channel_id: channel.to_string(),
            nonce: nonce.to_string(),
            amount: amount.to_string(),
            signature,
            current_block: "1".into(),
        }
    }

    /// The same payment through all three members at once: one accepted;
    /// a payment racing a claim through two members: accepted and in the
    /// claim, or refused and not in it; never both, never neither.
    #[test]
    fn one_payment_through_three_members_and_a_payment_racing_a_claim() {
        let mut cluster = Cluster::start(3, &[]);
        cluster.wait_leader(Duration::from_secs(20));
        let ports: Vec<u16> = cluster.members.iter().map(|m| m.client_port).collect();
        let key = SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
        let signer = Address::from_public_key(key.verifying_key());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut clients = Vec::new();
            for p in &ports {
                clients.push(client(*p).await);
            }
            clients[0]
                .open_channel(escrowpb::Channel {
                    mpe_contract: contract().to_string(),
                    channel_id: "3".into(),
                    nonce: "0".into(),
                    sender: signer.to_string(),
                    signer: signer.to_string(),
                    recipient: Address::repeat_byte(1).to_string(),
                    group_id: format!("0x{}", "00".repeat(32)),
                    value: "1000000".into(),
                    expiration: "1000000".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut authorized = 0u64;
            for round in 0..20u64 {
                let amount = authorized + 10;
                let sig = sign_at(&key, 3, round, amount);
                let offers = clients.iter().map(|c| {
                    let mut c = c.clone();
                    let req = pay(3, round, amount, sig.clone());
                    async move { c.accept_payment(req).await.unwrap().into_inner().accepted }
                });
                let won = futures::future::join_all(offers).await;
                assert_eq!(
                    won.iter().filter(|w| **w).count(),
                    1,
                    "round {round}: {won:?}"
                );
                authorized = amount;
                // A bigger payment and a claim, through two members at once.
                let bigger = authorized + 5;
                let sig = sign_at(&key, 3, round, bigger);
                let (mut a, mut b) = (clients[1].clone(), clients[2].clone());
                let (paid, claimed) = tokio::join!(
                    async move {
                        a.accept_payment(pay(3, round, bigger, sig))
                            .await
                            .unwrap()
                            .into_inner()
                    },
                    async move { b.start_claim(id(3)).await.unwrap().into_inner() }
                );
                assert!(claimed.done, "round {round}: {claimed:?}");
                let claim = claimed.claim.unwrap();
                assert_eq!(claim.nonce, round.to_string());
                if paid.accepted {
                    assert_eq!(
                        claim.amount,
                        bigger.to_string(),
                        "round {round}: accepted but not claimed"
                    );
                } else {
                    assert!(paid.refusal.contains("not the channel's nonce"), "{paid:?}");
                    assert_eq!(claim.amount, authorized.to_string(), "round {round}");
                }
                authorized = 0;
            }
            let claims = clients[0]
                .list_claims(escrowpb::ListClaimsRequest {
                    mpe_contract: contract().to_string(),
                    channel_id: "3".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .claims;
            assert_eq!(claims.len(), 20);
        });
    }
}
