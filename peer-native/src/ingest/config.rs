//! The channels `streamtorrent ingest` serves: one from flags, or several from a TOML file:
//!
//! ```toml
//! [[channel]]
//! name = "news"
//! key = "news.key"        # from `streamtorrent keygen`; relative to this file's folder
//! stream_key = "a long random secret"
//! ```

use std::collections::HashSet;
use std::path::Path;

use ingest::StreamKey;
use protocol::ChannelName;
use serde::Deserialize;

use super::IngestChannel;
use crate::identity::ChannelSecret;
use crate::NativeError;

/// Shortest stream key accepted: anything shorter could be guessed by trying.
pub const MIN_STREAM_KEY_CHARS: usize = 12;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    channel: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    key: std::path::PathBuf,
    stream_key: String,
}

/// One channel from flags.
pub fn from_flags(
    channel: ChannelName,
    key: &Path,
    stream_key: &str,
) -> Result<Vec<IngestChannel>, NativeError> {
    Ok(vec![IngestChannel {
        stream_key: stream_key_of(&channel, stream_key)?,
        key: ChannelSecret::load(key)?,
        channel,
    }])
}

/// Every channel of a TOML file, each with its own stream key.
pub fn from_file(path: &Path) -> Result<Vec<IngestChannel>, NativeError> {
    let text = std::fs::read_to_string(path).map_err(|source| NativeError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })?;
    let file: File = toml::from_str(&text)
        .map_err(|e| NativeError::Config(format!("{}: {e}", path.display())))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut out = Vec::new();
    for entry in file.channel {
        let channel: ChannelName = entry.name.parse().map_err(|e| {
            NativeError::Config(format!("{}: channel {:?}: {e}", path.display(), entry.name))
        })?;
        if !names.insert(channel.clone()) {
            return Err(NativeError::Config(format!(
                "{}: channel {channel} is listed twice",
                path.display()
            )));
        }
        if !keys.insert(entry.stream_key.clone()) {
            return Err(NativeError::Config(format!(
                "{}: channel {channel} has the same stream key as another channel",
                path.display()
            )));
        }
        out.push(IngestChannel {
            stream_key: stream_key_of(&channel, &entry.stream_key)?,
            key: ChannelSecret::load(&folder.join(&entry.key))?,
            channel,
        });
    }
    if out.is_empty() {
        return Err(NativeError::Config(format!(
            "{}: no [[channel]] listed",
            path.display()
        )));
    }
    Ok(out)
}

fn stream_key_of(channel: &ChannelName, key: &str) -> Result<StreamKey, NativeError> {
    let chars = key.chars().count();
    if chars < MIN_STREAM_KEY_CHARS
        || key.contains(['/', '?'])
        || key.chars().any(char::is_whitespace)
    {
        return Err(NativeError::Config(format!(
            "channel {channel}: a stream key must be at least {MIN_STREAM_KEY_CHARS} characters, \
             without spaces, '/' or '?' (it ends the RTMP URL)"
        )));
    }
    StreamKey::new(key).map_err(|e| NativeError::Config(format!("channel {channel}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_channels_and_refuses_repeats_and_short_keys() {
        let dir = std::env::temp_dir().join(format!("ingest-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ChannelSecret::generate().save(&dir.join("a.key")).ok();
        ChannelSecret::generate().save(&dir.join("b.key")).ok();
        let good = write(
            &dir,
            "good.toml",
            "[[channel]]\nname = \"news\"\nkey = \"a.key\"\nstream_key = \"first-secret-key\"\n\
             [[channel]]\nname = \"sport\"\nkey = \"b.key\"\nstream_key = \"second-secret-key\"\n",
        );
        let channels = from_file(&good).unwrap();
        let names: Vec<&str> = channels.iter().map(|c| c.channel.as_str()).collect();
        assert_eq!(names, ["news", "sport"]);
        for (name, text, wanted) in [
            ("twice.toml", "[[channel]]\nname = \"news\"\nkey = \"a.key\"\nstream_key = \"first-secret-key\"\n[[channel]]\nname = \"news\"\nkey = \"b.key\"\nstream_key = \"second-secret-key\"\n", "listed twice"),
            ("same.toml", "[[channel]]\nname = \"news\"\nkey = \"a.key\"\nstream_key = \"first-secret-key\"\n[[channel]]\nname = \"sport\"\nkey = \"b.key\"\nstream_key = \"first-secret-key\"\n", "same stream key"),
            ("short.toml", "[[channel]]\nname = \"news\"\nkey = \"a.key\"\nstream_key = \"short\"\n", "at least 12"),
            ("typo.toml", "[[channel]]\nname = \"news\"\nkey = \"a.key\"\nstreamkey = \"first-secret-key\"\n", "unknown field"),
            ("empty.toml", "channel = []\n", "no [[channel]]"),
        ] {
            let err = from_file(&write(&dir, name, text)).err().expect(name).to_string();
            assert!(err.contains(wanted), "{name}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
