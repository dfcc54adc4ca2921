//! Checks a parsed tree against the pipeline JSON Schema and turns every violation into a diagnostic
//! that names the value, points at it and says how to fix it.
//!
//! This walks the schema generated in `model` (the same document `sluice schema` prints), over the subset of
//! draft 2020-12 keywords that the generator emits; a test checks it agrees with a full validator. No IO.

use crate::diag::{one_of, suggest, Code, Diagnostic, Span};
use crate::model;
use crate::yaml::{Node, Value};
use regex::Regex;
use serde_json::Value as J;
use std::collections::HashMap;

/// A compiled schema: the document plus its compiled patterns.
pub struct SchemaChecker {
    root: J,
    patterns: HashMap<String, Regex>,
}

impl SchemaChecker {
    pub fn new(root: J) -> Self {
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        SchemaChecker { root, patterns }
    }

    pub fn schema(&self) -> &J {
        &self.root
    }

    /// Every violation of the schema in `node`.
    pub fn check(&self, node: &Node) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.walk(&self.root, node, &mut path, &mut out);
        out
    }

    fn resolve<'a>(&'a self, s: &'a J) -> &'a J {
        let mut s = s;
        for _ in 0..16 {
            match s.get("$ref").and_then(J::as_str) {
                Some(r) => {
                    let target = r
                        .strip_prefix("#/$defs/")
                        .and_then(|name| self.root.get("$defs").and_then(|d| d.get(name)));
                    match target {
                        Some(t) => s = t,
                        None => return s,
                    }
                }
                None => return s,
            }
        }
        s
    }

    /// Whether `node` is valid, without collecting messages.
    fn valid(&self, schema: &J, node: &Node) -> bool {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.walk(schema, node, &mut path, &mut out);
        out.is_empty()
    }

    fn walk(&self, schema: &J, node: &Node, path: &mut Vec<PathSeg>, out: &mut Vec<Diagnostic>) {
        let schema = self.resolve(schema);
        let Some(obj) = schema.as_object() else { return };
        if let Some(any) = obj.get("anyOf").or_else(|| obj.get("oneOf")).and_then(J::as_array) {
            self.any_of(schema, any, node, path, out);
        }
        if let Some(types) = obj.get("type") {
            if !type_matches(types, node) {
                out.push(self.wrong_type(schema, types, node, path));
                return;
            }
        }
        if let Some(c) = obj.get("const") {
            if &node.to_json() != c {
                out.push(Diagnostic::new(
                    Code::NotAllowed,
                    node.span,
                    format!("{} must be `{}`, found {}", where_(path), show(c), node.describe()),
                ));
                return;
            }
        }
        if let Some(allowed) = obj.get("enum").and_then(J::as_array) {
            let v = node.to_json();
            if !allowed.contains(&v) {
                out.push(self.not_allowed(allowed, node, path));
                return;
            }
        }
        match &node.value {
            Value::Str(s) => self.string(obj, s, node, path, out),
            Value::Int(_) | Value::Float(_) => self.number(obj, node, path, out),
            Value::Seq(items) => {
                let n = items.len();
                self.length(obj, "minItems", "maxItems", n, node, path, out);
                if let Some(item_schema) = obj.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        path.push(PathSeg::Index(i, item_id(item)));
                        self.walk(item_schema, item, path, out);
                        path.pop();
                    }
                }
            }
            Value::Map(entries) => self.object(obj, entries, node, path, out),
            _ => {}
        }
        if let Some(all) = obj.get("allOf").and_then(J::as_array) {
            for s in all {
                self.walk(s, node, path, out);
            }
        }
        if let Some(cond) = obj.get("if") {
            if self.valid(cond, node) {
                if let Some(t) = obj.get("then") {
                    self.walk(t, node, path, out);
                }
            } else if let Some(e) = obj.get("else") {
                self.walk(e, node, path, out);
            }
        }
    }

    fn any_of(&self, _schema: &J, any: &[J], node: &Node, path: &mut Vec<PathSeg>, out: &mut Vec<Diagnostic>) {
        let mut branches: Vec<&J> = any.iter().map(|b| self.resolve(b)).collect();
        if branches.iter().any(|b| self.valid(b, node)) {
            return;
        }
        // A string that is not a template is judged by the other branches, so the message is about them.
        let is_template_branch = |b: &&J| b.get("pattern").and_then(J::as_str) == Some(model::WHOLE_TEMPLATE_PATTERN);
        let template_allowed = branches.iter().any(is_template_branch);
        if template_allowed && branches.len() > 1 {
            branches.retain(|b| !is_template_branch(b));
        }
        // Report through the branch whose type fits the value, so the message is about the real mistake.
        let fitting: Vec<&&J> = branches
            .iter()
            .filter(|b| b.get("type").is_none_or(|t| type_matches(t, node)))
            .collect();
        if let [only] = fitting.as_slice() {
            self.walk(only, node, path, out);
            return;
        }
        let mut expected: Vec<&str> = Vec::new();
        for b in &branches {
            if let Some(t) = b.get("type") {
                for name in type_names(t) {
                    if !expected.contains(&name) {
                        expected.push(name);
                    }
                }
            }
        }
        let mut what = if expected.is_empty() {
            "a valid value".to_string()
        } else {
            article_list(&expected)
        };
        if template_allowed {
            what.push_str(" or a template `{{ ... }}`");
        }
        out.push(
            Diagnostic::new(
                Code::WrongType,
                node.span,
                format!("{} must be {what}, found {}", where_(path), node.describe()),
            )
            .label(format!("expected {what}")),
        );
    }

    fn string(&self, obj: &serde_json::Map<String, J>, s: &str, node: &Node, path: &[PathSeg], out: &mut Vec<Diagnostic>) {
        let len = s.chars().count();
        self.length(obj, "minLength", "maxLength", len, node, path, out);
        if let Some(p) = obj.get("pattern").and_then(J::as_str) {
            let ok = self.patterns.get(p).is_none_or(|re| re.is_match(s));
            if !ok {
                out.push(pattern_error(p, node, path));
            }
        }
    }

    fn number(&self, obj: &serde_json::Map<String, J>, node: &Node, path: &[PathSeg], out: &mut Vec<Diagnostic>) {
        let v = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => return,
        };
        let min = obj.get("minimum").and_then(J::as_f64);
        let max = obj.get("maximum").and_then(J::as_f64);
        let bad = min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m);
        if bad {
            let range = match (min, max) {
                (Some(a), Some(b)) if a == b => format!("exactly {a}"),
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                _ => String::new(),
            };
            out.push(
                Diagnostic::new(
                    Code::OutOfRange,
                    node.span,
                    format!("{} must be {range}, found {}", where_(path), node.describe()),
                )
                .label(format!("expected {range}")),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn length(
        &self,
        obj: &serde_json::Map<String, J>,
        min_key: &str,
        max_key: &str,
        n: usize,
        node: &Node,
        path: &[PathSeg],
        out: &mut Vec<Diagnostic>,
    ) {
        let min = obj.get(min_key).and_then(J::as_u64).map(|m| m as usize);
        let max = obj.get(max_key).and_then(J::as_u64).map(|m| m as usize);
        let noun = match &node.value {
            Value::Str(_) => "characters",
            Value::Map(_) => "keys",
            _ => "entries",
        };
        if let Some(m) = min.filter(|m| n < *m) {
            let msg = if n == 0 && noun == "entries" {
                format!("{} must not be empty", where_(path))
            } else {
                format!("{} must have at least {m} {noun}, found {n}", where_(path))
            };
            out.push(Diagnostic::new(Code::BadLength, node.span, msg));
        }
        if let Some(m) = max.filter(|m| n > *m) {
            let is_steps = matches!(path, [PathSeg::Key(k)] if k == "steps");
            let code = if is_steps { Code::TooManySteps } else { Code::BadLength };
            out.push(
                Diagnostic::new(code, node.span, format!("{} has {n} {noun}; at most {m} are allowed", where_(path)))
                    .hint(if is_steps {
                        "split the pipeline and connect the parts with `emit` and `event` triggers"
                    } else {
                        "shorten it"
                    }),
            );
        }
    }

    fn object(
        &self,
        obj: &serde_json::Map<String, J>,
        entries: &[(crate::yaml::Key, Node)],
        node: &Node,
        path: &mut Vec<PathSeg>,
        out: &mut Vec<Diagnostic>,
    ) {
        let props = obj.get("properties").and_then(J::as_object);
        let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        let min = obj.get("minProperties").and_then(J::as_u64);
        let max = obj.get("maxProperties").and_then(J::as_u64);
        let exactly_one = min == Some(1) && max == Some(1);
        if exactly_one && entries.len() != 1 {
            let msg = if entries.is_empty() {
                format!("{} must have one of the keys {}", where_(path), one_of(&known))
            } else {
                let names: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
                format!("{} has the keys {}; it must have exactly one", where_(path), crate::diag::all_of(&names))
            };
            out.push(
                Diagnostic::new(Code::BadLength, node.span, msg)
                    .hint("write each one as its own list item, e.g. `- webhook: {...}` and `- manual: {}`"),
            );
        } else {
            if let Some(m) = min.filter(|m| (entries.len() as u64) < *m) {
                out.push(Diagnostic::new(
                    Code::BadLength,
                    node.span,
                    format!("{} must have at least {m} keys", where_(path)),
                ));
            }
            if let Some(m) = max.filter(|m| (entries.len() as u64) > *m) {
                out.push(Diagnostic::new(
                    Code::BadLength,
                    node.span,
                    format!("{} may have at most {m} keys", where_(path)),
                ));
            }
        }
        if let Some(req) = obj.get("required").and_then(J::as_array) {
            for r in req.iter().filter_map(J::as_str) {
                if !entries.iter().any(|(k, _)| k.name == r) {
                    let at = Span { start: node.span.start, end: node.span.start };
                    let example = props
                        .and_then(|p| p.get(r))
                        .map(|s| self.resolve(s))
                        .and_then(|s| s.get("examples"))
                        .and_then(|e| e.get(0))
                        .map(|e| format!("`{r}: {}`", show(e)))
                        .unwrap_or_else(|| format!("`{r}:`"));
                    out.push(
                        Diagnostic::new(
                            Code::MissingField,
                            at,
                            format!("{} is missing the required key `{r}`", where_or_file(path)),
                        )
                        .label(format!("add `{r}` here"))
                        .hint(format!("add {example}")),
                    );
                }
            }
        }
        let pattern_props = obj.get("propertyNames").and_then(|p| p.get("pattern")).and_then(J::as_str);
        for (k, v) in entries {
            if let Some(p) = pattern_props {
                if self.patterns.get(p).is_some_and(|re| !re.is_match(&k.name)) {
                    let key_node = Node { value: Value::Str(k.name.clone()), span: k.span, style: crate::yaml::Style::Plain };
                    path.push(PathSeg::Key(k.name.clone()));
                    out.push(pattern_error(p, &key_node, path));
                    path.pop();
                }
            }
            match props.and_then(|p| p.get(&k.name)) {
                Some(s) => {
                    path.push(PathSeg::Key(k.name.clone()));
                    self.walk(s, v, path, out);
                    path.pop();
                }
                None => match obj.get("additionalProperties") {
                    Some(J::Bool(false)) => {
                        let mut d = Diagnostic::new(
                            Code::UnknownField,
                            k.span,
                            format!("unknown key `{}` in {}", k.name, where_or_file(path)),
                        );
                        d = match suggest(&k.name, known.iter().copied()) {
                            Some(s) => d.label(format!("did you mean `{s}`?")).hint(format!(
                                "did you mean `{s}`? the keys allowed here are {}",
                                one_of(&known)
                            )),
                            None => d.label("unknown key").hint(format!("the keys allowed here are {}", one_of(&known))),
                        };
                        out.push(d);
                    }
                    Some(s @ J::Object(_)) => {
                        path.push(PathSeg::Key(k.name.clone()));
                        self.walk(s, v, path, out);
                        path.pop();
                    }
                    _ => {}
                },
            }
        }
    }

    fn wrong_type(&self, schema: &J, types: &J, node: &Node, path: &[PathSeg]) -> Diagnostic {
        let names = type_names(types);
        let what = article_list(&names);
        let mut d = Diagnostic::new(
            Code::WrongType,
            node.span,
            format!("{} must be {what}, found {}", where_(path), node.describe()),
        )
        .label(format!("expected {what}"));
        if let Some(ex) = schema.get("examples").and_then(|e| e.get(0)) {
            d = d.hint(format!("for example `{}`", show(ex)));
        } else if matches!(node.value, Value::Map(_)) && names == ["string"] {
            d = d.hint("if this is meant to be a template, quote it: \"{{ ... }}\"");
        }
        d
    }

    fn not_allowed(&self, allowed: &[J], node: &Node, path: &[PathSeg]) -> Diagnostic {
        let names: Vec<String> = allowed.iter().map(show).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let is_uses = matches!(path.last(), Some(PathSeg::Key(k)) if k == "uses");
        let code = if is_uses { Code::UnknownUses } else { Code::NotAllowed };
        let found = node.describe();
        let mut d = Diagnostic::new(
            code,
            node.span,
            if is_uses {
                format!("unknown step kind {}", node.as_str().map_or(found.clone(), |s| format!("`{s}`")))
            } else {
                format!("{} must be {}, found {found}", where_(path), one_of(&refs))
            },
        );
        let near = node.as_str().and_then(|s| suggest(s, refs.iter().copied()));
        d = match near {
            Some(n) => d.label(format!("did you mean `{n}`?")).hint(format!("did you mean `{n}`? known: {}", refs.join(", "))),
            None => d.hint(format!("use one of: {}", refs.join(", "))),
        };
        d
    }
}

fn pattern_error(p: &str, node: &Node, path: &[PathSeg]) -> Diagnostic {
    let (code, what, hint) = match p {
        model::DURATION_PATTERN => (
            Code::BadDuration,
            "a duration",
            "write a number and a unit: `500ms`, `30s`, `5m`, `1h`, `1d`, or combined like `1m30s`",
        ),
        model::STEP_ID_PATTERN => (
            Code::BadFormat,
            "a step id",
            "step ids are lowercase letters, digits and `_`, starting with a letter or `_`, e.g. `fetch_orders`",
        ),
        model::NAME_PATTERN => (
            Code::BadFormat,
            "a pipeline name",
            "names are lowercase letters, digits and `-`, e.g. `signup-to-crm`",
        ),
        model::VAR_PATTERN => (Code::BadFormat, "a var name", "var names are letters, digits and `_`, e.g. `crm_base`"),
        model::WEBHOOK_PATH_PATTERN => (
            Code::BadFormat,
            "a webhook path",
            "paths are letters, digits and `.`, `_`, `~`, `/`, `-`, without a leading `/`, e.g. `signups`",
        ),
        model::EVENT_TYPE_PATTERN => (Code::BadFormat, "an event type", "event types look like `user.created`"),
        _ => (Code::BadFormat, "a valid value", "see `sluice schema` for the expected form"),
    };
    Diagnostic::new(
        code,
        node.span,
        format!("{} must be {what}, found {}", where_(path), node.describe()),
    )
    .label(format!("not {what}"))
    .hint(hint)
}

fn collect_patterns(s: &J, out: &mut HashMap<String, Regex>) {
    match s {
        J::Object(o) => {
            if let Some(p) = o.get("pattern").and_then(J::as_str) {
                if let Ok(re) = Regex::new(p) {
                    out.insert(p.to_string(), re);
                }
            }
            for v in o.values() {
                collect_patterns(v, out);
            }
        }
        J::Array(a) => a.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

fn type_names(t: &J) -> Vec<&str> {
    match t {
        J::String(s) => vec![s.as_str()],
        J::Array(a) => a.iter().filter_map(J::as_str).collect(),
        _ => vec![],
    }
}

fn type_matches(t: &J, node: &Node) -> bool {
    type_names(t).iter().any(|name| match (*name, &node.value) {
        ("null", Value::Null) => true,
        ("boolean", Value::Bool(_)) => true,
        ("string", Value::Str(_)) => true,
        ("array", Value::Seq(_)) => true,
        ("object", Value::Map(_)) => true,
        ("number", Value::Int(_) | Value::Float(_)) => true,
        ("integer", Value::Int(_)) => true,
        ("integer", Value::Float(f)) => f.fract() == 0.0,
        _ => false,
    })
}

fn article_list(names: &[&str]) -> String {
    let words: Vec<&str> = names
        .iter()
        .filter(|n| **n != "null" || names.len() == 1)
        .map(|n| match *n {
            "string" => "a string",
            "integer" => "a whole number",
            "number" => "a number",
            "boolean" => "`true` or `false`",
            "array" => "a list",
            "object" => "a mapping",
            "null" => "empty",
            _ => "a value",
        })
        .collect();
    match words.len() {
        0 => "a value".into(),
        1 => words[0].into(),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

fn show(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A step of the path to a value, for messages.
#[derive(Debug, Clone)]
pub enum PathSeg {
    Key(String),
    /// A list index, with the item's `id` when it has one.
    Index(usize, Option<String>),
}

fn item_id(n: &Node) -> Option<String> {
    n.get("id").and_then(Node::as_str).map(str::to_string)
}

/// `steps.fetch.retry.max_attempts` (by step id where there is one) or `triggers[0].webhook.path`.
pub fn display_path(path: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(_, Some(id)) => {
                s.push('.');
                s.push_str(id);
            }
            PathSeg::Index(i, None) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn where_(path: &[PathSeg]) -> String {
    if path.is_empty() {
        "the pipeline".into()
    } else {
        format!("`{}`", display_path(path))
    }
}

fn where_or_file(path: &[PathSeg]) -> String {
    where_(path)
}
