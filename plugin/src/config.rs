//! What every plugin shares for SPIRE's Config service: typed reading of `hcl_configuration`, the slot that holds
//! the configuration in force, and one `Config` gRPC service for all three plugins.
//!
//! Invariants: an unknown key, a value of the wrong type and a missing required key are refused with an error
//! that names the key; a refused configuration changes nothing (the one in force stays); `Configure` answers OK
//! only once the new configuration is stored; a plugin never runs with a configuration `Validate` would refuse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use tonic::{Request, Response, Status};

use crate::hcl::{self, HclError, Value};
use crate::pb::config::config_server::Config;
use crate::pb::config::{ConfigureRequest, ConfigureResponse, CoreConfiguration, ValidateRequest, ValidateResponse};

/// Why a plugin configuration was refused. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not HCL.
    #[error(transparent)]
    Hcl(#[from] HclError),
    /// A key the plugin does not know.
    #[error("unknown key {key:?} (known: {known})")]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys it knows, comma-separated.
        known: String,
    },
    /// A value of the wrong type.
    #[error("{key}: expected {want}, got {got}")]
    WrongType {
        /// The key (`urls[0]` for a list item).
        key: String,
        /// What it must be.
        want: &'static str,
        /// What it is.
        got: &'static str,
    },
    /// A required key is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A value that parsed but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A value that did not parse.
    #[error("{key}: {source}")]
    Value {
        /// The key.
        key: String,
        /// The parser's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file a key names could not be read, or is not what it must be.
    #[error("{key} {}: {source}", path.display())]
    File {
        /// The key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// An unacceptable value of `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.into(), reason: reason.into() }
    }

    /// A file named by `key` that is unusable.
    pub fn file(key: &'static str, path: &Path, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ConfigError::File { key, path: path.to_owned(), source: source.into() }
    }
}

/// The keys of one `hcl_configuration`, taken one by one with their types; every key must be known.
#[derive(Debug)]
pub struct Fields {
    map: BTreeMap<String, Value>,
}

impl Fields {
    /// Parses `text` and refuses any key not in `known`.
    pub fn parse(text: &str, known: &[&str]) -> Result<Fields, ConfigError> {
        let map = hcl::parse(text)?;
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ConfigError::UnknownKey { key: key.clone(), known: known.join(", ") });
        }
        Ok(Fields { map })
    }

    fn wrong(key: &str, want: &'static str, got: &Value) -> ConfigError {
        ConfigError::WrongType { key: key.to_owned(), want, got: got.kind() }
    }

    /// A string value.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(Self::wrong(key, "a string", &other)),
        }
    }

    /// A boolean value.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Self::wrong(key, "true or false", &other)),
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Str(s) => Ok(s),
                    other => Err(Self::wrong(&format!("{key}[{i}]"), "a string", &other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(Self::wrong(key, "a list of strings", &other)),
        }
    }

    /// A string value parsed as `T`.
    pub fn parsed<T>(&mut self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.string(key)?
            .map(|s| s.parse::<T>().map_err(|e| ConfigError::Value { key: key.to_owned(), source: Box::new(e) }))
            .transpose()
    }

    /// A non-empty path.
    pub fn path(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.is_empty() => Err(ConfigError::invalid(key, "an empty path")),
            other => Ok(other.map(PathBuf::from)),
        }
    }
}

/// Reads a file a key names.
pub fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::file(key, path, e))
}

/// A plugin's configuration, as `Configure` and `Validate` see it.
pub trait PluginConfig: Sized + Send + Sync + 'static {
    /// Parses `hcl` and loads what it names (files, clients). Returns the notes `Validate` reports.
    fn load(hcl: &str, core: Option<&CoreConfiguration>) -> Result<(Self, Vec<String>), ConfigError>;

    /// Logs what is now configured (never a secret).
    fn log_configured(&self);
}

/// The configuration in force: none until the first `Configure`, then replaced whole by each accepted one.
#[derive(Debug)]
pub struct ConfigSlot<C>(RwLock<Option<Arc<C>>>);

impl<C> Default for ConfigSlot<C> {
    fn default() -> Self {
        ConfigSlot(RwLock::new(None))
    }
}

impl<C> ConfigSlot<C> {
    /// The configuration in force, or `FailedPrecondition` before the first `Configure`.
    pub fn get(&self) -> Result<Arc<C>, Status> {
        common::sync::read(&self.0).clone().ok_or_else(|| Status::failed_precondition("not configured"))
    }

    /// Puts `config` in force.
    pub fn set(&self, config: C) {
        *common::sync::write(&self.0) = Some(Arc::new(config));
    }
}

/// SPIRE's Config service for any plugin: `Configure` loads and stores, `Validate` loads and reports.
#[derive(Debug)]
pub struct ConfigService<C>(pub Arc<ConfigSlot<C>>);

impl<C> Clone for ConfigService<C> {
    fn clone(&self) -> Self {
        ConfigService(self.0.clone())
    }
}

/// Loads off the async thread: loading reads files.
async fn load<C: PluginConfig>(
    hcl: String,
    core: Option<CoreConfiguration>,
) -> Result<Result<(C, Vec<String>), ConfigError>, Status> {
    tokio::task::spawn_blocking(move || C::load(&hcl, core.as_ref()))
        .await
        .map_err(|e| Status::internal(format!("configuration task failed: {e}")))
}

#[tonic::async_trait]
impl<C: PluginConfig> Config for ConfigService<C> {
    async fn configure(&self, req: Request<ConfigureRequest>) -> Result<Response<ConfigureResponse>, Status> {
        let req = req.into_inner();
        let (config, notes) = load::<C>(req.hcl_configuration, req.core_configuration).await?.map_err(|e| {
            tracing::error!(error = %e, "configuration refused");
            Status::invalid_argument(format!("failed to decode configuration: {e}"))
        })?;
        for note in notes {
            tracing::info!("{note}");
        }
        config.log_configured();
        self.0.set(config);
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(&self, req: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(match load::<C>(req.hcl_configuration, req.core_configuration).await? {
            Ok((_, notes)) => ValidateResponse { valid: true, notes },
            Err(e) => ValidateResponse { valid: false, notes: vec![e.to_string()] },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_table() {
        let mut f =
            Fields::parse("a = \"x\"\nb = true\nc = [\"1\", \"2\"]\nd = \"5s\"\n", &["a", "b", "c", "d", "e"]).unwrap();
        assert_eq!(f.string("a").unwrap().as_deref(), Some("x"));
        assert_eq!(f.bool("b").unwrap(), Some(true));
        assert_eq!(f.strings("c").unwrap(), Some(vec!["1".to_string(), "2".to_string()]));
        assert_eq!(f.parsed::<common::duration::GoDuration>("d").unwrap().map(|d| d.0.as_secs()), Some(5));
        assert_eq!(f.string("e").unwrap(), None);
        type Take = fn(&mut Fields) -> Result<(), ConfigError>;
        let bad: [(&str, Take, &str); 6] = [
            ("a = 1", |f| f.string("a").map(drop), "a: expected a string, got a number"),
            ("a = \"x\"", |f| f.bool("a").map(drop), "a: expected true or false, got a string"),
            ("a = [\"x\", 2]", |f| f.strings("a").map(drop), "a[1]: expected a string, got a number"),
            ("a = \"x\"", |f| f.strings("a").map(drop), "a: expected a list of strings"),
            ("a = \"soon\"", |f| f.parsed::<common::duration::GoDuration>("a").map(drop), "a: "),
            ("a = \"\"", |f| f.path("a").map(drop), "a: an empty path"),
        ];
        for (text, take, want) in bad {
            let err = take(&mut Fields::parse(text, &["a"]).unwrap()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
        }
        let err = Fields::parse("zz = 1", &["a", "b"]).unwrap_err().to_string();
        assert_eq!(err, "unknown key \"zz\" (known: a, b)");
        assert!(Fields::parse("a = ", &["a"]).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn a_slot_is_empty_until_set_and_then_replaced_whole() {
        let slot = ConfigSlot::<u32>::default();
        assert_eq!(slot.get().unwrap_err().code(), tonic::Code::FailedPrecondition);
        slot.set(1);
        let held = slot.get().unwrap();
        slot.set(2);
        assert_eq!((*held, *slot.get().unwrap()), (1, 2), "a caller keeps the configuration it started with");
    }
}
