//! Compilation: a validated pipeline becomes an immutable plan, the DAG the runtime executes.
//!
//! Dependencies come from `needs` and from the steps templates read; each step's retry policy and timeout
//! are resolved over `defaults`. The plan also renders itself as Mermaid, Graphviz dot or JSON. No IO.

use crate::diag::Diagnostic;
use crate::model::{Backoff, Condition, Duration, ErrorClass, ForEach, Jitter, Pipeline, RetryConfig, Step, Trigger};
use crate::validate::{dependencies, Validator};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A resolved retry policy (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub initial_delay: Duration,
    pub factor: f64,
    pub max_delay: Duration,
    pub jitter: Jitter,
    pub retry_on: Vec<ErrorClass>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial_delay: Duration(std::time::Duration::from_secs(1)),
            factor: 2.0,
            max_delay: Duration(std::time::Duration::from_secs(300)),
            jitter: Jitter::Full,
            retry_on: vec![ErrorClass::Network, ErrorClass::Timeout, ErrorClass::Http429, ErrorClass::Http5xx],
        }
    }
}

impl RetryPolicy {
    fn over(mut self, c: Option<&RetryConfig>) -> Self {
        let Some(c) = c else { return self };
        if let Some(v) = c.max_attempts {
            self.max_attempts = v;
        }
        if let Some(v) = c.backoff {
            self.backoff = v;
        }
        if let Some(v) = c.initial_delay {
            self.initial_delay = v;
        }
        if let Some(v) = c.factor {
            self.factor = v;
        }
        if let Some(v) = c.max_delay {
            self.max_delay = v;
        }
        if let Some(v) = c.jitter {
            self.jitter = v;
        }
        if let Some(v) = &c.retry_on {
            self.retry_on = v.clone();
        }
        self
    }

    /// Whether an error of this class is tried again (after `attempt` attempts so far).
    pub fn retries(&self, class: ErrorClass, attempt: u32) -> bool {
        attempt < self.max_attempts
            && !matches!(class, ErrorClass::Template | ErrorClass::Config)
            && self.retry_on.contains(&class)
    }

    /// The base delay before attempt `n + 1`, after `n` attempts (n >= 1), before jitter.
    pub fn base_delay_ms(&self, n: u32) -> f64 {
        let init = self.initial_delay.as_millis() as f64;
        let base = match self.backoff {
            Backoff::Exponential => init * self.factor.powi(n.saturating_sub(1).min(1000) as i32),
            Backoff::Linear => init * f64::from(n),
            Backoff::Constant => init,
        };
        base.min(self.max_delay.as_millis() as f64)
    }

    /// The delay before attempt `n + 1`. `previous_ms` is the last delay (for `decorrelated`), `u` a
    /// uniform random number in [0, 1) given by the caller, `retry_after_ms` a server's `Retry-After`.
    pub fn delay_ms(&self, n: u32, previous_ms: Option<u64>, u: f64, retry_after_ms: Option<u64>) -> u64 {
        let cap = self.max_delay.as_millis();
        if let Some(ra) = retry_after_ms {
            return ra.min(cap);
        }
        let u = u.clamp(0.0, 1.0);
        let base = self.base_delay_ms(n);
        let d = match self.jitter {
            Jitter::None => base,
            Jitter::Full => u * base,
            Jitter::Equal => base / 2.0 + u * base / 2.0,
            Jitter::Decorrelated => {
                let init = self.initial_delay.as_millis() as f64;
                let prev = previous_ms.map_or(init, |p| p as f64).max(init);
                (init + u * (3.0 * prev - init)).min(cap as f64)
            }
        };
        (d.max(0.0) as u64).min(cap)
    }
}

/// One step of a plan, everything resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub id: String,
    pub uses: String,
    pub with: serde_json::Value,
    /// Every step this one waits for (explicit `needs` and template reads), in plan order.
    pub needs: Vec<String>,
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    pub concurrency: u32,
    pub continue_on_error: bool,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// A compiled pipeline: immutable, topologically ordered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub triggers: Vec<Trigger>,
    pub vars: IndexMap<String, serde_json::Value>,
    /// Main steps in an order where every step comes after all it needs.
    pub steps: Vec<PlanStep>,
    pub on_failure: Vec<PlanStep>,
}

impl Plan {
    pub fn step(&self, id: &str) -> Option<&PlanStep> {
        self.steps.iter().chain(self.on_failure.iter()).find(|s| s.id == id)
    }

    /// Steps that wait for `id`.
    pub fn dependants(&self, id: &str) -> Vec<&PlanStep> {
        self.steps.iter().chain(self.on_failure.iter()).filter(|s| s.needs.iter().any(|n| n == id)).collect()
    }

    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart TD\n");
        let node = |s: &mut String, st: &PlanStep| {
            let mut label = format!("{}<br/><i>{}</i>", st.id, st.uses);
            if st.for_each.is_some() {
                label.push_str(" · for_each");
            }
            if st.condition.is_some() {
                label.push_str(" · if");
            }
            let _ = writeln!(s, "  s_{}[\"{}\"]", st.id, label.replace('"', "'"));
        };
        for st in &self.steps {
            node(&mut s, st);
        }
        for st in &self.steps {
            for n in &st.needs {
                let _ = writeln!(s, "  s_{n} --> s_{}", st.id);
            }
        }
        if !self.on_failure.is_empty() {
            // Node ids carry a prefix so that step ids such as `end` or `on_failure` cannot clash with mermaid.
            s.push_str("  subgraph failure_handlers[\"on_failure\"]\n");
            for st in &self.on_failure {
                s.push_str("  ");
                node(&mut s, st);
            }
            s.push_str("  end\n");
            for st in &self.on_failure {
                for n in &st.needs {
                    let _ = writeln!(s, "  s_{n} --> s_{}", st.id);
                }
            }
        }
        s
    }

    pub fn to_dot(&self) -> String {
        let mut s =
            format!("digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"sans-serif\"];\n", self.name);
        for st in &self.steps {
            // A step that may be skipped (`if:`) is drawn dashed.
            let style = if st.condition.is_some() { ", style=dashed" } else { "" };
            let _ = writeln!(s, "  \"{}\" [label=\"{}\\n{}\"{style}];", st.id, st.id, st.uses);
        }
        for st in &self.steps {
            for n in &st.needs {
                let _ = writeln!(s, "  \"{n}\" -> \"{}\";", st.id);
            }
        }
        if !self.on_failure.is_empty() {
            s.push_str("  subgraph cluster_on_failure {\n    label=\"on_failure\";\n");
            for st in &self.on_failure {
                let _ = writeln!(s, "    \"{}\" [label=\"{}\\n{}\"];", st.id, st.id, st.uses);
            }
            s.push_str("  }\n");
            for st in &self.on_failure {
                for n in &st.needs {
                    let _ = writeln!(s, "  \"{n}\" -> \"{}\";", st.id);
                }
            }
        }
        s.push_str("}\n");
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Validates and compiles one file: the plan, or every diagnostic (warnings come with the plan too).
pub fn compile(v: &Validator, file: &str, src: &str) -> Result<(Plan, Vec<Diagnostic>), Vec<Diagnostic>> {
    let c = v.check(file, src);
    match (&c.pipeline, c.has_errors()) {
        (Some(p), false) => Ok((plan(p, &c.reads), c.diags)),
        _ => Err(c.diags),
    }
}

/// Builds the plan of a pipeline that validated (its template reads from `Checked::reads`).
pub fn plan(p: &Pipeline, reads: &HashMap<String, BTreeSet<String>>) -> Plan {
    let deps = dependencies(p, reads);
    let defaults_retry = RetryPolicy::default().over(p.defaults.retry.as_ref());
    let default_timeout = p.defaults.timeout.unwrap_or(Duration(std::time::Duration::from_millis(DEFAULT_TIMEOUT_MS)));
    let build = |steps: &[Step]| -> Vec<PlanStep> {
        let order = topo_order(steps, &deps);
        order
            .into_iter()
            .map(|i| {
                let s = &steps[i];
                let mine = deps.get(&s.id).cloned().unwrap_or_default();
                let needs: Vec<String> = steps.iter().filter(|o| mine.contains(&o.id)).map(|o| o.id.clone()).collect();
                PlanStep {
                    id: s.id.clone(),
                    uses: s.uses.clone(),
                    with: s.with.clone().unwrap_or_else(|| serde_json::json!({})),
                    needs,
                    condition: s.condition.clone(),
                    for_each: s.for_each.clone(),
                    concurrency: s.concurrency.unwrap_or(if s.for_each.is_some() { 10 } else { 1 }),
                    continue_on_error: s.continue_on_error,
                    timeout: s.timeout.unwrap_or(default_timeout),
                    retry: defaults_retry.clone().over(s.retry.as_ref()),
                }
            })
            .collect()
    };
    Plan {
        name: p.name.clone(),
        description: p.description.clone(),
        triggers: p.triggers.clone(),
        vars: p.vars.clone(),
        steps: build(&p.steps),
        on_failure: build(&p.on_failure),
    }
}

/// Kahn's algorithm, stable in declaration order. Assumes no cycle (validation ensured it).
fn topo_order(steps: &[Step], deps: &HashMap<String, BTreeSet<String>>) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let mut indegree = vec![0usize; steps.len()];
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for d in deps.get(&s.id).into_iter().flatten() {
            if let Some(&j) = index.get(d.as_str()) {
                indegree[i] += 1;
                after[j].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..steps.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(&i) = ready.iter().next() {
        ready.remove(&i);
        order.push(i);
        for &j in &after[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    // Anything left is on a cycle; keep it, in declaration order, so nothing is lost.
    for i in 0..steps.len() {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            backoff,
            jitter,
            initial_delay: Duration(std::time::Duration::from_millis(500)),
            max_delay: Duration(std::time::Duration::from_secs(60)),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn base_delays_follow_the_spec() {
        let e = policy(Backoff::Exponential, Jitter::None);
        assert_eq!([1, 2, 3, 4].map(|n| e.delay_ms(n, None, 0.5, None)), [500, 1000, 2000, 4000]);
        assert_eq!(e.delay_ms(20, None, 0.5, None), 60_000);
        let l = policy(Backoff::Linear, Jitter::None);
        assert_eq!([1, 2, 3].map(|n| l.delay_ms(n, None, 0.5, None)), [500, 1000, 1500]);
        let c = policy(Backoff::Constant, Jitter::None);
        assert_eq!([1, 5].map(|n| c.delay_ms(n, None, 0.5, None)), [500, 500]);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let full = policy(Backoff::Exponential, Jitter::Full);
        let equal = policy(Backoff::Exponential, Jitter::Equal);
        let dec = policy(Backoff::Exponential, Jitter::Decorrelated);
        for i in 0..100 {
            let u = f64::from(i) / 100.0;
            let f = full.delay_ms(3, None, u, None);
            assert!(f <= 2000);
            let q = equal.delay_ms(3, None, u, None);
            assert!((1000..=2000).contains(&q));
            let d = dec.delay_ms(3, Some(4000), u, None);
            assert!((500..=12_000).contains(&d));
        }
        assert_eq!(full.delay_ms(3, None, 0.0, Some(90_000)), 60_000);
        assert_eq!(full.delay_ms(3, None, 0.0, Some(7_000)), 7_000);
    }

    #[test]
    fn template_and_config_errors_are_never_retried() {
        let p = RetryPolicy { retry_on: vec![ErrorClass::Template, ErrorClass::Network], ..RetryPolicy::default() };
        assert!(!p.retries(ErrorClass::Template, 1));
        assert!(p.retries(ErrorClass::Network, 1));
        assert!(!p.retries(ErrorClass::Network, 3));
        assert!(!p.retries(ErrorClass::Http4xx, 1));
    }
}
