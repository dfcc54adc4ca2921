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

/// One schema object, compiled: keywords looked up once, `$ref`s resolved to arena indices.
#[derive(Default)]
struct SNode {
    /// `$ref` target when the node is nothing but a reference.
    ref_only: Option<usize>,
    types: Option<Vec<String>>,
    any_of: Vec<usize>,
    all_of: Vec<usize>,
    cond: Option<(usize, Option<usize>, Option<usize>)>,
    konst: Option<J>,
    enumeration: Option<Vec<J>>,
    pattern: Option<(String, Regex)>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    min_props: Option<u64>,
    max_props: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    items: Option<usize>,
    properties: Vec<(String, usize)>,
    required: Vec<String>,
    /// `additionalProperties`: `None` any, `Some(None)` forbidden, `Some(Some(i))` checked by schema `i`.
    additional: Option<Option<usize>>,
    property_names: Option<(String, Regex)>,
    example: Option<J>,
    is_template: bool,
}

/// A compiled schema: the document, and its arena of compiled nodes (index 0 is the root).
pub struct SchemaChecker {
    root: J,
    nodes: Vec<SNode>,
}

struct Compiler<'a> {
    root: &'a J,
    nodes: Vec<SNode>,
    defs: HashMap<String, usize>,
}

impl Compiler<'_> {
    fn compile(&mut self, s: &J) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(SNode::default());
        let n = self.node(s);
        self.nodes[idx] = n;
        idx
    }

    fn reference(&mut self, r: &str) -> Option<usize> {
        let name = r.strip_prefix("#/$defs/")?;
        if let Some(i) = self.defs.get(name) {
            return Some(*i);
        }
        let target = self.root.get("$defs")?.get(name)?;
        let idx = self.nodes.len();
        self.nodes.push(SNode::default());
        self.defs.insert(name.to_string(), idx);
        let n = self.node(target);
        self.nodes[idx] = n;
        Some(idx)
    }

    fn regex(p: Option<&J>) -> Option<(String, Regex)> {
        let p = p?.as_str()?;
        Regex::new(p).ok().map(|re| (p.to_string(), re))
    }

    fn node(&mut self, s: &J) -> SNode {
        let mut n = SNode::default();
        let Some(o) = s.as_object() else { return n };
        let usize_of = |k: &str| o.get(k).and_then(J::as_u64).map(|v| v as usize);
        if let Some(r) = o.get("$ref").and_then(J::as_str) {
            if let Some(t) = self.reference(r) {
                let validating =
                    o.keys().any(|k| !matches!(k.as_str(), "$ref" | "description" | "default" | "examples" | "title"));
                if validating {
                    n.all_of.push(t);
                } else {
                    n.ref_only = Some(t);
                }
            }
        }
        n.types = o.get("type").map(|t| type_names(t).into_iter().map(str::to_string).collect());
        for key in ["anyOf", "oneOf"] {
            if let Some(a) = o.get(key).and_then(J::as_array) {
                n.any_of = a.iter().map(|b| self.compile(b)).collect();
            }
        }
        if let Some(a) = o.get("allOf").and_then(J::as_array) {
            for b in a {
                let i = self.compile(b);
                n.all_of.push(i);
            }
        }
        if let Some(c) = o.get("if") {
            let i = self.compile(c);
            let t = o.get("then").map(|t| self.compile(t));
            let e = o.get("else").map(|e| self.compile(e));
            n.cond = Some((i, t, e));
        }
        n.konst = o.get("const").cloned();
        n.enumeration = o.get("enum").and_then(J::as_array).cloned();
        n.pattern = Self::regex(o.get("pattern"));
        n.is_template = n.pattern.as_ref().is_some_and(|(p, _)| p == model::WHOLE_TEMPLATE_PATTERN);
        n.min_length = usize_of("minLength");
        n.max_length = usize_of("maxLength");
        n.min_items = usize_of("minItems");
        n.max_items = usize_of("maxItems");
        n.min_props = o.get("minProperties").and_then(J::as_u64);
        n.max_props = o.get("maxProperties").and_then(J::as_u64);
        n.minimum = o.get("minimum").and_then(J::as_f64);
        n.maximum = o.get("maximum").and_then(J::as_f64);
        n.items = o.get("items").map(|i| self.compile(i));
        if let Some(props) = o.get("properties").and_then(J::as_object) {
            n.properties = props.iter().map(|(k, v)| (k.clone(), self.compile(v))).collect();
        }
        n.required = o
            .get("required")
            .and_then(J::as_array)
            .map(|r| r.iter().filter_map(J::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        n.additional = match o.get("additionalProperties") {
            Some(J::Bool(false)) => Some(None),
            Some(a @ J::Object(_)) => Some(Some(self.compile(a))),
            _ => None,
        };
        n.property_names = Self::regex(o.get("propertyNames").and_then(|p| p.get("pattern")));
        n.example = o.get("examples").and_then(|e| e.get(0)).cloned();
        n
    }
}

impl SchemaChecker {
    pub fn new(root: J) -> Self {
        let mut c = Compiler { root: &root, nodes: Vec::new(), defs: HashMap::new() };
        c.compile(&root);
        let nodes = c.nodes;
        SchemaChecker { root, nodes }
    }

    pub fn schema(&self) -> &J {
        &self.root
    }

    /// Every violation of the schema in `node`.
    pub fn check(&self, node: &Node) -> Vec<Diagnostic> {
        let mut out = Sink { diags: Vec::new(), quick: false, failed: false };
        let mut path = Vec::new();
        self.walk(0, node, &mut path, &mut out);
        out.diags
    }

    fn deref(&self, mut i: usize) -> &SNode {
        for _ in 0..16 {
            match self.nodes[i].ref_only {
                Some(t) => i = t,
                None => break,
            }
        }
        &self.nodes[i]
    }

    fn deref_idx(&self, mut i: usize) -> usize {
        for _ in 0..16 {
            match self.nodes[i].ref_only {
                Some(t) => i = t,
                None => break,
            }
        }
        i
    }

    /// Whether `node` is valid, without building messages.
    fn valid(&self, schema: usize, node: &Node) -> bool {
        let mut out = Sink { diags: Vec::new(), quick: true, failed: false };
        let mut path = Vec::new();
        self.walk(schema, node, &mut path, &mut out);
        !out.failed
    }

    fn walk<'n>(&self, schema: usize, node: &'n Node, path: &mut Vec<PathSeg<'n>>, out: &mut Sink) {
        if out.done() {
            return;
        }
        let s = self.deref(schema);
        if !s.any_of.is_empty() {
            self.any_of(&s.any_of, node, path, out);
        }
        if let Some(types) = &s.types {
            if !type_matches(types, node) {
                out.fail(|| self.wrong_type(s, types, node, path));
                return;
            }
        }
        if let Some(c) = &s.konst {
            if !json_eq(node, c) {
                out.fail(|| {
                    Diagnostic::new(
                        Code::NotAllowed,
                        node.span,
                        format!("{} must be `{}`, found {}", where_(path), show(c), node.describe()),
                    )
                });
                return;
            }
        }
        if let Some(allowed) = &s.enumeration {
            if !allowed.iter().any(|a| json_eq(node, a)) {
                out.fail(|| self.not_allowed(allowed, node, path));
                return;
            }
        }
        match &node.value {
            Value::Str(text) => self.string(s, text, node, path, out),
            Value::Int(_) | Value::Float(_) => self.number(s, node, path, out),
            Value::Seq(items) => {
                self.length(s.min_items, s.max_items, items.len(), node, path, out);
                if let Some(item_schema) = s.items {
                    for (i, item) in items.iter().enumerate() {
                        path.push(PathSeg::Index(i, item_id(item)));
                        self.walk(item_schema, item, path, out);
                        path.pop();
                    }
                }
            }
            Value::Map(entries) => self.object(s, entries, node, path, out),
            _ => {}
        }
        for &a in &s.all_of {
            self.walk(a, node, path, out);
        }
        if let Some((cond, then, els)) = s.cond {
            if self.valid(cond, node) {
                if let Some(t) = then {
                    self.walk(t, node, path, out);
                }
            } else if let Some(e) = els {
                self.walk(e, node, path, out);
            }
        }
    }

    fn any_of<'n>(&self, any: &[usize], node: &'n Node, path: &mut Vec<PathSeg<'n>>, out: &mut Sink) {
        let mut branches: Vec<usize> = any.iter().map(|b| self.deref_idx(*b)).collect();
        if branches.iter().any(|b| self.valid(*b, node)) {
            return;
        }
        // A string that is not a template is judged by the other branches, so the message is about them.
        let template_allowed = branches.iter().any(|b| self.nodes[*b].is_template);
        if template_allowed && branches.len() > 1 {
            branches.retain(|b| !self.nodes[*b].is_template);
        }
        // Report through the branch whose type fits the value, so the message is about the real mistake.
        let fitting: Vec<usize> = branches
            .iter()
            .copied()
            .filter(|b| self.nodes[*b].types.as_ref().is_none_or(|t| type_matches(t, node)))
            .collect();
        if let [only] = fitting.as_slice() {
            self.walk(*only, node, path, out);
            return;
        }
        let mut expected: Vec<&str> = Vec::new();
        for b in &branches {
            for name in self.nodes[*b].types.iter().flatten() {
                if !expected.contains(&name.as_str()) {
                    expected.push(name);
                }
            }
        }
        let mut what = if expected.is_empty() { "a valid value".to_string() } else { article_list(&expected) };
        if template_allowed {
            what.push_str(" or a template `{{ ... }}`");
        }
        out.fail(|| {
            Diagnostic::new(
                Code::WrongType,
                node.span,
                format!("{} must be {what}, found {}", where_(path), node.describe()),
            )
            .label(format!("expected {what}"))
        });
    }

    fn string(&self, s: &SNode, text: &str, node: &Node, path: &[PathSeg<'_>], out: &mut Sink) {
        if s.min_length.is_some() || s.max_length.is_some() {
            self.length(s.min_length, s.max_length, text.chars().count(), node, path, out);
        }
        if let Some((p, re)) = &s.pattern {
            if !re.is_match(text) {
                out.fail(|| pattern_error(p, node, path));
            }
        }
    }

    fn number(&self, s: &SNode, node: &Node, path: &[PathSeg<'_>], out: &mut Sink) {
        let v = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => return,
        };
        if !v.is_finite() {
            out.fail(|| {
                Diagnostic::new(
                    Code::WrongType,
                    node.span,
                    format!("{} must be a finite number, found {}", where_(path), node.describe()),
                )
                .label("not a finite number")
            });
            return;
        }
        let (min, max) = (s.minimum, s.maximum);
        let bad = min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m);
        if bad {
            let range = match (min, max) {
                (Some(a), Some(b)) if a == b => format!("exactly {a}"),
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                _ => String::new(),
            };
            out.fail(|| {
                Diagnostic::new(
                    Code::OutOfRange,
                    node.span,
                    format!("{} must be {range}, found {}", where_(path), node.describe()),
                )
                .label(format!("expected {range}"))
            });
        }
    }

    fn length(
        &self,
        min: Option<usize>,
        max: Option<usize>,
        n: usize,
        node: &Node,
        path: &[PathSeg<'_>],
        out: &mut Sink,
    ) {
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
            out.fail(|| Diagnostic::new(Code::BadLength, node.span, msg));
        }
        if let Some(m) = max.filter(|m| n > *m) {
            let is_steps = matches!(path, [PathSeg::Key("steps")]);
            let code = if is_steps { Code::TooManySteps } else { Code::BadLength };
            out.fail(|| {
                Diagnostic::new(code, node.span, format!("{} has {n} {noun}; at most {m} are allowed", where_(path)))
                    .hint(if is_steps {
                        "split the pipeline and connect the parts with `emit` and `event` triggers"
                    } else {
                        "shorten it"
                    })
            });
        }
    }

    fn object<'n>(
        &self,
        s: &SNode,
        entries: &'n [(crate::yaml::Key, Node)],
        node: &'n Node,
        path: &mut Vec<PathSeg<'n>>,
        out: &mut Sink,
    ) {
        let known: Vec<&str> = s.properties.iter().map(|(k, _)| k.as_str()).collect();
        let (min, max) = (s.min_props, s.max_props);
        let exactly_one = min == Some(1) && max == Some(1);
        if exactly_one && entries.len() != 1 {
            let msg = if entries.is_empty() {
                format!("{} must have one of the keys {}", where_(path), one_of(&known))
            } else {
                let names: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
                format!("{} has the keys {}; it must have exactly one", where_(path), crate::diag::all_of(&names))
            };
            let hint = if known.contains(&"webhook") {
                "write each trigger as its own list item, e.g. `- webhook: {...}` and `- manual: {}`".to_string()
            } else {
                format!("keep exactly one of {}", one_of(&known))
            };
            out.fail(|| Diagnostic::new(Code::BadLength, node.span, msg).hint(hint));
        } else {
            if let Some(m) = min.filter(|m| (entries.len() as u64) < *m) {
                out.fail(|| {
                    Diagnostic::new(Code::BadLength, node.span, format!("{} must have at least {m} keys", where_(path)))
                });
            }
            if let Some(m) = max.filter(|m| (entries.len() as u64) > *m) {
                out.fail(|| {
                    Diagnostic::new(Code::BadLength, node.span, format!("{} may have at most {m} keys", where_(path)))
                });
            }
        }
        // A missing key that an unknown key is a misspelling of is reported once, at the misspelling.
        let misspelt: Vec<&str> = if s.additional == Some(None) {
            entries
                .iter()
                .filter(|(k, _)| !known.contains(&k.name.as_str()))
                .filter_map(|(k, _)| suggest(&k.name, known.iter().copied()))
                .collect()
        } else {
            Vec::new()
        };
        for r in &s.required {
            if !entries.iter().any(|(k, _)| &k.name == r) && !misspelt.contains(&r.as_str()) {
                let at = Span { start: node.span.start, end: node.span.start };
                let example = s
                    .properties
                    .iter()
                    .find(|(k, _)| k == r)
                    .and_then(|(_, i)| self.deref(*i).example.as_ref())
                    .and_then(short_example)
                    .map(|e| format!("`{r}: {e}`"))
                    .unwrap_or_else(|| format!("`{r}:`"));
                out.fail(|| {
                    Diagnostic::new(
                        Code::MissingField,
                        at,
                        format!("{} is missing the required key `{r}`", where_(path)),
                    )
                    .label(format!("add `{r}` here"))
                    .hint(format!("add {example}"))
                });
            }
        }
        for (k, v) in entries {
            if let Some((p, re)) = &s.property_names {
                if !re.is_match(&k.name) {
                    let key_node =
                        Node { value: Value::Str(k.name.clone()), span: k.span, style: crate::yaml::Style::Plain };
                    path.push(PathSeg::Key(&k.name));
                    out.fail(|| pattern_error(p, &key_node, path));
                    path.pop();
                }
            }
            match s.properties.iter().find(|(name, _)| name == &k.name) {
                Some((_, i)) => {
                    path.push(PathSeg::Key(&k.name));
                    self.walk(*i, v, path, out);
                    path.pop();
                }
                None => match s.additional {
                    Some(None) => {
                        let d = Diagnostic::new(
                            Code::UnknownField,
                            k.span,
                            format!("unknown key `{}` in {}", k.name, where_(path)),
                        );
                        out.fail(|| match suggest(&k.name, known.iter().copied()) {
                            Some(sg) => d
                                .label(format!("did you mean `{sg}`?"))
                                .hint(format!("did you mean `{sg}`? the keys allowed here are {}", one_of(&known))),
                            None => {
                                d.label("unknown key").hint(format!("the keys allowed here are {}", one_of(&known)))
                            }
                        });
                    }
                    Some(Some(i)) => {
                        path.push(PathSeg::Key(&k.name));
                        self.walk(i, v, path, out);
                        path.pop();
                    }
                    None => {}
                },
            }
        }
    }

    fn wrong_type(&self, s: &SNode, types: &[String], node: &Node, path: &[PathSeg<'_>]) -> Diagnostic {
        let names: Vec<&str> = types.iter().map(String::as_str).collect();
        let what = article_list(&names);
        let mut d = Diagnostic::new(
            Code::WrongType,
            node.span,
            format!("{} must be {what}, found {}", where_(path), node.describe()),
        )
        .label(format!("expected {what}"));
        if let Some(ex) = s.example.as_ref().and_then(short_example) {
            d = d.hint(format!("for example `{ex}`"));
        } else if matches!(node.value, Value::Map(_)) && names == ["string"] {
            d = d.hint("if this is meant to be a template, quote it: \"{{ ... }}\"");
        }
        d
    }

    fn not_allowed(&self, allowed: &[J], node: &Node, path: &[PathSeg<'_>]) -> Diagnostic {
        let names: Vec<String> = allowed.iter().map(show).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let is_uses = matches!(path.last(), Some(PathSeg::Key("uses")));
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
            Some(n) => {
                d.label(format!("did you mean `{n}`?")).hint(format!("did you mean `{n}`? known: {}", refs.join(", ")))
            }
            None => d.label("not allowed").hint(format!("use one of: {}", refs.join(", "))),
        };
        d
    }
}

fn pattern_error(p: &str, node: &Node, path: &[PathSeg<'_>]) -> Diagnostic {
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
        model::NAME_PATTERN => {
            (Code::BadFormat, "a pipeline name", "names are lowercase letters, digits and `-`, e.g. `signup-to-crm`")
        }
        model::VAR_PATTERN => (
            Code::BadFormat,
            "a var name",
            "var names are ASCII letters, digits and `_`, not starting with a digit, e.g. `crm_base`",
        ),
        model::WEBHOOK_PATH_PATTERN => (
            Code::BadFormat,
            "a webhook path",
            "paths are letters, digits and `.`, `_`, `~`, `/`, `-`, without a leading `/`, e.g. `signups`",
        ),
        model::EVENT_TYPE_PATTERN => (Code::BadFormat, "an event type", "event types look like `user.created`"),
        _ => (Code::BadFormat, "a valid value", "see `sluice schema` for the expected form"),
    };
    Diagnostic::new(code, node.span, format!("{} must be {what}, found {}", where_(path), node.describe()))
        .label(format!("not {what}"))
        .hint(hint)
}

fn type_names(t: &J) -> Vec<&str> {
    match t {
        J::String(s) => vec![s.as_str()],
        J::Array(a) => a.iter().filter_map(J::as_str).collect(),
        _ => vec![],
    }
}

fn type_matches(t: &[String], node: &Node) -> bool {
    t.iter().any(|name| match (name.as_str(), &node.value) {
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

/// A value as it would be written in a pipeline: strings quoted where YAML needs it.
/// A value as the user would write it in YAML: plain scalars where safe, flow style for lists and mappings.
fn yaml_value(v: &J) -> String {
    match v {
        J::String(s) => {
            let plain = !s.is_empty()
                && !s.contains("{{")
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.contains([',', '[', ']', '{', '}'])
                && !s.starts_with(|c: char| "!&*-?{}[]|>'\"%@`#,".contains(c));
            if plain {
                s.clone()
            } else {
                J::String(s.clone()).to_string()
            }
        }
        J::Array(a) => format!("[{}]", a.iter().map(yaml_value).collect::<Vec<_>>().join(", ")),
        J::Object(o) if o.is_empty() => "{}".to_string(),
        J::Object(o) => {
            format!("{{ {} }}", o.iter().map(|(k, v)| format!("{k}: {}", yaml_value(v))).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

/// An example short enough for a hint line.
fn short_example(v: &J) -> Option<String> {
    Some(yaml_value(v)).filter(|s| s.chars().count() <= 90)
}

fn show(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where diagnostics go; in quick mode only whether there was one, with no message built.
struct Sink {
    diags: Vec<Diagnostic>,
    quick: bool,
    failed: bool,
}

impl Sink {
    fn fail(&mut self, d: impl FnOnce() -> Diagnostic) {
        self.failed = true;
        if !self.quick {
            self.diags.push(d());
        }
    }
    fn done(&self) -> bool {
        self.quick && self.failed
    }
}

/// Whether a tree value equals a JSON value, without building the JSON.
fn json_eq(n: &Node, j: &J) -> bool {
    match (&n.value, j) {
        (Value::Null, J::Null) => true,
        (Value::Bool(a), J::Bool(b)) => a == b,
        (Value::Str(a), J::String(b)) => a == b,
        (Value::Int(a), J::Number(b)) => b.as_i64() == Some(*a) || b.as_f64() == Some(*a as f64),
        (Value::Float(a), J::Number(b)) => b.as_f64() == Some(*a),
        (Value::Seq(_) | Value::Map(_), J::Array(_) | J::Object(_)) => &n.to_json() == j,
        _ => false,
    }
}

/// A step of the path to a value, for messages.
#[derive(Debug, Clone, Copy)]
pub enum PathSeg<'a> {
    Key(&'a str),
    /// A list index, with the item's `id` when it has one.
    Index(usize, Option<&'a str>),
}

fn item_id(n: &Node) -> Option<&str> {
    n.get("id").and_then(Node::as_str)
}

/// `steps.fetch.retry.max_attempts` (by step id where there is one) or `triggers[0].webhook.path`.
pub fn display_path(path: &[PathSeg<'_>]) -> String {
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

fn where_(path: &[PathSeg<'_>]) -> String {
    if path.is_empty() {
        "the pipeline".into()
    } else {
        format!("`{}`", display_path(path))
    }
}
