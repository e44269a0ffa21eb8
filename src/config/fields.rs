//! Reading the configuration's JSON by hand, so that every error names its field
//! (`jwtRules[0].timeout: ...`) and unknown fields are refused.

use std::time::Duration;

use serde_json::{Map, Value};

use super::values::parse_duration;
use super::ConfigError;

pub(super) fn error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), message: message.into() }
}

pub(super) fn as_object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object().ok_or_else(|| error(at, format!("expected an object, found {}", kind(v))))
}

pub(super) fn as_array<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>, ConfigError> {
    v.as_array().ok_or_else(|| error(at, format!("expected a list, found {}", kind(v))))
}

pub(super) fn as_str<'a>(v: &'a Value, at: &str) -> Result<&'a str, ConfigError> {
    v.as_str().ok_or_else(|| error(at, format!("expected a string, found {}", kind(v))))
}

pub(super) fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<Option<&'a str>, ConfigError> {
    obj.get(key).map(|v| as_str(v, at)).transpose()
}

pub(super) fn opt_bool(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<bool>, ConfigError> {
    obj.get(key)
        .map(|v| v.as_bool().ok_or_else(|| error(at, format!("expected true or false, found {}", kind(v)))))
        .transpose()
}

pub(super) fn opt_string_list(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>, ConfigError> {
    match obj.get(key) {
        None => Ok(Vec::new()),
        Some(v) => as_array(v, at)?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = as_str(s, &format!("{at}[{i}]"))?;
                if s.is_empty() {
                    return Err(error(&format!("{at}[{i}]"), "must not be empty"));
                }
                Ok(s.to_string())
            })
            .collect(),
    }
}

pub(super) fn opt_duration(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<Duration>, ConfigError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => {
            let text = as_str(v, at)?;
            parse_duration(text)
                .map(Some)
                .ok_or_else(|| error(at, format!("{text:?} is not a duration like \"5s\" or \"1.5s\"")))
        }
    }
}

pub(super) fn reject_unknown(obj: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), ConfigError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => {
            let field = if at.is_empty() { unknown.clone() } else { format!("{at}.{unknown}") };
            Err(error(&field, format!("unknown field; expected one of: {}", known.join(", "))))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
