//! The `raftcd escrow` commands' side of the service: one request to the
//! first of `--endpoints` that answers, and how its answer is printed
//! (plain lines, or `-w json`) and exits: 0 done, 1 refused by the rules
//! or bad input, 2 unknown outcome (no member answered, timed out).

use std::time::Duration;

use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::pb::escrowpb;
use crate::pb::escrowpb::escrow_client::EscrowClient;

/// One command.
pub enum Op {
    Open(escrowpb::Channel),
    Pay(escrowpb::PaymentRequest),
    Get(escrowpb::ChannelId),
    StartClaim(escrowpb::ChannelId),
    Claims(escrowpb::ListClaimsRequest),
    Settle(escrowpb::SettleClaimRequest),
}

/// What to print and the exit code.
pub struct Printed {
    pub text: String,
    pub code: u8,
    /// A reply of the service (stdout), not an error (stderr).
    pub reply: bool,
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect(endpoints: &str) -> Result<Channel, String> {
    let mut last = String::from("no endpoint given");
    for e in endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let ep = Endpoint::from_shared(url(e))
            .map_err(|err| format!("bad endpoint {e:?}: {err}"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        match ep.connect().await {
            Ok(ch) => return Ok(ch),
            Err(err) => last = format!("{e}: {err}"),
        }
    }
    Err(last)
}

fn claim_json(c: &escrowpb::Claim) -> Value {
    json!({
        "mpe_contract": c.mpe_contract, "channel_id": c.channel_id, "nonce": c.nonce,
        "amount": c.amount, "signature": c.signature, "settled": c.settled,
    })
}

fn channel_json(c: &escrowpb::Channel) -> Value {
    json!({
        "mpe_contract": c.mpe_contract, "channel_id": c.channel_id, "nonce": c.nonce,
        "sender": c.sender, "signer": c.signer, "recipient": c.recipient,
        "group_id": c.group_id, "value": c.value, "expiration": c.expiration,
        "authorized_amount": c.authorized_amount, "signature": c.signature,
    })
}

fn lines(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn done(v: Value, json_out: bool, plain: String, code: u8) -> Printed {
    Printed {
        text: if json_out { v.to_string() } else { plain },
        code,
        reply: true,
    }
}

/// Run `op` against `endpoints`.
pub async fn run(endpoints: &str, op: Op, json_out: bool) -> Printed {
    let channel = match connect(endpoints).await {
        Ok(c) => c,
        Err(e) => {
            return Printed {
                text: format!("outcome unknown: no endpoint answered ({e})"),
                code: 2,
                reply: false,
            }
        }
    };
    let mut client = EscrowClient::new(channel);
    let result = match op {
        Op::Open(c) => client.open_channel(c).await.map(|r| {
            let r = r.into_inner();
            let v = json!({"result": r.result, "reason": r.reason,
                "channel": r.channel.as_ref().map(channel_json)});
            let plain = if r.reason.is_empty() {
                r.result.clone()
            } else {
                format!("{}: {}", r.result, r.reason)
            };
            done(v, json_out, plain, 0)
        }),
        Op::Pay(p) => client.accept_payment(p).await.map(|r| {
            let r = r.into_inner();
            let v = json!({"accepted": r.accepted, "refusal": r.refusal,
                "authorized_amount": r.authorized_amount});
            if r.accepted {
                done(v, json_out, "accepted".into(), 0)
            } else {
                done(v, json_out, format!("refused: {}", r.refusal), 1)
            }
        }),
        Op::Get(id) => client.get_channel(id).await.map(|r| {
            let v = channel_json(&r.into_inner());
            let plain = lines(&v);
            done(v, json_out, plain, 0)
        }),
        Op::StartClaim(id) => client
            .start_claim(id)
            .await
            .map(|r| claim_reply(r.into_inner(), json_out)),
        Op::Claims(req) => client.list_claims(req).await.map(|r| {
            let claims: Vec<Value> = r.into_inner().claims.iter().map(claim_json).collect();
            let plain = claims.iter().map(lines).collect::<Vec<_>>().join("\n\n");
            done(Value::Array(claims), json_out, plain, 0)
        }),
        Op::Settle(req) => client
            .settle_claim(req)
            .await
            .map(|r| claim_reply(r.into_inner(), json_out)),
    };
    match result {
        Ok(p) => p,
        Err(s) => match s.code() {
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => Printed {
                text: format!("error: {}", s.message()),
                code: 1,
                reply: false,
            },
            _ => Printed {
                text: format!("outcome unknown: {} ({:?})", s.message(), s.code()),
                code: 2,
                reply: false,
            },
        },
    }
}

fn claim_reply(r: escrowpb::ClaimReply, json_out: bool) -> Printed {
    let v = json!({"done": r.done, "refusal": r.refusal,
        "claim": r.claim.as_ref().map(claim_json)});
    match (&r.claim, r.done) {
        (Some(c), true) => {
            let plain = format!(
                "claim of nonce {} for {}{}",
                c.nonce,
                c.amount,
                if c.settled { ", settled" } else { "" }
            );
            done(v, json_out, plain, 0)
        }
        _ => done(v, json_out, format!("refused: {}", r.refusal), 1),
    }
}
