//! Accepted payments per second on a 3-member cluster: raftcd's escrow
//! service against the compare-and-swap loop a payment daemon runs on
//! etcd's KV API (read the channel, check the signed payment, Txn on the
//! channel key's mod_revision), with a real etcd 3.4 cluster in the same
//! run. The same loop also runs against raftcd, for reference.
//!
//! `cargo bench --bench escrow -- [--duration-secs N] [--tasks N]
//! [--channels N]`; `BENCH_RAFTCD_BIN` picks the raftcd binary (default
//! target/release/raftcd), `/usr/bin/etcd` is etcd (Debian etcd-server).
//! Prints a Markdown table for docs/benchmarks.md.

use std::error::Error;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use bytes::Bytes;
use k256::ecdsa::SigningKey;
use raftcd::escrow::channel::{Channel, ChannelKey};
use raftcd::escrow::payment::Payment;
use raftcd::pb::escrowpb::escrow_client::EscrowClient;
use raftcd::pb::escrowpb::{ChannelId, PaymentRequest};
use raftcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftcd::pb::etcdserverpb::kv_client::KvClient;
use raftcd::pb::etcdserverpb::request_op::Request as Op;
use raftcd::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

struct Opts {
    duration: Duration,
    tasks: usize,
    channels: u64,
}

fn opts() -> Res<Opts> {
    let mut o = Opts {
        duration: Duration::from_secs(10),
        tasks: 64,
        channels: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).ok_or("missing value");
        match args[i].as_str() {
            "--duration-secs" => o.duration = Duration::from_secs(value()?.parse()?),
            "--tasks" => o.tasks = value()?.parse()?,
            "--channels" => o.channels = value()?.parse()?,
            "--bench" => {
                i += 1;
                continue;
            }
            other => return Err(format!("unknown option {other}").into()),
        }
        i += 2;
    }
    Ok(o)
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Three members of `bin` (raftcd or etcd: the same flags), their client ports.
struct Cluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Cluster {
    fn start(bin: &str) -> Res<Cluster> {
        let dir = std::env::temp_dir().join(format!(
            "escrow-bench-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Res<_>>()?;
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut children = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let client = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            children.push(
                Command::new(bin)
                    .args(["--name", &format!("m{i}")])
                    .args([
                        "--data-dir",
                        &dir.join(format!("m{i}")).display().to_string(),
                    ])
                    .args([
                        "--listen-client-urls",
                        &client,
                        "--advertise-client-urls",
                        &client,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer,
                        "--initial-advertise-peer-urls",
                        &peer,
                    ])
                    .args(["--initial-cluster", &cluster.join(",")])
                    .args([
                        "--initial-cluster-token",
                        "escrow-bench",
                        "--initial-cluster-state",
                        "new",
                    ])
                    .args(["--log-level", "error"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        Ok(Cluster {
            children,
            ports: ports.iter().map(|(c, _)| *c).collect(),
            _dir: tempdir::Dir(dir),
        })
    }

    async fn ready(&self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for port in &self.ports {
            loop {
                if let Ok(mut kv) = KvClient::connect(format!("http://127.0.0.1:{port}")).await {
                    let r = kv
                        .range(RangeRequest {
                            key: Bytes::from_static(b"ready"),
                            ..Default::default()
                        })
                        .await;
                    if r.is_ok() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("member on {port} not ready").into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn contract() -> Address {
    Address::repeat_byte(0x5e)
}

fn channel(id: u64, signer: Address) -> Channel {
    Channel {
        channel_id: U256::from(id),
        nonce: U256::ZERO,
        sender: signer,
        signer,
        recipient: Address::repeat_byte(1),
        group_id: [0; 32],
        value: U256::MAX,
        expiration: U256::from(u64::MAX),
        authorized_amount: U256::ZERO,
        signature: Vec::new(),
    }
}

fn signed(key: &SigningKey, ch: u64, amount: u64) -> Payment {
    let mut p = Payment {
        mpe_contract: contract(),
        channel_id: U256::from(ch),
        nonce: U256::ZERO,
        amount: U256::from(amount),
        signature: [0; 65],
    };
    if let Ok((sig, recid)) = key.sign_prehash_recoverable(p.digest().as_slice()) {
        p.signature[..64].copy_from_slice(&sig.to_bytes());
        p.signature[64] = 27 + recid.to_byte();
    }
    p
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    lost_races: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

/// One way of accepting payments.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// raftcd's AcceptPayment.
    Service,
    /// Range, check, Txn on mod_revision (what a daemon does on etcd).
    KvCas,
}

async fn run(ports: &[u16], way: Way, o: &Opts) -> Res<Arc<Tally>> {
    let key = SigningKey::from_bytes(&[42u8; 32].into())?;
    let signer = Address::from_public_key(key.verifying_key());
    let mut kv = KvClient::connect(format!("http://127.0.0.1:{}", ports[0])).await?;
    for ch in 0..o.channels {
        let k = ChannelKey {
            mpe_contract: contract(),
            channel_id: U256::from(ch),
        };
        kv.put(PutRequest {
            key: Bytes::from(k.key()),
            value: Bytes::from(channel(ch, signer).to_json()),
            ..Default::default()
        })
        .await?;
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..o.tasks {
        let url = format!("http://127.0.0.1:{}", ports[t % ports.len()]);
        let (key, tally, stop, channels) = (key.clone(), tally.clone(), stop.clone(), o.channels);
        tasks.push(tokio::spawn(async move {
            let ep = tonic::transport::Endpoint::from_shared(url)
                .ok()?
                .connect_lazy();
            let mut kv = KvClient::new(ep.clone());
            let mut escrow = EscrowClient::new(ep);
            let mut n = t as u64 + 1;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let ch = (n >> 33) % channels;
                let k = ChannelKey {
                    mpe_contract: contract(),
                    channel_id: U256::from(ch),
                };
                let started = Instant::now();
                let outcome = match way {
                    Way::Service => {
                        let Ok(cur) = escrow
                            .get_channel(ChannelId {
                                mpe_contract: contract().to_string(),
                                channel_id: ch.to_string(),
                            })
                            .await
                        else {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let amount = cur
                            .into_inner()
                            .authorized_amount
                            .parse::<u64>()
                            .unwrap_or(0)
                            + 1;
                        let p = signed(&key, ch, amount);
                        let req = PaymentRequest {
                            mpe_contract: contract().to_string(),
                            channel_id: ch.to_string(),
                            nonce: "0".into(),
                            amount: amount.to_string(),
                            signature: raftcd::escrow::payment::to_hex(&p.signature),
                            current_block: "1".into(),
                        };
                        match escrow.accept_payment(req).await {
                            Ok(r) => Some(r.into_inner().accepted),
                            Err(_) => None,
                        }
                    }
                    Way::KvCas => {
                        let Ok(got) = kv
                            .range(RangeRequest {
                                key: Bytes::from(k.key()),
                                ..Default::default()
                            })
                            .await
                        else {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let got = got.into_inner();
                        let Some(cur_kv) = got.kvs.first() else {
                            continue;
                        };
                        let Ok(cur) = Channel::from_json(&cur_kv.value) else {
                            continue;
                        };
                        let amount = cur.authorized_amount.to::<u64>() + 1;
                        let p = signed(&key, ch, amount);
                        // The daemon's checks, on its side.
                        let ok = p.signer().is_ok_and(|s| s == cur.signer || s == cur.sender)
                            && p.nonce == cur.nonce
                            && p.amount > cur.authorized_amount
                            && p.amount <= cur.value;
                        if !ok {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let next = Channel {
                            authorized_amount: p.amount,
                            signature: p.signature.to_vec(),
                            ..cur
                        };
                        let txn = TxnRequest {
                            compare: vec![Compare {
                                result: CompareResult::Equal as i32,
                                target: CompareTarget::Mod as i32,
                                key: Bytes::from(k.key()),
                                range_end: Bytes::new(),
                                target_union: Some(TargetUnion::ModRevision(cur_kv.mod_revision)),
                            }],
                            success: vec![RequestOp {
                                request: Some(Op::RequestPut(PutRequest {
                                    key: Bytes::from(k.key()),
                                    value: Bytes::from(next.to_json()),
                                    ..Default::default()
                                })),
                            }],
                            failure: vec![],
                        };
                        match kv.txn(txn).await {
                            Ok(r) => Some(r.into_inner().succeeded),
                            Err(_) => None,
                        }
                    }
                };
                match outcome {
                    Some(true) => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = tally.latencies.lock() {
                            l.push(started.elapsed().as_micros() as u64);
                        }
                    }
                    Some(false) => {
                        tally.lost_races.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(())
        }));
    }
    tokio::time::sleep(o.duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok(tally)
}

fn row(name: &str, t: &Tally, o: &Opts) -> String {
    let mut l = t.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |q: f64| {
        l.get(((l.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let accepted = t.accepted.load(Ordering::Relaxed);
    format!(
        "| {name} | {:.0} | {:.2} / {:.2} | {} | {} |",
        accepted as f64 / o.duration.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        t.lost_races.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed)
    )
}

#[tokio::main]
async fn main() -> Res<()> {
    let o = opts()?;
    let raftcd =
        std::env::var("BENCH_RAFTCD_BIN").unwrap_or_else(|_| "target/release/raftcd".into());
    let mut rows = Vec::new();
    {
        let c = Cluster::start(&raftcd)?;
        c.ready().await?;
        let t = run(&c.ports, Way::Service, &o).await?;
        rows.push(row("raftcd, escrow AcceptPayment", &t, &o));
    }
    {
        let c = Cluster::start(&raftcd)?;
        c.ready().await?;
        let t = run(&c.ports, Way::KvCas, &o).await?;
        rows.push(row("raftcd, daemon's KV compare-and-swap loop", &t, &o));
    }
    {
        let c = Cluster::start("/usr/bin/etcd")?;
        c.ready().await?;
        let t = run(&c.ports, Way::KvCas, &o).await?;
        rows.push(row("etcd 3.4, daemon's KV compare-and-swap loop", &t, &o));
    }
    println!(
        "\n{} tasks over 3 members, {} channels, {} s each:\n",
        o.tasks,
        o.channels,
        o.duration.as_secs()
    );
    println!("| way | accepted/s | p50 / p99 ms (accepted) | lost races | errors |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
