//! Arbitrary and mutated input never panics or hangs `validate`.

use crate::{files_under, read, validator};
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn corpus() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for dir in ["tests/fixtures/valid", "examples"] {
        v.extend(files_under(dir).iter().map(|f| read(f).1));
    }
    v
}

fn check_quickly(name: &str, src: &str) {
    let start = Instant::now();
    let c = validator().check(name, src);
    // Not a timing test: a generous bound that only a hang or a blow-up would cross.
    assert!(start.elapsed() < Duration::from_secs(5), "validate took {:?}", start.elapsed());
    for d in &c.diags {
        let _ = sluice_engine::diag::render(d, src);
        assert!(d.span.start.line >= 1 && d.span.start.col >= 1, "{d:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,400}") {
        check_quickly("fuzz.yaml", &src);
    }

    #[test]
    fn yaml_shaped_noise_never_panics(src in "([ \\-:{}\\[\\]&*!|>'\"#,\\n]|[a-z]{1,6}|\\{\\{|\\}\\}|[0-9]{1,3}){0,120}") {
        check_quickly("fuzz.yaml", &src);
    }

    #[test]
    fn mutated_pipelines_never_panic(pick in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..6, "[ -~\\n]{0,8}"), 1..6)) {
        let corpus = corpus();
        let mut src: Vec<char> = pick.get(&corpus).chars().collect();
        for (at, op, text) in edits {
            if src.is_empty() { break; }
            let i = at.index(src.len());
            match op {
                0 => { src.remove(i); }
                1 => { for (k, c) in text.chars().enumerate() { src.insert(i + k, c); } }
                2 => { let end = (i + text.len()).min(src.len()); src.drain(i..end); }
                3 => { src.insert(i, '\t'); }
                4 => { src.insert(i, '{'); src.insert(i, '{'); }
                _ => { let line_start = src[..i].iter().rposition(|c| *c == '\n').map_or(0, |p| p + 1); src.insert(line_start, ' '); }
            }
        }
        let s: String = src.into_iter().collect();
        check_quickly("mutated.yaml", &s);
    }
}

#[test]
fn pathological_inputs_are_refused_quickly() {
    let deep = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    check_quickly("deep.yaml", &deep);
    let deep_block: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i * 2))).collect();
    check_quickly("deep-block.yaml", &deep_block);
    let wide = format!(
        "version: 1\nname: wide\ntriggers: [{{manual: {{}}}}]\nsteps:\n{}",
        "  - {id: a, uses: log, with: {message: x}}\n".repeat(20_000)
    );
    check_quickly("wide.yaml", &wide);
    let long_template = format!("version: 1\nname: t\ntriggers: [{{manual: {{}}}}]\nsteps:\n  - id: a\n    uses: log\n    with: {{ message: \"{}\" }}\n", "{{ run.id }}".repeat(20_000));
    check_quickly("t.yaml", &long_template);
}

/// Regression: long expression chains used to exhaust the stack (found by the fixture review).
#[test]
fn long_expression_chains_do_not_overflow_the_stack() {
    let wrap = |with: &str| {
        format!("version: 1\nname: chain\ntriggers: [{{manual: {{}}}}]\nsteps:\n  - id: a\n    uses: log\n{with}")
    };
    let sum = vec!["1"; 10_000].join(" + ");
    let filters = vec!["upper"; 10_000].join(" | ");
    let nots = "not ".repeat(20_000);
    let attrs = ".a".repeat(100_000);
    let parens = format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000));
    let cases = [
        wrap(&format!("    with: {{ message: \"{{{{ {sum} }}}}\" }}\n")),
        wrap(&format!("    with: {{ message: \"{{{{ 'x' | {filters} }}}}\" }}\n")),
        wrap(&format!("    if: \"{nots} true\"\n    with: {{ message: x }}\n")),
        wrap(&format!("    with: {{ message: \"{{{{ trigger{attrs} }}}}\" }}\n")),
        wrap(&format!("    with: {{ message: \"{{{{ {parens} }}}}\" }}\n")),
    ];
    for src in &cases {
        let c = validator().check("chain.yaml", src);
        assert!(c.has_errors(), "a pathological template was accepted");
    }
    // The runtime renderer refuses them too, before parsing.
    let r = sluice_engine::template::Renderer::new();
    let scope = sluice_engine::template::Scope::new(serde_json::json!({}));
    let amb =
        sluice_engine::template::Ambient { now: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(), seed: 0 };
    assert!(r.render(&format!("{{{{ {sum} }}}}"), &scope, &amb).is_err());
    assert!(r.condition(&format!("{nots} true"), &scope, &amb).is_err());
}
