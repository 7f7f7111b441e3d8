//! Channel identity: a channel belongs to an Ed25519 key. A broadcaster proves it holds the
//! key by signing a fresh challenge from the signal server; the key travels as hex.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ChannelName, ProtocolError};

/// Bytes of a challenge nonce.
pub const NONCE_BYTES: usize = 32;

/// A channel's public key (Ed25519), as 64 hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelKey(VerifyingKey);

/// The secret half of a channel's identity: it signs the channel's claims and content.
/// Debug output shows only the public half.
#[derive(Clone)]
pub struct ChannelSigner(SigningKey);

/// An Ed25519 signature, as 128 hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeySignature(Signature);

/// A server's challenge, as 64 hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; NONCE_BYTES]);

/// What a broadcaster signs to claim `channel`: a fixed context, so the signature means
/// nothing anywhere else, the channel, and the server's nonce, so it is good once.
pub fn claim_message(channel: &ChannelName, nonce: &Nonce) -> Vec<u8> {
    let mut message = b"streamtorrent channel claim v1\n".to_vec();
    message.extend_from_slice(channel.as_str().as_bytes());
    message.push(b'\n');
    message.extend_from_slice(&nonce.0);
    message
}

impl ChannelKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<ChannelKey, ProtocolError> {
        VerifyingKey::from_bytes(bytes)
            .map(ChannelKey)
            .map_err(|_| invalid("key", "not an Ed25519 public key".into()))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks a broadcaster's answer to the server's challenge.
    pub fn verify_claim(
        &self,
        channel: &ChannelName,
        nonce: &Nonce,
        signature: &KeySignature,
    ) -> Result<(), ProtocolError> {
        self.0
            .verify_strict(&claim_message(channel, nonce), &signature.0)
            .map_err(|_| {
                invalid(
                    "signature",
                    format!("does not prove the key of channel {channel} for this challenge"),
                )
            })
    }

    /// Checks `signature` over `message` (strict: no malleable encodings).
    pub fn verify(&self, message: &[u8], signature: &KeySignature) -> bool {
        self.0.verify_strict(message, &signature.0).is_ok()
    }
}

impl ChannelSigner {
    /// The key pair of a 32-byte Ed25519 secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> ChannelSigner {
        ChannelSigner(SigningKey::from_bytes(seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> ChannelKey {
        ChannelKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> KeySignature {
        KeySignature(self.0.sign(message))
    }
}

/// What holds a channel's secret and signs with it. The broadcaster's swarm holds one as a
/// trait object, so a build that never signs (the browser's) carries no signing code.
pub trait ContentSigner: fmt::Debug + Send + Sync {
    fn public(&self) -> ChannelKey;
    fn sign(&self, message: &[u8]) -> KeySignature;
}

impl ContentSigner for ChannelSigner {
    fn public(&self) -> ChannelKey {
        ChannelSigner::public(self)
    }

    fn sign(&self, message: &[u8]) -> KeySignature {
        ChannelSigner::sign(self, message)
    }
}

impl fmt::Debug for ChannelSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "ChannelSigner(public {})", self.public())
    }
}

impl KeySignature {
    pub fn from_bytes(bytes: &[u8; 64]) -> KeySignature {
        KeySignature(Signature::from_bytes(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }
}

fn invalid(field: &'static str, reason: String) -> ProtocolError {
    ProtocolError::Invalid { field, reason }
}

fn decode_hex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], ProtocolError> {
    if text.len() != 2 * N {
        return Err(invalid(
            field,
            format!("expected {} hex digits, got {}", 2 * N, text.len()),
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| invalid(field, format!("not hex: {e}")))?;
    Ok(out)
}

impl FromStr for ChannelKey {
    type Err = ProtocolError;
    fn from_str(text: &str) -> Result<ChannelKey, ProtocolError> {
        ChannelKey::from_bytes(&decode_hex::<32>("key", text)?)
    }
}

impl FromStr for KeySignature {
    type Err = ProtocolError;
    fn from_str(text: &str) -> Result<KeySignature, ProtocolError> {
        Ok(KeySignature::from_bytes(&decode_hex::<64>(
            "signature",
            text,
        )?))
    }
}

impl FromStr for Nonce {
    type Err = ProtocolError;
    fn from_str(text: &str) -> Result<Nonce, ProtocolError> {
        Ok(Nonce(decode_hex::<NONCE_BYTES>("nonce", text)?))
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelKey({self})")
    }
}

impl fmt::Display for KeySignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for KeySignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySignature({self})")
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

/// Serde as hex strings, parsed (and so checked) on the way in.
macro_rules! hex_serde {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_serde!(ChannelKey);
hex_serde!(KeySignature);
hex_serde!(Nonce);

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signer(seed: u8) -> (SigningKey, ChannelKey) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let key = ChannelKey::from_bytes(&signing.verifying_key().to_bytes()).unwrap();
        (signing, key)
    }

    fn sign(signing: &SigningKey, channel: &ChannelName, nonce: &Nonce) -> KeySignature {
        KeySignature::from_bytes(&signing.sign(&claim_message(channel, nonce)).to_bytes())
    }

    #[test]
    fn a_claim_verifies_only_for_its_key_channel_and_nonce() {
        let (signing, key) = signer(1);
        let (_, other_key) = signer(2);
        let news: ChannelName = "news".parse().unwrap();
        let sports: ChannelName = "sports".parse().unwrap();
        let nonce = Nonce([7; 32]);
        let signature = sign(&signing, &news, &nonce);
        assert_eq!(key.verify_claim(&news, &nonce, &signature), Ok(()));
        // Replayed against a new challenge, moved to another channel, or another key.
        assert!(key
            .verify_claim(&news, &Nonce([8; 32]), &signature)
            .is_err());
        assert!(key.verify_claim(&sports, &nonce, &signature).is_err());
        assert!(other_key.verify_claim(&news, &nonce, &signature).is_err());
    }

    #[test]
    fn keys_signatures_and_nonces_round_trip_as_hex_and_refuse_garbage() {
        let (signing, key) = signer(3);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<ChannelKey>(&json).unwrap(), key);
        let signature = KeySignature::from_bytes(&signing.sign(b"x").to_bytes());
        assert_eq!(
            signature.to_string().parse::<KeySignature>().unwrap(),
            signature
        );
        let nonce = Nonce([0xab; 32]);
        assert_eq!(nonce.to_string().parse::<Nonce>().unwrap(), nonce);
        for (text, expect) in [
            ("abc", "expected 64 hex digits, got 3"),
            (&"zz".repeat(32), "not hex"),
        ] {
            let error = text.parse::<ChannelKey>().unwrap_err().to_string();
            assert!(error.contains(expect), "{text}: {error}");
        }
        assert!("00".repeat(63).parse::<KeySignature>().is_err());
    }
}
