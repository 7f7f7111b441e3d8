//! Channel ownership at join: a broadcaster names the channel's key, gets a fresh random
//! challenge, and joins only once it has signed it with that key. A forged signature, one
//! replayed from an earlier challenge, or none at all never gets it in.

use std::time::Duration;

use protocol::{ChannelKey, ChannelName, ErrorCode, KeySignature, Nonce, ServerMessage, SessionId};
use tokio::time::Instant;

use crate::mailbox::Mailbox;
use crate::metrics::Rejection;
use crate::AppState;

/// A challenge not answered within this long closes the connection.
pub(crate) const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A broadcaster's join waiting for its signature.
#[derive(Debug)]
pub(crate) struct PendingClaim {
    pub channel: ChannelName,
    pub key: ChannelKey,
    /// The broadcast it starts, named to viewers once it is in.
    pub session: SessionId,
    nonce: Nonce,
    pub deadline: Instant,
}

/// Why a claim was refused: the error to send, and whether to close the connection.
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub rejection: Rejection,
    pub message: String,
    pub close: bool,
}

/// A broadcaster's `Join`: refused without a key, or with a key other than the channel's
/// owner's; otherwise challenged.
pub(crate) fn challenge(
    state: &AppState,
    mailbox: &Mailbox,
    channel: ChannelName,
    key: Option<ChannelKey>,
    session: Option<SessionId>,
) -> Result<PendingClaim, Refusal> {
    let Some(key) = key else {
        return Err(Refusal {
            code: ErrorCode::KeyRequired,
            rejection: Rejection::KeyRequired,
            message: "a broadcaster must name its channel key: make one with `streamtorrent keygen --out FILE`, then `broadcast --key FILE`".into(),
            close: false,
        });
    };
    if !state.owners().may_broadcast(&channel, &key) {
        return Err(owned_by_another(&channel));
    }
    let Some(session) = session else {
        return Err(Refusal {
            code: ErrorCode::MalformedMessage,
            rejection: Rejection::Malformed,
            message: "a broadcaster's join names its broadcast (`session`)".into(),
            close: false,
        });
    };
    let nonce = Nonce(rand::random());
    mailbox.post(&ServerMessage::Challenge { nonce });
    Ok(PendingClaim {
        channel,
        key,
        session,
        nonce,
        deadline: Instant::now() + CHALLENGE_TIMEOUT,
    })
}

/// `Prove`: the signature must be over this connection's challenge, by the claimed key.
pub(crate) fn verify(claim: &PendingClaim, signature: &KeySignature) -> Result<(), Refusal> {
    claim
        .key
        .verify_claim(&claim.channel, &claim.nonce, signature)
        .map_err(|e| Refusal {
            code: ErrorCode::BadSignature,
            rejection: Rejection::BadSignature,
            message: e.to_string(),
            close: true,
        })
}

pub(crate) fn owned_by_another(channel: &ChannelName) -> Refusal {
    Refusal {
        code: ErrorCode::ChannelTaken,
        rejection: Rejection::ChannelTaken,
        message: format!("channel {channel} belongs to another key"),
        close: false,
    }
}
