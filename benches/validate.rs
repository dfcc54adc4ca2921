//! Validate + compile a generated corpus of 1,000 pipelines of 20 steps each, on one thread.
//!
//! Run: `cargo bench --bench validate`. Prints pipelines per second and the peak heap in use, measured by a
//! counting allocator around the standard one.

#![allow(unsafe_code)] // the counting allocator below; nothing else

use sluice_engine::{compile::plan, Validator};
use std::alloc::{GlobalAlloc, Layout};

/// The allocator the `sluice` binary uses, so the figures are the binary's.
use mimalloc::MiMalloc as System;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;
static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to `System` unchanged and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        let now = IN_USE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        IN_USE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// A realistic pipeline: http calls, transforms reading earlier steps, a fan-out, conditions.
fn pipeline(n: usize) -> (String, String) {
    let name = format!("bench-{n}");
    let mut s = format!(
        "version: 1\nname: {name}\ndescription: generated pipeline {n}\ntriggers:\n  - webhook:\n      path: hook-{n}\n      verify: {{ scheme: standard-webhooks, secret: \"{{{{ secrets.WHSEC }}}}\" }}\n  - manual: {{}}\nvars:\n  base: https://api.example.com/v1\n  plan: pro\ndefaults:\n  timeout: 10s\n  retry: {{ max_attempts: 4, backoff: exponential, initial_delay: 200ms, jitter: full }}\nsteps:\n"
    );
    for i in 0..20 {
        let prev = if i == 0 { String::new() } else { format!("s{}", i - 1) };
        match i % 5 {
            0 => s.push_str(&format!(
                "  - id: s{i}\n    uses: http\n    with:\n      method: POST\n      url: \"{{{{ vars.base }}}}/items/{{{{ trigger.body.id }}}}\"\n      headers: {{ x-request: \"{{{{ run.id }}}}\" }}\n      auth: {{ bearer: \"{{{{ secrets.TOKEN }}}}\" }}\n      body: {{ plan: \"{{{{ vars.plan | upper }}}}\", n: {i} }}\n"
            )),
            1 => s.push_str(&format!(
                "  - id: s{i}\n    uses: transform\n    with:\n      output:\n        email: \"{{{{ steps.{prev}.output.body.email | lower }}}}\"\n        tags: \"{{{{ steps.{prev}.output.body.tags }}}}\"\n        at: \"{{{{ now() }}}}\"\n"
            )),
            2 => s.push_str(&format!(
                "  - id: s{i}\n    uses: http\n    for_each: \"{{{{ steps.{prev}.output.tags }}}}\"\n    concurrency: 4\n    with:\n      url: \"{{{{ vars.base }}}}/tags/{{{{ item | urlencode }}}}?i={{{{ index }}}}\"\n"
            )),
            3 => s.push_str(&format!(
                "  - id: s{i}\n    uses: log\n    if: \"steps.{prev}.status == 'succeeded' and vars.plan == 'pro'\"\n    with: {{ message: \"done {{{{ steps.{prev}.output | length }}}}\", level: info }}\n"
            )),
            _ => s.push_str(&format!(
                "  - id: s{i}\n    uses: webhook.send\n    needs: [{prev}]\n    retry: {{ max_attempts: 8 }}\n    with:\n      url: https://hooks.example.com/in\n      secret: \"{{{{ secrets.PARTNER }}}}\"\n      event: item.synced\n      body: \"{{{{ trigger.body }}}}\"\n"
            )),
        }
    }
    s.push_str("on_failure:\n  - id: alert\n    uses: log\n    with: { message: \"failed: {{ error.message }}\", level: error }\n");
    (format!("bench/{name}.yaml"), s)
}

fn main() {
    let corpus: Vec<(String, String)> = (0..1000).map(pipeline).collect();
    let bytes: usize = corpus.iter().map(|(_, s)| s.len()).sum();
    let validator = Validator::new(sluice_connectors::registry());
    // Warm-up, and a check that the corpus is valid.
    for (f, s) in corpus.iter().take(10) {
        let c = validator.check(f, s);
        assert!(c.pipeline.is_some(), "{f}: {:?}", c.diags);
    }
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut best = f64::MAX;
    let mut steps = 0usize;
    for _round in 0..3 {
        let start = Instant::now();
        for (f, s) in &corpus {
            let c = validator.check(f, s);
            let p = c.pipeline.as_ref().map(|p| plan(p, &c.reads));
            steps += p.map_or(0, |p| p.steps.len());
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    // Where the time goes: the YAML parser's events alone, our tree with spans, the schema checks.
    let phase = |f: &dyn Fn(&str)| {
        let start = Instant::now();
        for (_, s) in &corpus {
            f(s);
        }
        start.elapsed().as_secs_f64() * 1000.0
    };
    let events = phase(&|s| {
        let n = saphyr_parser::Parser::new_from_str(s).count();
        assert!(n > 0);
    });
    let tree = phase(&|s| {
        assert!(sluice_engine::yaml::parse(s).root.is_some());
    });
    let checker = sluice_engine::schema::SchemaChecker::new(validator.schema().clone());
    let trees: Vec<_> = corpus.iter().filter_map(|(_, s)| sluice_engine::yaml::parse(s).root).collect();
    let start = Instant::now();
    for t in &trees {
        assert!(checker.check(t).is_empty());
    }
    let shape = start.elapsed().as_secs_f64() * 1000.0;
    println!("corpus: 1000 pipelines x 20 steps ({:.1} MiB of YAML)", bytes as f64 / 1048576.0);
    println!(
        "validate+compile: {:.0} pipelines/s ({:.1} us per pipeline, best of 3 on one thread)",
        1000.0 / best,
        best * 1000.0
    );
    println!("phases per 1000: yaml events {events:.0} ms, tree with spans {tree:.0} ms, schema {shape:.0} ms; the rest is meaning, templates and compile");
    println!("peak heap during a round: {:.1} MiB above the corpus", peak as f64 / 1048576.0);
    assert_eq!(steps, 3 * 1000 * 20);
}
