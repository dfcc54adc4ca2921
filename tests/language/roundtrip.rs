//! No-code round trips: every example, sample and valid fixture exported as canonical YAML reads back as the
//! same pipeline, exports again byte for byte, and goes through JSON and back unchanged.

use crate::{files_under, read, validator};
use sluice_engine::emit::canonical_yaml;
use sluice_engine::Pipeline;

fn parse(file: &str, src: &str) -> Pipeline {
    let c = validator().check(file, src);
    assert!(!c.has_errors(), "{file} does not validate: {:?}\n{src}", c.diags);
    c.pipeline.clone().unwrap_or_else(|| panic!("{file}: no pipeline"))
}

#[test]
fn canonical_yaml_and_json_round_trip_every_pipeline() {
    let mut checked = 0;
    for dir in ["examples", "pipelines", "tests/fixtures/valid"] {
        for path in files_under(dir) {
            let (name, src) = read(&path);
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            let p = parse(&name, &src);
            // YAML out, and back.
            let yaml = canonical_yaml(&p);
            let again = parse(&format!("{stem}.yaml"), &yaml);
            assert_eq!(again, p, "{name}: the canonical YAML reads back differently:\n{yaml}");
            assert_eq!(canonical_yaml(&again), yaml, "{name}: exporting again changes the bytes");
            // JSON out, and back.
            let json = serde_json::to_string_pretty(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            let from_json = parse(&format!("{stem}.json"), &json);
            assert_eq!(from_json, p, "{name}: the JSON reads back differently:\n{json}");
            assert_eq!(canonical_yaml(&from_json), yaml, "{name}: JSON in, YAML out differs");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} pipelines round-tripped");
}

#[test]
fn canonical_yaml_reads_like_the_format() {
    let src = "name: x\nversion: 1\nsteps:\n  - uses: transform\n    with: { output: \"{{ trigger.body }}\" }\n    id: a\n    needs: []\ntriggers: [ { manual: {} }, { schedule: { cron: \"0 * * * *\" } } ]\n";
    let p = parse("x.yaml", src);
    assert_eq!(
        canonical_yaml(&p),
        "version: 1\nname: x\ntriggers:\n- manual: {}\n- schedule:\n    cron: 0 * * * *\nsteps:\n- id: a\n  uses: transform\n  with:\n    output: \"{{ trigger.body }}\"\n"
    );
}

#[test]
fn fmt_keeps_meaning_and_comments_and_is_idempotent() {
    let mut checked = 0;
    for dir in ["examples", "pipelines", "tests/fixtures/valid"] {
        for path in files_under(dir) {
            let (name, src) = read(&path);
            if name.ends_with(".json") {
                continue;
            }
            let p = parse(&name, &src);
            let formatted = sluice_engine::fmt::format(&src).unwrap_or_else(|d| panic!("{name}: {d:?}"));
            let again = parse(&name, &formatted);
            assert_eq!(again, p, "{name}: fmt changed the pipeline:\n{formatted}");
            let twice = sluice_engine::fmt::format(&formatted).unwrap_or_else(|d| panic!("{name}: {d:?}"));
            assert_eq!(twice, formatted, "{name}: fmt is not idempotent");
            // Every comment survives (text from a `#` after whitespace to the line's end; one inside a quoted
            // string survives as part of the string).
            for line in src.lines() {
                let at = line.char_indices().find(|(i, c)| *c == '#' && (*i == 0 || line[..*i].ends_with([' ', '\t'])));
                if let Some((i, _)) = at {
                    let text = line[i..].trim_end();
                    assert!(formatted.contains(text), "{name}: the comment `{text}` was lost:\n{formatted}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked}");
}

#[test]
fn fmt_orders_keys_and_keeps_comments_in_place() {
    let src = "# header\nname: x   # the name\nversion: 1\nsteps:\n  # the only step\n  - uses: transform\n    id: a\n    with: { output: \"{{ trigger.body }}\" }\ntriggers: [ { manual: {} } ]\n# the end\n";
    let out = sluice_engine::fmt::format(src).unwrap_or_default();
    assert_eq!(
        out,
        "version: 1\n# header\nname: x # the name\ntriggers:\n- manual: {}\nsteps:\n# the only step\n- id: a\n  uses: transform\n  with:\n    output: \"{{ trigger.body }}\"\n# the end\n"
    );
}
