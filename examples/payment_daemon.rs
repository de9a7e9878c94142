//! A small payment daemon with raftcd embedded: each replica of the daemon
//! is one member of a cluster that grows itself from a replica table, and
//! serves raftcd's client port (etcd's API and the escrow service) on its
//! row's `client_url`. The daemon itself checks payments through
//! `node.escrow()`, in-process.
//!
//! ```sh
//! cargo build --release --example payment_daemon
//! D=target/release/examples/payment_daemon
//! $D table > /tmp/replicas.toml                     # 3 replicas on 127.0.0.1
//! $D serve --replica-table /tmp/replicas.toml --replica-id 1 &
//! $D serve --replica-table /tmp/replicas.toml --replica-id 2 &
//! $D serve --replica-table /tmp/replicas.toml --replica-id 3 &
//! $D demo --replica-table /tmp/replicas.toml        # a double spend, refused
//! ```
//!
//! `demo` opens a channel through replica 1, then offers one signed
//! payment through replicas 2 and 3 at the same time: exactly one accepts
//! it, the other refuses it — the same payment is never accepted twice.

use std::time::Duration;

use alloy_primitives::{Address, U256};
use k256::ecdsa::SigningKey;
use raftcd::escrow::payment::Payment;
use raftcd::pb::escrowpb::escrow_client::EscrowClient;
use raftcd::pb::escrowpb::{Channel, PaymentRequest};
use raftcd::replicas::ReplicaTable;
use raftcd::{Config, Node};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TABLE: &str = r#"token = "payment-daemon-demo"
heartbeat_interval_ms = 500
dead_after_ms = 3000

[[replica]]
id = 1
name = "daemon-1"
client_url = "http://127.0.0.1:23791"
peer_url = "http://127.0.0.1:23801"

[[replica]]
id = 2
name = "daemon-2"
client_url = "http://127.0.0.1:23792"
peer_url = "http://127.0.0.1:23802"

[[replica]]
id = 3
name = "daemon-3"
client_url = "http://127.0.0.1:23793"
peer_url = "http://127.0.0.1:23803"
"#;

fn flag(args: &[String], name: &str) -> Res<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .ok_or_else(|| format!("missing {name}").into())
}

/// One replica: the embedded member, serving until Ctrl-C.
async fn serve(args: &[String]) -> Res<()> {
    let table = ReplicaTable::load(flag(args, "--replica-table")?.as_ref())?;
    let id: u64 = flag(args, "--replica-id")?.parse()?;
    let dir = std::env::temp_dir().join(format!("payment-daemon-{id}"));
    let config = Config::embedded(dir).with_replica_table(table, id)?;
    let node = Node::start(config).await?;
    println!("replica {id} serving on {:?}", node.client_addrs());
    tokio::signal::ctrl_c().await?;
    node.shutdown().await?;
    Ok(())
}

/// The demo client: open a channel, then spend one payment twice at once.
async fn demo(args: &[String]) -> Res<()> {
    let table = ReplicaTable::load(flag(args, "--replica-table")?.as_ref())?;
    let url = |i: usize| table.replicas[i].client_url.to_string();
    let key = SigningKey::from_bytes(&[0x42; 32].into())?;
    let signer = Address::from_public_key(key.verifying_key());
    let contract = Address::repeat_byte(0x5e);
    let channel_id: U256 = U256::from(7u64) << 100usize;
    let mut first = EscrowClient::connect(url(0)).await?;
    let opened = first
        .open_channel(Channel {
            mpe_contract: contract.to_string(),
            channel_id: channel_id.to_string(),
            nonce: "0".into(),
            sender: signer.to_string(),
            signer: signer.to_string(),
            recipient: Address::repeat_byte(0x77).to_string(),
            group_id: format!("0x{}", "00".repeat(32)),
            value: "1000".into(),
            expiration: "1000000".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let channel = opened.channel.ok_or("no channel in the reply")?;
    println!(
        "channel {} via replica 1: {} (authorized so far: {})",
        channel.channel_id, opened.result, channel.authorized_amount
    );
    let amount = channel.authorized_amount.parse::<u64>()? + 100;
    let mut payment = Payment {
        mpe_contract: contract,
        channel_id,
        nonce: U256::from_str_radix(&channel.nonce, 10)?,
        amount: U256::from(amount),
        signature: [0; 65],
    };
    let (sig, recid) = key.sign_prehash_recoverable(payment.digest().as_slice())?;
    payment.signature[..64].copy_from_slice(&sig.to_bytes());
    payment.signature[64] = 27 + recid.to_byte();
    let request = PaymentRequest {
        mpe_contract: contract.to_string(),
        channel_id: channel_id.to_string(),
        nonce: payment.nonce.to_string(),
        amount: amount.to_string(),
        signature: raftcd::escrow::payment::to_hex(&payment.signature),
        current_block: "1".into(),
    };
    let (mut two, mut three) = (
        EscrowClient::connect(url(1)).await?,
        EscrowClient::connect(url(2)).await?,
    );
    let (a, b) = tokio::join!(
        two.accept_payment(request.clone()),
        three.accept_payment(request)
    );
    for (replica, reply) in [(2, a?.into_inner()), (3, b?.into_inner())] {
        if reply.accepted {
            println!("replica {replica}: payment of {amount} accepted");
        } else {
            println!("replica {replica}: refused: {}", reply.refusal);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("table") => {
            print!("{TABLE}");
            Ok(())
        }
        Some("serve") => serve(&args).await,
        Some("demo") => {
            tokio::time::timeout(Duration::from_secs(60), demo(&args)).await?
        }
        _ => Err("usage: payment_daemon table | serve --replica-table F --replica-id N | demo --replica-table F".into()),
    }
}
