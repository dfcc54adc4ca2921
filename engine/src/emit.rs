//! The canonical YAML of a pipeline: keys in the order of the format (SPEC section 2), block style, strings
//! quoted only where YAML would read them as something else. Export, import and export again gives the
//! same bytes. Pure: values in, text out.

use crate::model::Pipeline;
use serde_json::{Map, Value};

/// The order of a step's keys; others (none today) follow in their own order.
pub(crate) const STEP_KEYS: &[&str] = &[
    "id",
    "description",
    "uses",
    "needs",
    "if",
    "for_each",
    "concurrency",
    "with",
    "timeout",
    "retry",
    "continue_on_error",
];
pub(crate) const TOP_KEYS: &[&str] =
    &["version", "name", "description", "triggers", "vars", "defaults", "steps", "on_failure"];

fn ordered(m: &Map<String, Value>, order: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in order {
        if let Some(v) = m.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    for (k, v) in m {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The pipeline as canonical YAML.
pub fn canonical_yaml(p: &Pipeline) -> String {
    let v = serde_json::to_value(p).unwrap_or(Value::Null);
    let Value::Object(top) = v else { return String::new() };
    let mut top = ordered(&top, TOP_KEYS);
    for list in ["steps", "on_failure"] {
        if let Some(Value::Array(steps)) = top.get_mut(list) {
            for s in steps.iter_mut() {
                if let Value::Object(m) = s {
                    *m = ordered(m, STEP_KEYS);
                }
            }
        }
    }
    // Through `fmt`, so a pipeline exported from JSON and one formatted from YAML read the same (`|` blocks
    // for multi-line strings, the same quoting).
    let yaml = to_yaml(&Value::Object(top));
    crate::fmt::format(&yaml).unwrap_or(yaml)
}

/// Whether a string must be quoted to read back as the same string.
pub(crate) fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s || s.contains('\n') || s.contains('\t') || s.contains('\r') {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    let special_words =
        ["true", "false", "null", "~", "yes", "no", "on", "off", "y", "n", ".inf", "-.inf", ".nan", "<<"];
    if special_words.contains(&lower.as_str()) {
        return true;
    }
    if s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o") || s.starts_with('+') {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return true;
    }
    s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(|c| c.is_control())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if needs_quotes(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn key(k: &str) -> String {
    if needs_quotes(k) {
        serde_json::to_string(k).unwrap_or_default()
    } else {
        k.to_string()
    }
}

fn is_inline(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => scalar(other),
    }
}

fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if is_inline(val) {
                    out.push_str(&format!("{pad}{}: {}\n", key(k), inline(val)));
                } else {
                    out.push_str(&format!("{pad}{}:\n", key(k)));
                    let child = if matches!(val, Value::Array(_)) { indent } else { indent + 2 };
                    write(val, child, out);
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                if is_inline(item) {
                    out.push_str(&format!("{pad}- {}\n", inline(item)));
                } else {
                    // The first line of the item goes after the dash, the rest is indented under it.
                    let mut inner = String::new();
                    let child = match item {
                        Value::Array(_) => {
                            out.push_str(&format!("{pad}-\n"));
                            write(item, indent + 2, out);
                            continue;
                        }
                        _ => indent + 2,
                    };
                    write(item, child, &mut inner);
                    let trimmed = inner.strip_prefix(&" ".repeat(child)).unwrap_or(&inner);
                    out.push_str(&format!("{pad}- {trimmed}"));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// Any JSON value as block YAML.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    if is_inline(v) {
        out.push_str(&inline(v));
        out.push('\n');
    } else {
        write(v, 0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotes_only_what_yaml_would_misread() {
        let v = json!({ "a": "plain text", "b": "true", "c": "10", "d": "{{ x }}", "e": "", "f": "a: b",
                        "g": [1, "two", { "h": null }], "i": {}, "j": "-x", "k": "line\nbreak" });
        assert_eq!(
            to_yaml(&v),
            "a: plain text\nb: \"true\"\nc: \"10\"\nd: \"{{ x }}\"\ne: \"\"\nf: \"a: b\"\ng:\n- 1\n- two\n- h: null\ni: {}\nj: \"-x\"\nk: \"line\\nbreak\"\n"
        );
    }
}
