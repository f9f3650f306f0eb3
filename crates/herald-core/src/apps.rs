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
