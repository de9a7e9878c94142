//! The `raftcd.escrow.v1.Escrow` gRPC service (`proto/raftcd/escrow.proto`)
//! over [`Escrow`]: strings in, checked once here, the operations' answers
//! out. Bad input is `InvalidArgument`, an unknown channel or claim
//! `NotFound`; a refusal by the rules is an ordinary reply.

use alloy_primitives::U256;
use tonic::{Request, Response, Status};

use super::channel::{parse_group_id, Channel, ChannelKey, Claim};
use super::payment::{parse_address, parse_signature, parse_u256, to_hex, Payment, PaymentError};
use super::store::{Escrow, EscrowError, Updated};
use crate::pb::escrowpb;
use crate::pb::escrowpb::escrow_server::EscrowServer;

/// The service of one member.
pub struct EscrowService {
    escrow: Escrow,
}

/// The routes of the service, to merge into a client port's router (no
/// fallback of its own: the port's router has one).
pub fn router(escrow: Escrow) -> axum::Router {
    use tonic::server::NamedService;
    let path = format!("/{}/{{*method}}", EscrowServer::<EscrowService>::NAME);
    axum::Router::new().route_service(&path, EscrowServer::new(EscrowService { escrow }))
}

fn status(e: EscrowError) -> Status {
    match e {
        EscrowError::Invalid(e) => Status::invalid_argument(e.to_string()),
        EscrowError::NotFound(m) => Status::not_found(m),
        EscrowError::Store(e) => Status::from(e),
        EscrowError::Contended => Status::aborted(e.to_string()),
    }
}

fn invalid(e: PaymentError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn channel_key(mpe_contract: &str, channel_id: &str) -> Result<ChannelKey, Status> {
    Ok(ChannelKey {
        mpe_contract: parse_address("mpe_contract", mpe_contract).map_err(invalid)?,
        channel_id: parse_u256("channel_id", channel_id).map_err(invalid)?,
    })
}

fn channel_from(c: &escrowpb::Channel) -> Result<(ChannelKey, Channel), Status> {
    let key = channel_key(&c.mpe_contract, &c.channel_id)?;
    let channel = Channel {
        channel_id: key.channel_id,
        nonce: parse_u256("nonce", &c.nonce).map_err(invalid)?,
        sender: parse_address("sender", &c.sender).map_err(invalid)?,
        signer: parse_address("signer", &c.signer).map_err(invalid)?,
        recipient: parse_address("recipient", &c.recipient).map_err(invalid)?,
        group_id: parse_group_id(&c.group_id).map_err(invalid)?,
        value: parse_u256("value", &c.value).map_err(invalid)?,
        expiration: parse_u256("expiration", &c.expiration).map_err(invalid)?,
        authorized_amount: U256::ZERO,
        signature: Vec::new(),
    };
    Ok((key, channel))
}

fn channel_to(key: &ChannelKey, c: &Channel) -> escrowpb::Channel {
    escrowpb::Channel {
        mpe_contract: key.mpe_contract.to_checksum(None),
        channel_id: c.channel_id.to_string(),
        nonce: c.nonce.to_string(),
        sender: c.sender.to_checksum(None),
        signer: c.signer.to_checksum(None),
        recipient: c.recipient.to_checksum(None),
        group_id: to_hex(&c.group_id),
        value: c.value.to_string(),
        expiration: c.expiration.to_string(),
        authorized_amount: c.authorized_amount.to_string(),
        signature: to_hex(&c.signature),
    }
}

fn claim_to(key: &ChannelKey, c: &Claim) -> escrowpb::Claim {
    escrowpb::Claim {
        mpe_contract: key.mpe_contract.to_checksum(None),
        channel_id: c.channel_id.to_string(),
        nonce: c.nonce.to_string(),
        amount: c.amount.to_string(),
        signature: to_hex(&c.signature),
        settled: c.settled,
    }
}

fn claim_reply(key: &ChannelKey, done: Result<Claim, super::Refusal>) -> escrowpb::ClaimReply {
    match done {
        Ok(c) => escrowpb::ClaimReply {
            done: true,
            refusal: String::new(),
            claim: Some(claim_to(key, &c)),
        },
        Err(r) => escrowpb::ClaimReply {
            done: false,
            refusal: r.to_string(),
            claim: None,
        },
    }
}

impl EscrowService {
    async fn update(
        &self,
        req: escrowpb::Channel,
    ) -> Result<Response<escrowpb::UpdateReply>, Status> {
        let (key, channel) = channel_from(&req)?;
        let done = self
            .escrow
            .update_channel(key.mpe_contract, channel)
            .await
            .map_err(status)?;
        let (result, reason) = match done {
            Ok(Updated::Created) => ("created", String::new()),
            Ok(Updated::Changed) => ("changed", String::new()),
            Ok(Updated::Unchanged) => ("unchanged", String::new()),
            Err(r) => ("stale", r.to_string()),
        };
        let stored = self.escrow.channel(&key).await.map_err(status)?;
        Ok(Response::new(escrowpb::UpdateReply {
            result: result.into(),
            reason,
            channel: stored.map(|c| channel_to(&key, &c)),
        }))
    }
}

#[tonic::async_trait]
impl escrowpb::escrow_server::Escrow for EscrowService {
    async fn open_channel(
        &self,
        req: Request<escrowpb::Channel>,
    ) -> Result<Response<escrowpb::UpdateReply>, Status> {
        self.update(req.into_inner()).await
    }

    async fn update_channel(
        &self,
        req: Request<escrowpb::Channel>,
    ) -> Result<Response<escrowpb::UpdateReply>, Status> {
        self.update(req.into_inner()).await
    }

    async fn get_channel(
        &self,
        req: Request<escrowpb::ChannelId>,
    ) -> Result<Response<escrowpb::Channel>, Status> {
        let req = req.into_inner();
        let key = channel_key(&req.mpe_contract, &req.channel_id)?;
        match self.escrow.channel(&key).await.map_err(status)? {
            Some(c) => Ok(Response::new(channel_to(&key, &c))),
            None => Err(Status::not_found(format!(
                "no channel {} of contract {}",
                key.channel_id, key.mpe_contract
            ))),
        }
    }

    async fn accept_payment(
        &self,
        req: Request<escrowpb::PaymentRequest>,
    ) -> Result<Response<escrowpb::PaymentReply>, Status> {
        let req = req.into_inner();
        let key = channel_key(&req.mpe_contract, &req.channel_id)?;
        let payment = Payment {
            mpe_contract: key.mpe_contract,
            channel_id: key.channel_id,
            nonce: parse_u256("nonce", &req.nonce).map_err(invalid)?,
            amount: parse_u256("amount", &req.amount).map_err(invalid)?,
            signature: parse_signature(&req.signature).map_err(invalid)?,
        };
        let block = parse_u256("current_block", &req.current_block).map_err(invalid)?;
        let reply = match self
            .escrow
            .accept_payment(&payment, block)
            .await
            .map_err(status)?
        {
            Ok(authorized) => escrowpb::PaymentReply {
                accepted: true,
                refusal: String::new(),
                authorized_amount: authorized.to_string(),
            },
            Err(r) => {
                let now = self.escrow.channel_here(&key).await.map_err(status)?;
                escrowpb::PaymentReply {
                    accepted: false,
                    refusal: r.to_string(),
                    authorized_amount: now
                        .map(|c| c.authorized_amount.to_string())
                        .unwrap_or_default(),
                }
            }
        };
        Ok(Response::new(reply))
    }

    async fn start_claim(
        &self,
        req: Request<escrowpb::ChannelId>,
    ) -> Result<Response<escrowpb::ClaimReply>, Status> {
        let req = req.into_inner();
        let key = channel_key(&req.mpe_contract, &req.channel_id)?;
        let reply = claim_reply(&key, self.escrow.start_claim(&key).await.map_err(status)?);
        Ok(Response::new(reply))
    }

    async fn list_claims(
        &self,
        req: Request<escrowpb::ListClaimsRequest>,
    ) -> Result<Response<escrowpb::ListClaimsReply>, Status> {
        let req = req.into_inner();
        let contract = parse_address("mpe_contract", &req.mpe_contract).map_err(invalid)?;
        let channel = match req.channel_id.trim() {
            "" => None,
            id => Some(parse_u256("channel_id", id).map_err(invalid)?),
        };
        let claims = self
            .escrow
            .claims(contract, channel)
            .await
            .map_err(status)?;
        Ok(Response::new(escrowpb::ListClaimsReply {
            claims: claims
                .iter()
                .map(|c| {
                    let key = ChannelKey {
                        mpe_contract: contract,
                        channel_id: c.channel_id,
                    };
                    claim_to(&key, c)
                })
                .collect(),
        }))
    }

    async fn settle_claim(
        &self,
        req: Request<escrowpb::SettleClaimRequest>,
    ) -> Result<Response<escrowpb::ClaimReply>, Status> {
        let req = req.into_inner();
        let key = channel_key(&req.mpe_contract, &req.channel_id)?;
        let nonce = parse_u256("nonce", &req.nonce).map_err(invalid)?;
        let reply = claim_reply(
            &key,
            self.escrow
                .settle_claim(&key, nonce)
                .await
                .map_err(status)?,
        );
        Ok(Response::new(reply))
    }
}
