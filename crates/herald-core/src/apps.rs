//! The apps Herald serves and the access keys that may call the OpenAPI for them.

use std::collections::{HashMap, HashSet};

use herald_proto::ids::AppId;

/// One app, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The AppId (24 characters for clients to be able to log in: the token format needs it).
    pub app_id: AppId,
    /// The AppKey that signs this app's client tokens.
    pub app_key: String,
    /// Messaging calls per second allowed for this app, summed over the four actions.
    pub qps_limit: u32,
    /// Access keys (AK, SK) allowed to call the OpenAPI for this app.
    pub access_keys: Vec<(String, String)>,
    /// Messages per second one connection may send (`sendUserMessage…`, `sendRoomMessage`,
    /// `sendServerMessage` together).
    pub client_send_rate: u32,
    /// Whether room members are told of each other (`onUserJoined`, `onUserLeave`). Costs one
    /// event per member for every join and leave.
    pub presence_events: bool,
    /// URL prefixes `setServerParams` may point at (`scheme://host[:port]/path…`); empty: none.
    pub server_message_urls: Vec<String>,
}

impl AppSpec {
    /// An app with the defaults for everything but its id and key.
    pub fn new(app_id: AppId, app_key: impl Into<String>) -> Self {
        AppSpec {
            app_id,
            app_key: app_key.into(),
            qps_limit: 500,
            access_keys: Vec::new(),
            client_send_rate: 100,
            presence_events: true,
            server_message_urls: Vec::new(),
        }
    }

    /// Whether `url` is allowed by the app's allow-list: the same scheme, host and port as an
    /// entry, and a path that starts with the entry's path. Compared on the parsed origin, so
    /// `http://good.example.evil.test/` never matches an entry for `http://good.example/`.
    pub fn server_url_allowed(&self, url: &str) -> bool {
        let Some((origin, path)) = split_url(url) else {
            return false;
        };
        self.server_message_urls.iter().any(|entry| {
            split_url(entry)
                .is_some_and(|(o, p)| o.eq_ignore_ascii_case(origin) && path.starts_with(p))
        })
    }
}

/// Splits `scheme://authority/path` into (`scheme://authority`, `/path`). Refuses userinfo
/// (`user@host`), which could hide the real host, and anything that is not http or https.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let scheme_len = url.len() - rest.len();
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.is_empty() || authority.contains('@') || url.chars().any(char::is_whitespace) {
        return None;
    }
    let path = &rest[authority_end..];
    let path = if path.is_empty() { "/" } else { path };
    Some((&url[..scheme_len + authority_end], path))
}

/// Why a set of app specs cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two apps share an AppId.
    #[error("app_id {0} is configured twice")]
    DuplicateApp(String),
    /// One AK is given two different SKs.
    #[error("access key {0} is configured with two different secret keys")]
    ConflictingSecret(String),
}

/// An access key: its secret and the apps it may act for.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// The secret key.
    pub secret: String,
    /// The apps this key owns.
    pub apps: HashSet<AppId>,
}

/// The immutable table of apps and access keys, built once at start-up.
#[derive(Debug, Default)]
pub struct Registry {
    apps: HashMap<AppId, AppSpec>,
    keys: HashMap<String, AccessKey>,
}

impl Registry {
    /// Builds the registry, refusing duplicate apps and an AK with two secrets.
    pub fn new(specs: Vec<AppSpec>) -> Result<Self, RegistryError> {
        let mut reg = Registry::default();
        for spec in specs {
            for (ak, sk) in &spec.access_keys {
                let key = reg.keys.entry(ak.clone()).or_insert_with(|| AccessKey {
                    secret: sk.clone(),
                    apps: HashSet::new(),
                });
                if key.secret != *sk {
                    return Err(RegistryError::ConflictingSecret(ak.clone()));
                }
                key.apps.insert(spec.app_id.clone());
            }
            if reg.apps.contains_key(&spec.app_id) {
                return Err(RegistryError::DuplicateApp(spec.app_id.to_string()));
            }
            reg.apps.insert(spec.app_id.clone(), spec);
        }
        Ok(reg)
    }

    /// The app with this id.
    pub fn app(&self, id: &str) -> Option<&AppSpec> {
        self.apps.get(id)
    }

    /// All apps.
    pub fn apps(&self) -> impl Iterator<Item = &AppSpec> {
        self.apps.values()
    }

    /// The access key with this id.
    pub fn access_key(&self, ak: &str) -> Option<&AccessKey> {
        self.keys.get(ak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_match_on_origin_and_path_prefix() {
        let mut spec = AppSpec::new(AppId::new("a").unwrap(), "k");
        spec.server_message_urls = vec![
            "http://biz.example:8080/rtc/".into(),
            "https://b.example".into(),
        ];
        for ok in [
            "http://biz.example:8080/rtc/",
            "http://biz.example:8080/rtc/messages?x=1",
            "https://b.example/anything",
            "https://b.example",
        ] {
            assert!(spec.server_url_allowed(ok), "{ok}");
        }
        for bad in [
            "http://biz.example:8080/other",
            "http://biz.example/rtc/",
            "http://biz.example:8080.evil.test/rtc/",
            "http://evil@biz.example:8080/rtc/",
            "https://b.example.evil.test/",
            "ftp://b.example/",
            "http://biz.example:8080/rtc/ x",
            "",
            "b.example",
        ] {
            assert!(!spec.server_url_allowed(bad), "{bad}");
        }
        assert!(
            !AppSpec::new(AppId::new("a").unwrap(), "k").server_url_allowed("https://b.example/")
        );
    }
}
