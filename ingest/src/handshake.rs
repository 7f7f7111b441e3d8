//! The RTMP handshake, server side: C0+C1 in, S0+S1+S2 out, C2 in. The simple form: S2
//! echoes C1, and C2 is read but not checked (clients that send the digest form, ffmpeg
//! and OBS among them, accept a plain reply when publishing).

use crate::IngestError;

const VERSION: u8 = 3;
const PACKET: usize = 1536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Waiting for C0 and C1.
    Start,
    /// S0-S2 sent, waiting for C2.
    SentReply,
    Done,
}

impl Handshake {
    /// Consumes what the handshake needs from `input`, writing replies to `output`; returns
    /// how many bytes it took (0: it needs more).
    pub fn advance(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<usize, IngestError> {
        match self {
            Handshake::Start => {
                let Some(&version) = input.first() else {
                    return Ok(0);
                };
                if version != VERSION {
                    return Err(IngestError::Rtmp(not_rtmp(version)));
                }
                if input.len() < 1 + PACKET {
                    return Ok(0);
                }
                output.push(VERSION);
                // S1: time 0, zero, then filler. Nothing here is secret or checked.
                output.extend_from_slice(&[0; 8]);
                output.extend((0..PACKET - 8).map(|i| (i * 7 % 251) as u8));
                // S2: C1 echoed.
                output.extend_from_slice(&input[1..1 + PACKET]);
                *self = Handshake::SentReply;
                Ok(1 + PACKET)
            }
            Handshake::SentReply => {
                if input.len() < PACKET {
                    return Ok(0);
                }
                *self = Handshake::Done;
                Ok(PACKET)
            }
            Handshake::Done => Ok(0),
        }
    }
}

/// What a wrong first byte most likely means, for the publisher's log.
fn not_rtmp(first: u8) -> String {
    let guess = match first {
        b'G' | b'P' | b'H' | b'O' => " (an HTTP request: the RTMP port is not the web port)",
        0x16 => " (TLS: rtmps:// is not served here; use rtmp://)",
        6 => " (encrypted RTMPE is not supported)",
        _ => "",
    };
    format!("not an RTMP handshake: version byte {first}, expected 3{guess}")
}
