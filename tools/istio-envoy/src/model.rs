//! Istio resources as read from YAML, and the refusal every unsupported input gets.
//!
//! A resource keeps its spec as a JSON value; each reader walks it through [`Obj`], which
//! refuses fields the reader does not know, so nothing in the input is ignored silently.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Why the input cannot be compiled: the resource, the field, the reason. Exit status 2.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// `Kind namespace/name`, or the file for input that is no resource at all.
    pub resource: String,
    /// A path from the resource's root, `spec.http[0].match[1].uri`; empty for the whole.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.is_empty() {
            true => write!(f, "{}: {}", self.resource, self.reason),
            false => write!(f, "{}: {}: {}", self.resource, self.field, self.reason),
        }
    }
}

pub type Result<T> = std::result::Result<T, Refusal>;

/// The kinds the compiler reads, with the API groups Istio serves them under.
pub const KINDS: &[(&str, &str)] = &[
    ("Gateway", "networking.istio.io"),
    ("VirtualService", "networking.istio.io"),
    ("ServiceEntry", "networking.istio.io"),
    ("DestinationRule", "networking.istio.io"),
    ("RequestAuthentication", "security.istio.io"),
    ("AuthorizationPolicy", "security.istio.io"),
    ("WasmPlugin", "extensions.istio.io"),
];

/// One Istio resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: String,
    /// As written; the group is checked against the kind's.
    #[allow(dead_code)]
    pub api_version: String,
    pub name: String,
    /// `default` when the manifest names none, as `kubectl apply` would place it.
    pub namespace: String,
    /// The whole document, metadata included, for resources passed through unchanged.
    pub document: Value,
}

impl Resource {
    /// `Kind namespace/name`, how refusals and warnings name the resource.
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    pub fn refuse(&self, field: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal { resource: self.id(), field: field.into(), reason: reason.into() }
    }

    /// The spec, walked strictly.
    pub fn spec(&self) -> Result<Obj<'_>> {
        Obj::of(self, self.document.get("spec").unwrap_or(&Value::Null), "spec".to_string())
    }

    /// Prints a warning on stderr: for input that compiles, but not as a reader might assume.
    pub fn warn(&self, field: &str, message: &str) {
        match field.is_empty() {
            true => eprintln!("istio-envoy: warning: {}: {message}", self.id()),
            false => eprintln!("istio-envoy: warning: {}: {field}: {message}", self.id()),
        }
    }
}

/// A JSON object inside a resource, at a known path, whose fields are checked against a list.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    pub res: &'a Resource,
    pub map: &'a Map<String, Value>,
    at_path: &'a str,
}

/// Field paths are built as owned strings and leaked into the process for the short life of a
/// compile: it keeps [`Obj`] `Copy` and the readers free of lifetimes juggling. The compiler
/// runs once and exits.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl<'a> Obj<'a> {
    /// `v` at `at`, which must be an object.
    pub fn of(res: &'a Resource, v: &'a Value, at: String) -> Result<Obj<'a>> {
        match v {
            Value::Object(map) => Ok(Obj { res, map, at_path: leak(at) }),
            Value::Null => Err(res.refuse(at, "is required (an object)")),
            _ => Err(res.refuse(at, "must be an object")),
        }
    }

    /// The path of a field of this object.
    pub fn path(&self, field: &str) -> String {
        match field.starts_with('[') {
            true => format!("{}{field}", self.at_path),
            false => format!("{}.{field}", self.at_path),
        }
    }

    pub fn refuse(&self, field: &str, reason: impl Into<String>) -> Refusal {
        let at = if field.is_empty() { self.at_path.to_string() } else { self.path(field) };
        self.res.refuse(at, reason)
    }

    /// Refuses every field not in `known`. `unsupported` lists fields Istio has that the
    /// compiler does not implement, refused with that reason rather than as unknown.
    pub fn fields(&self, known: &[&str], unsupported: &[(&str, &str)]) -> Result<()> {
        for key in self.map.keys() {
            if let Some((_, why)) = unsupported.iter().find(|(name, _)| name == key) {
                return Err(self.refuse(key, format!("is not supported: {why}")));
            }
            if !known.contains(&key.as_str()) {
                return Err(self.refuse(key, "is not a field the compiler knows (a typo, or Istio API it does not implement)"));
            }
        }
        Ok(())
    }

    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub fn obj(&self, field: &str) -> Result<Option<Obj<'a>>> {
        self.get(field).map(|v| Obj::of(self.res, v, self.path(field))).transpose()
    }

    pub fn str(&self, field: &str) -> Result<Option<&'a str>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.refuse(field, "must be a string")),
        }
    }

    pub fn req_str(&self, field: &str) -> Result<&'a str> {
        self.str(field)?.ok_or_else(|| self.refuse(field, "is required"))
    }

    pub fn bool(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.refuse(field, "must be true or false")),
        }
    }

    pub fn u32(&self, field: &str) -> Result<Option<u32>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.refuse(field, "must be a non-negative integer")),
        }
    }

    /// A list field: each element with its path.
    pub fn list(&self, field: &str) -> Result<Vec<(String, &'a Value)>> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                Ok(items.iter().enumerate().map(|(i, v)| (format!("{}[{i}]", self.path(field)), v)).collect())
            }
            Some(_) => Err(self.refuse(field, "must be a list")),
        }
    }

    pub fn objs(&self, field: &str) -> Result<Vec<Obj<'a>>> {
        self.list(field)?.into_iter().map(|(at, v)| Obj::of(self.res, v, at)).collect()
    }

    pub fn strs(&self, field: &str) -> Result<Vec<&'a str>> {
        self.list(field)?
            .into_iter()
            .map(|(at, v)| v.as_str().ok_or_else(|| self.res.refuse(at, "must be a string")))
            .collect()
    }
}

/// Reads every YAML document of `path` (a file, or every `.yaml`/`.yml` of a folder, sorted).
pub fn load(path: &Path) -> Result<Vec<Resource>> {
    let file_refusal = |p: &Path, reason: String| Refusal { resource: p.display().to_string(), field: String::new(), reason };
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| file_refusal(path, format!("cannot read the folder: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        entries.sort();
        let mut all = Vec::new();
        for entry in entries {
            all.extend(load(&entry)?);
        }
        return Ok(all);
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_refusal(path, format!("cannot read: {e}")))?;
    parse(&text, &path.display().to_string())
}

/// The resources of a multi-document YAML text; `origin` names it in refusals.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Resource>> {
    let refusal = |reason: String| Refusal { resource: origin.to_string(), field: String::new(), reason };
    let mut resources = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| refusal(format!("document {}: not valid YAML: {e}", i + 1)))?;
        if value.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        resources.push(resource(value).map_err(|reason| refusal(format!("document {}: {reason}", i + 1)))?);
    }
    Ok(resources)
}

fn resource(document: Value) -> std::result::Result<Resource, String> {
    let text = |field: &str| document.get(field).and_then(Value::as_str).map(str::to_string);
    let kind = text("kind").ok_or("has no kind")?;
    let api_version = text("apiVersion").ok_or_else(|| format!("{kind} has no apiVersion"))?;
    let meta = document.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).ok_or_else(|| format!("{kind} has no metadata.name"))?;
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
    let Some((_, group)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        return Err(format!("{kind} {namespace}/{name}: kind {kind} is not supported (the compiler reads {})", known.join(", ")));
    };
    if let Some(extra) = document.as_object().and_then(|d| d.keys().find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str()))) {
        return Err(format!("{kind} {namespace}/{name}: {extra}: is not a field of a resource (apiVersion, kind, metadata, spec)"));
    }
    if api_version.split_once('/').map(|(g, _)| g) != Some(group) {
        return Err(format!("{kind} {namespace}/{name}: apiVersion {api_version:?} is not {group}/<version>"));
    }
    Ok(Resource { kind, api_version, name: name.to_string(), namespace: namespace.to_string(), document: document.clone() })
}
