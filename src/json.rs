//! JSON for token segments, read strictly: a duplicate member name or nesting deeper than
//! [`MAX_DEPTH`] is an error, not a choice.
//!
//! serde_json keeps the last of duplicate members; Envoy's jwt_authn (protobuf's JSON
//! parser) refuses them. A token `{"iss":"evil","iss":"good"}` must not mean one thing here
//! and another to a later reader, so it means nothing. The depth limit is protobuf's (100),
//! below serde_json's own (128), so no nesting that jwt_authn refuses gets through here.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Nesting levels allowed, the outermost object or array counting as one.
pub const MAX_DEPTH: usize = 100;

/// Parses `bytes` as one JSON value; `None` for invalid JSON, trailing bytes, a duplicate
/// member name at any level, or nesting deeper than [`MAX_DEPTH`].
pub fn parse_strict(bytes: &[u8]) -> Option<Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

/// A JSON value being read at `depth` levels of nesting.
struct Strict {
    depth: usize,
}

impl Strict {
    fn nested<E: Error>(&self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nesting too deep"));
        }
        Ok(Strict { depth: self.depth + 1 })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict { depth: inner.depth })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(A::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(Strict { depth: inner.depth })?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> String {
        format!("{{\"x\":{}{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1))
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a":[1,-2,3.5,"s",true,null,{"b":{}}],"c":"\u00e9"}"#;
        assert_eq!(parse_strict(text.as_bytes()), Some(serde_json::from_str::<Value>(text).unwrap()));
        assert_eq!(parse_strict(b"\"x\""), Some(json!("x")));
    }

    #[test]
    fn duplicate_members_are_refused_at_any_level() {
        assert_eq!(parse_strict(br#"{"iss":"a","iss":"b"}"#), None);
        assert_eq!(parse_strict(br#"{"x":{"k":1,"k":1}}"#), None);
        assert_eq!(parse_strict(br#"[{"k":1},{"k":1}]"#), Some(json!([{"k":1},{"k":1}])));
    }

    #[test]
    fn depth_is_capped_at_protobufs_limit() {
        assert!(parse_strict(nested(MAX_DEPTH).as_bytes()).is_some());
        assert!(parse_strict(nested(MAX_DEPTH + 1).as_bytes()).is_none());
        assert!(parse_strict(nested(5000).as_bytes()).is_none());
    }

    #[test]
    fn trailing_bytes_and_invalid_json_are_refused() {
        for bad in [&b"{} {}"[..], b"{", b"", b"{\"a\":}", b"\xff"] {
            assert_eq!(parse_strict(bad), None, "{bad:?}");
        }
    }
}
