//! A channel's key pair on disk: `streamtorrent keygen --out FILE` makes one, `broadcast
//! --key FILE` proves it to the signal server (and, later, signs the channel's content).

use std::io::Write;
use std::path::Path;

use protocol::{claim_message, ChannelKey, ChannelName, ChannelSigner, KeySignature, Nonce};

use crate::NativeError;

/// The secret half of a channel's identity.
#[derive(Clone)]
pub struct ChannelSecret {
    signing: ChannelSigner,
}

impl std::fmt::Debug for ChannelSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "ChannelSecret(public {})", self.public())
    }
}

impl ChannelSecret {
    /// A new key pair from the operating system's randomness (through `rand`'s CSPRNG).
    pub fn generate() -> ChannelSecret {
        ChannelSecret {
            signing: ChannelSigner::from_seed(&rand::random()),
        }
    }

    pub fn public(&self) -> ChannelKey {
        self.signing.public()
    }

    /// What signs the channel's content in the broadcaster's swarm.
    pub fn signer(&self) -> ChannelSigner {
        self.signing.clone()
    }

    /// The answer to the signal server's challenge for `channel`.
    pub fn sign_claim(&self, channel: &ChannelName, nonce: &Nonce) -> KeySignature {
        self.sign(&claim_message(channel, nonce))
    }

    pub fn sign(&self, message: &[u8]) -> KeySignature {
        self.signing.sign(message)
    }

    /// Writes a new key file readable by its owner only; never overwrites one.
    pub fn save(&self, path: &Path) -> Result<(), NativeError> {
        let io = |source| NativeError::Io {
            what: format!("cannot write key file {}", path.display()),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        write!(
            file,
            "# StreamTorrent channel key. Keep it secret: whoever has it can broadcast as \
             this channel.\nsecret {}\npublic {}\n",
            hex::encode(self.signing.seed()),
            self.public()
        )
        .map_err(io)
    }

    pub fn load(path: &Path) -> Result<ChannelSecret, NativeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NativeError::Io {
            what: format!("cannot read key file {}", path.display()),
            source,
        })?;
        let bad = |reason: &str| NativeError::Key(format!("{}: {reason}", path.display()));
        let secret = text
            .lines()
            .find_map(|line| line.strip_prefix("secret "))
            .ok_or_else(|| bad("no `secret` line (make one with `streamtorrent keygen`)"))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(secret.trim(), &mut seed)
            .map_err(|e| bad(&format!("the secret is not 64 hex digits: {e}")))?;
        let key = ChannelSecret {
            signing: ChannelSigner::from_seed(&seed),
        };
        if let Some(public) = text.lines().find_map(|line| line.strip_prefix("public ")) {
            if public.trim() != key.public().to_string() {
                return Err(bad("the `public` line does not match the secret"));
            }
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_key_loads_back_and_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("keygen-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("channel.key");
        let key = ChannelSecret::generate();
        key.save(&path).unwrap();
        assert_eq!(ChannelSecret::load(&path).unwrap().public(), key.public());
        assert!(
            ChannelSecret::generate().save(&path).is_err(),
            "overwrote a key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("public ", "public 00")).unwrap();
        let error = ChannelSecret::load(&path).unwrap_err().to_string();
        assert!(error.contains("does not match"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn its_claims_verify_with_its_public_key() {
        let key = ChannelSecret::generate();
        let channel: ChannelName = "news".parse().unwrap();
        let nonce = Nonce([5; 32]);
        let signature = key.sign_claim(&channel, &nonce);
        assert!(key
            .public()
            .verify_claim(&channel, &nonce, &signature)
            .is_ok());
    }
}
