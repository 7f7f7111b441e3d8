//! The STUN/TURN servers each peer gets on join, with TURN credentials in coturn's REST
//! scheme: username `expiry:peer`, password base64(HMAC-SHA1(secret, username)). coturn
//! (`use-auth-secret`, `static-auth-secret=...`) accepts them until `expiry` without any
//! call back to this server.

use base64::Engine;
use hmac::{Hmac, Mac};
use protocol::{IceServer, PeerId};
use sha1::Sha1;

use crate::ServerConfig;

/// The ICE servers for `peer` at `now_unix` (seconds since 1970).
pub fn ice_servers(config: &ServerConfig, peer: PeerId, now_unix: u64) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !config.stun.is_empty() {
        servers.push(IceServer {
            urls: config.stun.clone(),
            username: None,
            credential: None,
        });
    }
    if let (false, Some(secret)) = (config.turn.is_empty(), &config.turn_secret) {
        let (username, credential) =
            turn_credentials(secret, peer, now_unix + config.turn_ttl_secs);
        servers.push(IceServer {
            urls: config.turn.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    servers
}

/// coturn REST credentials valid until `expiry` (unix seconds).
pub fn turn_credentials(secret: &str, peer: PeerId, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{peer}");
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_known_vectors() {
        // Expected values computed independently with Python's hmac/hashlib/base64.
        assert_eq!(
            turn_credentials("north", PeerId(42), 1_700_003_600),
            (
                "1700003600:p42".into(),
                "DrflJ1zL7PzqSN+UU2x2oUTW21s=".into()
            )
        );
        assert_eq!(
            turn_credentials("s3cr3t-with-längth", PeerId(1), 86_400),
            ("86400:p1".into(), "c+Mb0oHkG3+aJA58Xz2bOc1CWMg=".into())
        );
    }

    #[test]
    fn servers_follow_the_configuration() {
        let mut config = ServerConfig::with_web_dir("web/dist");
        assert!(ice_servers(&config, PeerId(1), 0).is_empty());
        config.stun = vec!["stun:stun.example:3478".into()];
        config.turn = vec![
            "turn:turn.example:3478".into(),
            "turns:turn.example:5349".into(),
        ];
        // TURN without a secret gives no credentials, so no TURN entry.
        assert_eq!(ice_servers(&config, PeerId(1), 0).len(), 1);
        config.turn_secret = Some("north".into());
        config.turn_ttl_secs = 3600;
        let servers = ice_servers(&config, PeerId(42), 1_700_000_000);
        assert_eq!(servers[0].urls, vec!["stun:stun.example:3478".to_string()]);
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1700003600:p42"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("DrflJ1zL7PzqSN+UU2x2oUTW21s=")
        );
    }
}
