//! The clients of a schedule: each one, bound to one member's client URL,
//! runs a closed loop of random operations over real gRPC (the etcd-client
//! crate, as any etcd user would) and records every call and answer.
//!
//! Key space: four keys `k0`..`k3` for put / get / delete / compare-and-swap,
//! and a separate group `c/0`..`c/2` that counts run over (so a count joins
//! only those three keys into one group, and the checker still splits the
//! rest by key). Every value written is unique (`<client>.<n>`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use raftcd::linearizability::{Input, Output, Recorder};

/// A small deterministic generator (xorshift64*): a schedule's seed fixes
/// every client's choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How long a client waits for one answer before it counts as unknown.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1000);

const COUNT_PREFIX: &str = "c/";
const COUNT_END: &str = "c0";

/// The next operation of a client.
fn choose(rng: &mut Rng, client: u64, n: &mut u64, seen: &[Option<Vec<u8>>; 4]) -> Input {
    *n += 1;
    let value = format!("{client}.{n}").into_bytes();
    let k = rng.below(4) as usize;
    let key = format!("k{k}").into_bytes();
    match rng.below(100) {
        0..=29 => Input::Put { key, value },
        30..=59 => Input::Get { key },
        60..=69 => Input::Delete { key },
        70..=84 => Input::Cas {
            key,
            expect: seen[k].clone(),
            value,
        },
        85..=91 => Input::Put {
            key: format!("{COUNT_PREFIX}{}", rng.below(3)).into_bytes(),
            value,
        },
        92..=95 => Input::Delete {
            key: format!("{COUNT_PREFIX}{}", rng.below(3)).into_bytes(),
        },
        _ => Input::Count {
            key: COUNT_PREFIX.into(),
            range_end: COUNT_END.into(),
        },
    }
}

/// Send one operation.
async fn perform(client: &mut Client, input: &Input) -> Result<Output, etcd_client::Error> {
    Ok(match input {
        Input::Put { key, value } => {
            client.put(key.clone(), value.clone(), None).await?;
            Output::Put
        }
        Input::Get { key } => {
            let r = client.get(key.clone(), None).await?;
            Output::Get(r.kvs().first().map(|kv| kv.value().to_vec()))
        }
        Input::Delete { key } => {
            let r = client.delete(key.clone(), None).await?;
            Output::Delete {
                deleted: r.deleted() as u64,
            }
        }
        Input::Cas { key, expect, value } => {
            let compare = match expect {
                Some(e) => Compare::value(key.clone(), CompareOp::Equal, e.clone()),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let txn =
                Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            let r = client.txn(txn).await?;
            Output::Cas {
                succeeded: r.succeeded(),
            }
        }
        Input::Count { key, range_end } => {
            let r = client
                .get(
                    key.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(range_end.clone())
                            .with_count_only(),
                    ),
                )
                .await?;
            Output::Count(r.count() as u64)
        }
    })
}

async fn connect(endpoint: &str) -> Client {
    loop {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(OP_TIMEOUT);
        match Client::connect([endpoint], Some(options)).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Run client `id` against `endpoint` until `stop` is set, recording into
/// `recorder`. Returns how many operations got an answer.
pub async fn run_client(
    id: u64,
    endpoint: String,
    seed: u64,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = Rng::new(seed ^ (id + 1).wrapping_mul(0x1000_0000_01B3));
    let mut client = connect(&endpoint).await;
    let mut n = 0;
    let mut answered = 0;
    let mut seen: [Option<Vec<u8>>; 4] = Default::default();
    while !stop.load(Ordering::SeqCst) {
        let input = choose(&mut rng, id, &mut n, &seen);
        let call = recorder.invoke(id, input.clone());
        let result = tokio::time::timeout(OP_TIMEOUT, perform(&mut client, &input)).await;
        match result {
            Ok(Ok(output)) => {
                answered += 1;
                // Remember what this client last saw at a key, for its next
                // compare-and-swap there.
                match (&input, &output) {
                    (Input::Get { key }, Output::Get(v)) => note(&mut seen, key, v.clone()),
                    (Input::Put { key, value }, _) => note(&mut seen, key, Some(value.clone())),
                    (Input::Delete { key }, _) => note(&mut seen, key, None),
                    (Input::Cas { key, value, .. }, Output::Cas { succeeded: true }) => {
                        note(&mut seen, key, Some(value.clone()))
                    }
                    _ => {}
                }
                recorder.complete(call, output);
            }
            Ok(Err(_)) | Err(_) => {
                recorder.complete(call, Output::Unknown);
                // A member that is down or cut off: don't spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    answered
}

fn note(seen: &mut [Option<Vec<u8>>; 4], key: &[u8], value: Option<Vec<u8>>) {
    if let [b'k', d] = key {
        if let Some(slot) = seen.get_mut(usize::from(d.wrapping_sub(b'0'))) {
            *slot = value;
        }
    }
}
