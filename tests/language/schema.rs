//! The JSON Schema: generated from the Rust types, checked in, valid against the draft 2020-12
//! metaschema, and agreeing with a full validator on every fixture.

use crate::{files_under, read, root, validator};
use serde_json::json;
use sluice_engine::yaml;

#[test]
fn checked_in_schema_is_the_generated_one() {
    let generated = format!("{}\n", serde_json::to_string_pretty(validator().schema()).unwrap_or_default());
    let path = root().join("schemas/pipeline.schema.json");
    if std::env::var_os("SLUICE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("{e}"));
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "schemas/pipeline.schema.json is out of date; regenerate it with `SLUICE_UPDATE_SCHEMA=1 cargo test --test language schema`"
    );
}

#[test]
fn schema_is_valid_draft_2020_12() {
    let s = validator().schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    if let Err(e) = jsonschema::draft202012::meta::validate(s) {
        panic!("the schema is not valid draft 2020-12: {e}");
    }
}

#[test]
fn schema_documents_every_field() {
    // Every property of every definition has a description and examples, so editors can show them, and every
    // property with a default value documents it; the examples and defaults are themselves valid.
    let s = validator().schema();
    let defs = s["$defs"].as_object().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    let mut defaults = std::collections::BTreeMap::new();
    for (name, def) in defs.iter().chain(std::iter::once((&"(root)".to_string(), s))) {
        if let Some(props) = def.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                let path = format!("{name}.{k}");
                let resolved = v
                    .get("$ref")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .and_then(|d| defs.get(d));
                let get = |key: &str| v.get(key).or_else(|| resolved.and_then(|r| r.get(key)));
                if get("description").and_then(|d| d.as_str()).is_none_or(|d| d.trim().is_empty()) {
                    missing.push(format!("{path} (description)"));
                }
                let examples = get("examples").and_then(|e| e.as_array()).cloned().unwrap_or_default();
                if examples.is_empty() {
                    missing.push(format!("{path} (examples)"));
                }
                if let Some(d) = v.get("default") {
                    defaults.insert(path.clone(), d.clone());
                }
                // The property's own schema, with the definitions its `$ref`s point to.
                let mut own = v.clone();
                if let Some(o) = own.as_object_mut() {
                    o.insert("$defs".into(), serde_json::Value::Object(defs.clone()));
                }
                let check = jsonschema::draft202012::new(&own).unwrap_or_else(|e| panic!("{path}: {e}"));
                let default = v.get("default").map(|d| ("default", d));
                for (what, value) in examples.iter().map(|e| ("example", e)).chain(default) {
                    if !check.is_valid(value) {
                        invalid.push(format!("{path}: {what} {value}"));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "fields without a description or examples: {missing:?}");
    assert!(invalid.is_empty(), "examples or defaults that their own schema rejects: {invalid:?}");
    // Every field with a default value says so, with the value of SPEC sections 4 and 5.
    let expected: std::collections::BTreeMap<String, serde_json::Value> = [
        ("Verify.header", json!("x-signature-256")),
        ("ScheduleTrigger.timezone", json!("UTC")),
        ("Defaults.timeout", json!("30s")),
        ("RetryConfig.max_attempts", json!(3)),
        ("RetryConfig.backoff", json!("exponential")),
        ("RetryConfig.initial_delay", json!("1s")),
        ("RetryConfig.factor", json!(2)),
        ("RetryConfig.max_delay", json!("5m")),
        ("RetryConfig.jitter", json!("full")),
        ("RetryConfig.retry_on", json!(["network", "timeout", "http_429", "http_5xx"])),
        ("Step.concurrency", json!(10)),
        ("Step.continue_on_error", json!(false)),
        ("Step.timeout", json!("30s")),
        ("With_http.method", json!("GET")),
        ("With_http.expect_status", json!("200-299")),
        ("With_http.timeout", json!("30s")),
        ("With_log.level", json!("info")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(defaults, expected, "the schema's defaults differ from the fields' defaults");
    // `with` is checked per kind.
    let branches = s["$defs"]["Step"]["allOf"].as_array().map_or(0, Vec::len);
    assert_eq!(branches, 7);
}

/// The checker in `sluice_engine::schema` must judge shape exactly as a complete draft 2020-12 validator.
#[test]
fn shape_checks_agree_with_a_full_validator() {
    let schema = validator().schema().clone();
    let full = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{e}"));
    let ours = sluice_engine::schema::SchemaChecker::new(schema);
    let mut compared = 0;
    for dir in ["tests/fixtures/valid", "tests/fixtures/invalid", "examples", "pipelines"] {
        for f in files_under(dir) {
            let (name, text) = read(&f);
            let parsed = yaml::parse(&text);
            let Some(root) = parsed.root else { continue };
            if !parsed.diags.is_empty() {
                continue;
            }
            let ours_ok = ours.check(&root).is_empty();
            let full_ok = full.is_valid(&root.to_json());
            let why: Vec<String> =
                full.iter_errors(&root.to_json()).map(|e| format!("{} at {}", e, e.instance_path())).collect();
            assert_eq!(
                ours_ok,
                full_ok,
                "{name}: ours={ours_ok} full={full_ok}; full validator says {why:?}; ours says {:?}",
                ours.check(&root)
            );
            compared += 1;
        }
    }
    assert!(compared > 20, "only {compared} files compared");
}
