//! The filter's configuration (WasmPlugin `pluginConfig`) from the RequestAuthentications'
//! `jwtRules` and this filter's WasmPlugins, checked with the filter's own parser.

use jwt_claims_filter::config::{FilterConfig, KeySource};
use serde_json::{json, Map, Value};

use crate::conditions::Conditions;
use crate::model::{Refusal, Resource, Result};

/// What the RequestAuthentications and WasmPlugins give, before routes add conditions.
#[derive(Debug, Default)]
pub struct PluginConfig {
    /// Every field but `conditions` (those live in [`Conditions`]).
    pub fields: Map<String, Value>,
    /// The WasmPlugin resources of this filter, in input order.
    pub wasm_plugins: Vec<Resource>,
    /// The RequestAuthentications whose rules the config carries.
    pub request_authentications: Vec<Resource>,
}

const RA_FIELDS: &[&str] = &["selector", "targetRef", "targetRefs", "jwtRules"];
const WASM_PLUGIN_FIELDS: &[&str] = &[
    "selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret", "phase",
    "priority", "type", "failStrategy", "pluginName", "pluginConfig", "verificationKey",
];

/// Whether a WasmPlugin is this filter's: its image or name says so, or it carries jwtRules.
fn is_this_filter(r: &Resource) -> bool {
    let spec = r.document.get("spec");
    let url = spec.and_then(|s| s.get("url")).and_then(Value::as_str).unwrap_or_default();
    url.contains("jwt-claims-filter")
        || url.contains("jwt_claims_filter")
        || r.name == "jwt-claims-filter"
        || spec.and_then(|s| s.get("pluginConfig")).and_then(|c| c.get("jwtRules")).is_some()
}

pub fn read(resources: &[Resource], conds: &mut Conditions) -> Result<PluginConfig> {
    let mut pc = PluginConfig::default();
    let mut rules: Vec<Value> = Vec::new();
    for r in resources.iter().filter(|r| r.kind == "RequestAuthentication") {
        let spec = r.spec()?;
        spec.fields(RA_FIELDS, &[])?;
        for (at, rule) in spec.list("jwtRules")? {
            // Each rule alone through the filter's parser, so an error names this resource.
            let alone = json!({"jwtRules": [rule]});
            if let Err(e) = FilterConfig::parse(alone.to_string().as_bytes()) {
                let field = e.field.replacen("jwtRules[0]", &at, 1);
                return Err(r.refuse(if field.is_empty() { at.clone() } else { field }, e.message));
            }
            rules.push(rule.clone());
        }
        pc.request_authentications.push(r.clone());
    }
    for r in resources.iter().filter(|r| r.kind == "WasmPlugin") {
        if !is_this_filter(r) {
            return Err(r.refuse("spec.url", "is not jwt-claims-filter's WasmPlugin; the compiler serves this filter only"));
        }
        let spec = r.spec()?;
        spec.fields(WASM_PLUGIN_FIELDS, &[
            ("match", "per-mode or per-port plugin selection is not implemented; the plugin runs on every gateway port"),
            ("vmConfig", "environment variables for the VM are not implemented"),
        ])?;
        if let Some(phase) = spec.str("phase")? {
            if phase != "AUTHN" {
                r.warn("spec.phase", &format!("{phase:?}: the claim headers must exist before authorization and routing; AUTHN is the phase that guarantees it"));
            }
        }
        if let Some(config) = spec.obj("pluginConfig")? {
            check_alone(r, config.map)?;
            for (key, value) in config.map {
                let at = config.path(key);
                match key.as_str() {
                    "jwtRules" => rules.extend(value.as_array().cloned().ok_or_else(|| r.refuse(&at, "must be a list"))?),
                    "conditions" => conds.adopt(value.as_array().ok_or_else(|| r.refuse(&at, "must be a list"))?),
                    "claimHeaders" => {
                        let list = value.as_array().ok_or_else(|| r.refuse(&at, "must be a list"))?;
                        let merged = pc.fields.entry("claimHeaders").or_insert_with(|| json!([]));
                        if let Some(m) = merged.as_array_mut() {
                            m.extend(list.iter().filter(|h| !m.contains(h)).cloned().collect::<Vec<_>>());
                        }
                    }
                    _ => {
                        if pc.fields.get(key).is_some_and(|v| v != value) {
                            return Err(r.refuse(&at, "another WasmPlugin of this filter sets it to a different value"));
                        }
                        pc.fields.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        pc.wasm_plugins.push(r.clone());
    }
    if !rules.is_empty() {
        pc.fields.insert("jwtRules".into(), Value::Array(rules));
    }
    Ok(pc)
}

/// A WasmPlugin's pluginConfig through the filter's parser on its own, so that an error names
/// this resource. Without jwtRules of its own (the RequestAuthentication brings them) it is
/// checked with a placeholder rule.
fn check_alone(r: &Resource, config: &Map<String, Value>) -> Result<()> {
    let mut alone = config.clone();
    if !alone.contains_key("jwtRules") {
        alone.insert("jwtRules".into(), json!([{"issuer": "placeholder", "jwksUri": "http://placeholder/jwks.json"}]));
    }
    FilterConfig::parse(Value::Object(alone).to_string().as_bytes()).map(drop).map_err(|e| {
        let field = if e.field.is_empty() { "spec.pluginConfig".to_string() } else { format!("spec.pluginConfig.{}", e.field) };
        r.refuse(field, e.message)
    })
}

impl PluginConfig {
    /// Whether the filter runs at all: it needs at least one JWT rule.
    pub fn has_rules(&self) -> bool {
        self.fields.get("jwtRules").and_then(Value::as_array).is_some_and(|r| !r.is_empty())
    }

    /// The complete configuration with the conditions, validated as the module will read it.
    pub fn finish(&self, conds: &Conditions) -> Result<(Value, FilterConfig)> {
        let mut fields = self.fields.clone();
        if !conds.entries().is_empty() {
            fields.insert("conditions".into(), Value::Array(conds.entries().to_vec()));
        }
        let value = Value::Object(fields);
        let parsed = FilterConfig::parse(value.to_string().as_bytes()).map_err(|e| Refusal {
            resource: "the filter's configuration (RequestAuthentication jwtRules, WasmPlugin pluginConfig and the routes' conditions)".into(),
            field: e.field,
            reason: e.message,
        })?;
        Ok((value, parsed))
    }
}

/// The fetches the filter makes: (URI, cluster).
pub fn remote_keys(config: &FilterConfig) -> Vec<(jwt_claims_filter::config::HttpUri, String)> {
    config
        .rules
        .iter()
        .filter_map(|rule| match &rule.keys {
            KeySource::Remote(remote) => Some((remote.uri.clone(), remote.cluster.clone())),
            KeySource::Inline(_) => None,
        })
        .collect()
}
