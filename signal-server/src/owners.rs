//! Which key owns which channel. The first broadcaster to prove a key claims the channel;
//! from then on only that key may broadcast on it, across reconnects and, with an owners
//! file, across server restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protocol::{ChannelKey, ChannelName};

#[derive(Debug, Default)]
pub struct Owners {
    keys: BTreeMap<ChannelName, ChannelKey>,
    /// Where claims are kept (JSON: `{"channel": "hex key"}`), if anywhere.
    file: Option<PathBuf>,
}

impl Owners {
    /// Loads the owners file if it exists; a missing file is an empty registry.
    pub fn load(file: Option<&Path>) -> Result<Owners, String> {
        let mut owners = Owners {
            keys: BTreeMap::new(),
            file: file.map(Path::to_path_buf),
        };
        let Some(path) = file else {
            return Ok(owners);
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                owners.keys = serde_json::from_str(&text)
                    .map_err(|e| format!("owners file {}: {e}", path.display()))?;
                Ok(owners)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(owners),
            Err(e) => Err(format!("cannot read owners file {}: {e}", path.display())),
        }
    }

    pub fn key(&self, channel: &ChannelName) -> Option<ChannelKey> {
        self.keys.get(channel).copied()
    }

    /// Whether `key` may broadcast on `channel`: it owns it, or nobody does yet.
    pub fn may_broadcast(&self, channel: &ChannelName, key: &ChannelKey) -> bool {
        self.keys.get(channel).is_none_or(|owner| owner == key)
    }

    /// Remembers an owner another server recorded (in Redis), for while Redis is away;
    /// never written to the owners file.
    pub fn remember(&mut self, channel: ChannelName, key: ChannelKey) {
        self.keys.insert(channel, key);
    }

    /// Records a proven claim. Persisting is best effort: a full disk must not stop the
    /// broadcast, so a failure is returned for the log.
    pub fn claim(&mut self, channel: ChannelName, key: ChannelKey) -> Result<(), String> {
        if self.keys.insert(channel, key) == Some(key) {
            return Ok(());
        }
        let Some(path) = &self.file else {
            return Ok(());
        };
        let json = serde_json::to_string_pretty(&self.keys).map_err(|e| e.to_string())?;
        // Written beside, then renamed: a crash never leaves half a file.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, json)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| format!("cannot write owners file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ChannelKey {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[byte; 32]);
        ChannelKey::from_bytes(&signing.verifying_key().to_bytes()).unwrap()
    }

    #[test]
    fn the_first_proven_key_owns_the_channel_across_restarts() {
        let dir = std::env::temp_dir().join(format!("owners-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("owners.json");
        let _ = std::fs::remove_file(&file);
        let news: ChannelName = "news".parse().unwrap();
        let mut owners = Owners::load(Some(&file)).unwrap();
        assert!(owners.may_broadcast(&news, &key(1)));
        owners.claim(news.clone(), key(1)).unwrap();
        assert!(!owners.may_broadcast(&news, &key(2)));
        let reloaded = Owners::load(Some(&file)).unwrap();
        assert_eq!(reloaded.key(&news), Some(key(1)));
        assert!(!reloaded.may_broadcast(&news, &key(2)));
        std::fs::write(&file, "{not json").unwrap();
        assert!(Owners::load(Some(&file))
            .unwrap_err()
            .contains("owners file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
