//! The URL parameters of `/watch/<channel>` and `/embed/<channel>` (docs/embed.md):
//! `autoplay`, `muted`, `controls`, `latency`, `origin`, `audit`. A bad value is named in
//! a console warning and its default used: a page with a typo still plays.

use crate::latency::LatencyPreset;

#[derive(Debug, Clone, PartialEq)]
pub struct PageParams {
    /// `autoplay=0`: wait for the viewer (or the host page) to press play. Default on.
    pub autoplay: bool,
    /// `muted=0`: try to start with sound (browsers allow it only after the viewer
    /// interacted with the site; otherwise the player starts muted). Default muted.
    pub muted: bool,
    /// `controls=0`: no controls or shortcuts, for a host page that drives the embed
    /// through its iframe API. Default shown.
    pub controls: bool,
    pub latency: Option<LatencyPreset>,
    /// `origin=https://host.example`: the embed obeys commands only from a parent of
    /// that origin, and posts its messages only to it. Default: any parent.
    pub parent_origin: Option<String>,
    /// `audit=1`: `stats().appended` (docs/embed.md).
    pub audit: bool,
    /// `relay=1`: privacy mode, TURN relays only (docs/security.md).
    pub relay_only: bool,
    /// What was wrong, one line each.
    pub warnings: Vec<String>,
}

impl PageParams {
    /// `get(name)` is the parameter's decoded value (`URLSearchParams.get`).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> PageParams {
        let mut warnings = Vec::new();
        let mut flag = |name: &str, default: bool| match get(name).as_deref() {
            None => default,
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(other) => {
                warnings.push(format!(
                    "URL parameter {name}={other:?} must be 1 or 0; using {}",
                    u8::from(default)
                ));
                default
            }
        };
        let autoplay = flag("autoplay", true);
        let muted = flag("muted", true);
        let controls = flag("controls", true);
        let audit = flag("audit", false);
        let relay_only = flag("relay", false);
        let latency = get("latency").and_then(|name| match name.parse() {
            Ok(preset) => Some(preset),
            Err(e) => {
                warnings.push(format!("URL parameter {e}; using normal"));
                None
            }
        });
        let parent_origin = get("origin").map(|origin| match parse_origin(&origin) {
            Some(origin) => origin,
            None => {
                warnings.push(format!(
                    "URL parameter origin={origin:?} must be an origin like \
                     https://host.example; commands are refused until it is"
                ));
                // Refusing everything is safer than obeying anyone when the host
                // meant to restrict.
                String::from("invalid:")
            }
        });
        PageParams {
            autoplay,
            muted,
            controls,
            latency,
            parent_origin,
            audit,
            relay_only,
            warnings,
        }
    }
}

/// `scheme://host[:port]`, as `MessageEvent.origin` spells it: no path, no trailing slash.
fn parse_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let valid_scheme = matches!(scheme, "http" | "https");
    let valid_host = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    (valid_scheme && valid_host).then(|| origin.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> PageParams {
        PageParams::parse(|name| {
            query
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_play_muted_with_controls() {
        let p = parse(&[]);
        assert!(p.autoplay && p.muted && p.controls && !p.audit);
        assert_eq!((p.latency, p.parent_origin), (None, None));
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn each_parameter_takes_effect() {
        let p = parse(&[
            ("autoplay", "0"),
            ("muted", "false"),
            ("controls", "0"),
            ("latency", "low"),
            ("origin", "https://Host.example:8443"),
            ("audit", "1"),
        ]);
        assert!(!p.autoplay && !p.muted && !p.controls && p.audit);
        assert_eq!(p.latency, Some(LatencyPreset::Low));
        assert_eq!(
            p.parent_origin.as_deref(),
            Some("https://host.example:8443")
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn bad_values_are_named_and_defaulted() {
        let p = parse(&[("autoplay", "yes"), ("latency", "fast")]);
        assert!(p.autoplay);
        assert_eq!(p.latency, None);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("autoplay=\"yes\""));
        assert!(p.warnings[1].contains("\"fast\""));
    }

    #[test]
    fn a_malformed_origin_restricts_to_nobody() {
        for bad in [
            "host.example",
            "https://host.example/path",
            "javascript://x",
        ] {
            let p = parse(&[("origin", bad)]);
            assert_eq!(p.parent_origin.as_deref(), Some("invalid:"), "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}");
        }
    }
}
