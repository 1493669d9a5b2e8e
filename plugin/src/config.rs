//! What every plugin shares for SPIRE's Config service: typed reading of `hcl_configuration`, the slot that holds
//! the configuration in force, and one `Config` gRPC service for all three plugins.
//!
//! Invariants: an unknown key, a value of the wrong type and a missing required key are refused with an error
//! that names the key; a refused configuration changes nothing (the one in force stays); `Configure` answers OK
//! only once the new configuration is stored; a plugin never runs with a configuration `Validate` would refuse.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use tonic::{Request, Response, Status};

use crate::hcl::{self, HclError, Value};
use crate::pb::config::config_server::Config;
use crate::pb::config::{ConfigureRequest, ConfigureResponse, CoreConfiguration, ValidateRequest, ValidateResponse};

/// Why a plugin configuration was refused. Every variant names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("{key}: {cause}")]
    Value {
        /// The key.
        key: String,
        /// The parser's error.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file a key names could not be read, or is not what it must be.
    #[error("{key} {}: {cause}", path.display())]
    File {
        /// The key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// An unacceptable value of `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.into(), reason: reason.into() }
    }

    /// A file named by `key` that is unusable.
    pub fn file(key: &'static str, path: &Path, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ConfigError::File { key, path: path.to_owned(), cause: source.into() }
    }
}

/// Decodes `hcl_configuration` into `T`, a plugin's raw config (`#[serde(deny_unknown_fields, default)]`, every
/// key optional): an unknown key, and a value of the wrong type, are refused naming the key (`urls[1]` for a list
/// item), in the words SPIRE's operators see. What is required, and what the values mean, is `T`'s owner's to check.
pub fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    T::deserialize(MapDe { entries: hcl::parse(text)?.into_iter(), pending: None, prefix: String::new() })
        .map_err(|e| e.0)
}

/// A [`ConfigError`] in serde's clothes.
#[derive(Debug)]
struct DeError(ConfigError);

impl std::fmt::Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DeError {}

impl serde::de::Error for DeError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        DeError(ConfigError::invalid("configuration", msg.to_string()))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError(ConfigError::UnknownKey { key: field.to_owned(), known: expected.join(", ") })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError(ConfigError::Missing(field))
    }
}

/// The keys of a map (the top level, or a block), each value decoded under its key's name.
struct MapDe {
    entries: std::collections::btree_map::IntoIter<String, Value>,
    pending: Option<(String, Value)>,
    prefix: String,
}

impl<'de> serde::de::MapAccess<'de> for MapDe {
    type Error = DeError;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        let name = serde::de::IntoDeserializer::<DeError>::into_deserializer(key.clone());
        let decoded = seed.deserialize(name)?;
        self.pending = Some((format!("{}{key}", self.prefix), value));
        Ok(Some(decoded))
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = self.pending.take().ok_or_else(|| serde::de::Error::custom("a value without its key"))?;
        seed.deserialize(ValueDe { key, value })
    }
}

impl<'de> serde::Deserializer<'de> for MapDe {
    type Error = DeError;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// One value, named by its key for errors.
struct ValueDe {
    key: String,
    value: Value,
}

impl ValueDe {
    fn wrong(self, want: &'static str) -> DeError {
        DeError(ConfigError::WrongType { key: self.key, want, got: self.value.kind() })
    }
}

/// The items of a list, named `key[i]`.
struct SeqDe {
    key: String,
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
}

impl<'de> serde::de::SeqAccess<'de> for SeqDe {
    type Error = DeError;

    fn next_element_seed<T: serde::de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, value)) => seed.deserialize(ValueDe { key: format!("{}[{i}]", self.key), value }).map(Some),
        }
    }
}

impl<'de> serde::Deserializer<'de> for ValueDe {
    type Error = DeError;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Str(s) | Value::Num(s) => visitor.visit_string(s),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::List(items) => visitor.visit_seq(SeqDe { key: self.key, items: items.into_iter().enumerate() }),
            Value::Block(map) => {
                visitor.visit_map(MapDe { entries: map.into_iter(), pending: None, prefix: format!("{}.", self.key) })
            }
        }
    }

    fn deserialize_bool<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(b),
            _ => Err(self.wrong("true or false")),
        }
    }

    fn deserialize_string<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Str(s) => visitor.visit_string(s),
            _ => Err(self.wrong("a string")),
        }
    }

    fn deserialize_str<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_seq<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::List(items) => visitor.visit_seq(SeqDe { key: self.key, items: items.into_iter().enumerate() }),
            _ => Err(self.wrong("a list")),
        }
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// `value` parsed as `T` (a Go duration, a URL, a TPM device), the parser's error named by `key`.
pub fn parsed<T>(key: &str, value: Option<&str>) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .map(|s| s.parse::<T>().map_err(|e| ConfigError::Value { key: key.to_owned(), cause: Box::new(e) }))
        .transpose()
}

/// A path that must not be empty when given.
pub fn path(key: &str, value: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    match value {
        Some(p) if p.as_os_str().is_empty() => Err(ConfigError::invalid(key, "an empty path")),
        other => Ok(other),
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

    /// What `Validate` answers: the notes, or why `hcl` would be refused. It must change nothing (SPIRE validates
    /// a candidate configuration beside the running one), so a plugin whose [`PluginConfig::load`] acts on
    /// something (creates files, opens a device, edits a store) overrides it with a check that only reads.
    fn check(hcl: &str, core: Option<&CoreConfiguration>) -> Result<Vec<String>, ConfigError> {
        Self::load(hcl, core).map(|(_, notes)| notes)
    }

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
        let (hcl, core) = (req.hcl_configuration, req.core_configuration);
        let checked = tokio::task::spawn_blocking(move || C::check(&hcl, core.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("configuration task failed: {e}")))?;
        Ok(Response::new(match checked {
            Ok(notes) => ValidateResponse { valid: true, notes },
            Err(e) => ValidateResponse { valid: false, notes: vec![e.to_string()] },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Raw {
        a: Option<String>,
        b: Option<bool>,
        c: Vec<String>,
        d: Option<String>,
        e: Option<PathBuf>,
    }

    #[test]
    fn decode_table() {
        let raw: Raw = decode("a = \"x\"\nb = true\nc = [\"1\", \"2\"]\nd = \"5s\"\n").unwrap();
        assert_eq!(raw.a.as_deref(), Some("x"));
        assert_eq!(raw.b, Some(true));
        assert_eq!(raw.c, ["1", "2"]);
        let d = parsed::<common::duration::GoDuration>("d", raw.d.as_deref()).unwrap();
        assert_eq!(d.map(|d| d.0.as_secs()), Some(5));
        assert!(raw.e.is_none());
        assert!(decode::<Raw>("").unwrap().a.is_none(), "every key is optional");
        for (text, want) in [
            ("a = 1", "a: expected a string, got a number"),
            ("b = \"x\"", "b: expected true or false, got a string"),
            ("c = [\"x\", 2]", "c[1]: expected a string, got a number"),
            ("c = \"x\"", "c: expected a list, got a string"),
            ("e = [\"x\"]", "e: expected a string, got a list"),
            ("zz = 1", "unknown key \"zz\" (known: a, b, c, d, e)"),
        ] {
            assert_eq!(decode::<Raw>(text).unwrap_err().to_string(), want, "{text}");
        }
        assert!(parsed::<common::duration::GoDuration>("d", Some("soon")).unwrap_err().to_string().starts_with("d: "));
        assert_eq!(path("e", Some(PathBuf::new())).unwrap_err().to_string(), "e: an empty path");
        assert!(decode::<Raw>("a = ").unwrap_err().to_string().contains("line 1"));
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
