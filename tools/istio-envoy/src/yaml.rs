//! Writing YAML that every reader takes the same way.
//!
//! serde_yaml_ng writes YAML 1.2, where `yes`, `on` or `2024-01-01` are plain strings; PyYAML and
//! go-yaml v2 (kubectl) read YAML 1.1 and would turn them into booleans and dates. So a string
//! is written plain only when it is plainly a name or a path; every other is double-quoted (a
//! JSON string is a valid YAML double-quoted scalar), multi-line ones are literal blocks.

use serde_json::Value;

pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, a, 0),
        _ => {
            out.push_str(&scalar(v, 0));
            out.push('\n');
        }
    }
    out
}

/// A string every YAML reader takes as that string when written plain: a name or a path, no
/// digit or indicator first, no `:` or `#` or space, not a YAML 1.1 boolean or null.
fn plain_ok(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./@|".contains(c))
        && !matches!(s.to_ascii_lowercase().as_str(), "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null")
}

fn key(k: &str) -> String {
    if plain_ok(k) {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// A scalar (or an empty collection) on the current line; `indent` is where a literal block's
/// lines go.
fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::String(s) if literal_block_ok(s) => {
            let pad = " ".repeat(indent);
            let chomp = if s.ends_with('\n') { "|" } else { "|-" };
            let body: Vec<String> = s.trim_end_matches('\n').lines().map(|l| if l.is_empty() { String::new() } else { format!("{pad}{l}") }).collect();
            format!("{chomp}\n{}", body.join("\n"))
        }
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A literal block keeps the text byte for byte only without tabs, carriage returns, trailing
/// spaces, a first line that starts with a space, or several trailing newlines.
fn literal_block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.contains(['\t', '\r'])
        && !s.starts_with(' ')
        && !s.ends_with("\n\n")
        && s.lines().all(|l| !l.ends_with(' '))
}

fn mapping(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    let pad = " ".repeat(indent);
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a sequence item follows its `- `.
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&pad);
        }
        out.push_str(&key(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                mapping(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                sequence(out, items, indent);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(v, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for v in items {
        out.push_str(&pad);
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => mapping(out, m, indent + 2),
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                sequence(out, a, indent + 2);
            }
            _ => {
                out.push_str(&scalar(v, indent + 2));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_back_as_written_and_quotes_what_yaml_1_1_would_change() {
        let v = json!({
            "a": "yes", "on": ["2024-01-01", "1_000", "y", 3, true, null, {}],
            "nested": {"list": [{"k": "v", "w": [1, 2]}, [["deep"]]], "empty": []},
            "block": "{\n  \"x\": 1\n}",
            "odd key: #": "\"quoted\" \\ é",
        });
        let text = to_yaml(&v);
        assert!(text.contains("a: \"yes\"") && text.contains("- \"2024-01-01\"") && text.contains("\"on\":"));
        assert!(text.contains("k: v") && text.contains("- \"1_000\""));
        assert!(text.contains("block: |-\n  {\n    \"x\": 1\n  }"));
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
