//! What applying an auth command means for this member's simple tokens:
//! `Authenticate` registers the token it issued (its prefix completed with
//! the entry's Raft index, the same on every member), and deleting a user,
//! changing its password or disabling auth drops tokens, as etcd's simple
//! token provider does when it applies them.

use crate::auth::token::SimpleTokens;
use crate::auth::AuthChange;
use crate::mvcc::command::{Proposal, ProposalReply};
use crate::mvcc::{Command, Reply};

/// Update `tokens` for the auth commands of the entry at `index`, and
/// complete the tokens in `reply`.
pub(super) fn note_auth(
    tokens: &SimpleTokens,
    index: u64,
    proposal: &Proposal,
    reply: &mut ProposalReply,
) {
    let replies: &mut [Reply] = match reply {
        ProposalReply::One(r) => std::slice::from_mut(r),
        ProposalReply::Batch(v) => v,
    };
    for (cmd, reply) in proposal.commands().iter().zip(replies) {
        match (cmd, reply) {
            (
                Command::Authenticate {
                    name, issued_ms, ..
                },
                Reply::Authenticated { token },
            ) => {
                let full = format!("{token}.{index}");
                tokens.register(full.clone(), name.clone(), *issued_ms, now_ms());
                *token = full;
            }
            (
                Command::Auth {
                    change:
                        AuthChange::UserDelete { name } | AuthChange::UserChangePassword { name, .. },
                    ..
                },
                Reply::Auth,
            ) => tokens.invalidate_user(name),
            (
                Command::Auth {
                    change: AuthChange::Disable,
                    ..
                },
                Reply::Auth,
            ) => tokens.clear(),
            _ => {}
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
