//! YAML (and JSON) text to a tree of values that remember where they were written.
//!
//! Built on saphyr-parser's event stream so that every value keeps its span, and so that this module, not the
//! parser, decides the limits: file size, nesting depth and the alias expansion budget. It does no IO.

use crate::diag::{Code, Diagnostic, Pos, Span};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use std::collections::HashMap;

/// Limits of SPEC section 2.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
pub const MAX_DEPTH: usize = 64;
/// Values that aliases may add by expansion, over the whole file.
pub const ALIAS_BUDGET: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    /// `'...'` or `"..."`; `exact` when the value's characters stand as they are right after the opening quote.
    Quoted {
        exact: bool,
    },
    /// A `|` block: the value's first line stands on source line `first_line`, indented `indent` columns.
    Literal {
        first_line: u32,
        indent: u32,
    },
    /// A `>` block (folded: positions inside it are not exact).
    Block,
    /// `{...}` / `[...]` or a block collection.
    Collection,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    pub style: Style,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn key_span(&self, key: &str) -> Option<Span> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k.span),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }
    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(e) => e,
            _ => &[],
        }
    }
    /// Follows a path of keys and list indices.
    pub fn at<'a>(&'a self, path: &[Seg<'_>]) -> Option<&'a Node> {
        let mut n = self;
        for seg in path {
            n = match (seg, &n.value) {
                (Seg::Key(k), _) => n.get(k)?,
                (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(n)
    }
    /// The JSON value, spans dropped.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            // `3.0` is the whole number 3, as JSON Schema reads it.
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => J::from(*f as i64),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }
    /// A description of the value's type, for messages ("the string \"three\"").
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".into(),
            Value::Bool(b) => format!("the boolean `{b}`"),
            Value::Int(i) => format!("the number `{i}`"),
            Value::Float(f) => format!("the number `{f}`"),
            Value::Str(s) => {
                let short: String = s.chars().take(40).collect();
                let more = if short.len() < s.len() { "..." } else { "" };
                format!("the string {:?}{more}", short)
            }
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
    /// Where a character offset inside this string value sits in the file, when that can be told exactly.
    pub fn str_span(&self, char_offset: usize, len: usize) -> Span {
        let single_line = self.span.start.line == self.span.end.line;
        if let (Style::Literal { first_line, indent }, Some(v)) = (self.style, self.as_str()) {
            let (mut line, mut col) = (0u32, 0u32);
            for ch in v.chars().take(char_offset) {
                if ch == '\n' {
                    line += 1;
                    col = 0;
                } else {
                    col += 1;
                }
            }
            let start = Pos { line: first_line + line, col: indent + col + 1, offset: self.span.start.offset };
            let end = Pos { col: start.col + len.max(1) as u32, ..start };
            return Span { start, end };
        }
        let shift = match self.style {
            Style::Plain if single_line => Some(0),
            Style::Quoted { exact: true } => Some(1),
            _ => None,
        };
        match shift {
            Some(s) => self.span.sub(s + char_offset, len.max(1)),
            None => self.span,
        }
    }
}

/// One step of a path into a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The result of parsing: a tree when the text parsed, and the problems found on the way.
#[derive(Debug, Default)]
pub struct Parsed {
    pub root: Option<Node>,
    pub diags: Vec<Diagnostic>,
}

fn pos(m: saphyr_parser::Marker) -> Pos {
    Pos { line: m.line() as u32, col: m.col() as u32 + 1, offset: m.index() }
}

fn span(s: YSpan) -> Span {
    Span { start: pos(s.start), end: pos(s.end) }
}

struct Frame {
    span: Span,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Key, Node)>,
        pending_key: Option<Node>,
        flow: bool,
        /// Set when this "mapping" is an unquoted `{{ ... }}`: the text it was meant to be.
        template: Option<String>,
    },
}

/// Parses YAML or JSON text. Never panics; every problem becomes a diagnostic.
pub fn parse(src: &str) -> Parsed {
    let mut out = Parsed::default();
    if src.len() > MAX_FILE_BYTES {
        out.diags.push(
            Diagnostic::new(
                Code::FileTooLarge,
                Span::point(Pos { line: 1, col: 1, offset: 0 }),
                format!("the file is {} bytes; a pipeline file may be at most 1 MiB", src.len()),
            )
            .hint("split the pipeline, or move large constants out of the file"),
        );
        return out;
    }
    let mut b = Builder {
        src,
        chars: CharIndex::new(src),
        stack: Vec::new(),
        anchors: HashMap::new(),
        expanded: 0,
        docs: 0,
        root: None,
        diags: Vec::new(),
    };
    let mut parser = Parser::new_from_str(src);
    while let Some(ev) = parser.next_event() {
        match ev {
            Ok((ev, sp)) => match b.event(ev, sp) {
                Ok(true) => {}
                Ok(false) => break,
                Err(d) => {
                    b.diags.push(*d);
                    out.diags = b.diags;
                    return out;
                }
            },
            Err(e) => {
                let p = pos(*e.marker());
                let msg = e.info().to_string();
                if msg.contains("recursion limit") {
                    b.diags.push(
                        Diagnostic::new(
                            Code::TooDeep,
                            Span::point(p),
                            format!("values are nested more than {MAX_DEPTH} levels deep"),
                        )
                        .hint("flatten the structure"),
                    );
                    out.diags = b.diags;
                    return out;
                }
                if let Some(d) = unquoted_template_near(src, p.line) {
                    // This explains the line better than the mapping seen before the parser gave up.
                    b.diags.retain(|x| !(x.code == Code::UnquotedTemplate && x.span.start.line == d.span.start.line));
                    b.diags.push(d);
                    out.diags = b.diags;
                    return out;
                }
                b.diags.push(unquoted_template_near(src, p.line).unwrap_or_else(|| {
                    Diagnostic::new(Code::YamlSyntax, Span::point(p), format!("invalid YAML: {msg}"))
                        .hint(syntax_hint(&msg))
                }));
                out.diags = b.diags;
                return out;
            }
        }
    }
    out.root = b.root;
    out.diags = b.diags;
    out
}

/// A syntax error caused by an unquoted `{{ ... }}` followed by more text (`url: {{ x }}/orders`), on the
/// error's line or the one before: the real mistake, with the quoted line as the fix.
fn unquoted_template_near(src: &str, line: u32) -> Option<Diagnostic> {
    let on_line = |l: u32| -> Option<Diagnostic> {
        let text = src.lines().nth((l as usize).checked_sub(1)?)?;
        let at = text.find(": {{").map(|i| i + 2).or_else(|| {
            let t = text.trim_start();
            t.starts_with("- {{").then(|| text.len() - t.len() + 2)
        })?;
        let value = text[at..].split(" #").next().unwrap_or("").trim_end();
        let quoted =
            if value.contains('"') { format!("'{}'", value.replace('\'', "''")) } else { format!("\"{value}\"") };
        let col = text[..at].chars().count() as u32 + 1;
        let start = Pos { line: l, col, offset: 0 };
        let end = Pos { line: l, col: col + value.chars().count() as u32, offset: 0 };
        Some(
            Diagnostic::new(
                Code::UnquotedTemplate,
                Span { start, end },
                "this template is not quoted, so YAML cannot read the line",
            )
            .label("quote the whole value")
            .hint(format!("quote the template: {}{quoted}", text[..at].trim_start())),
        )
    };
    on_line(line).or_else(|| on_line(line.saturating_sub(1)))
}

fn syntax_hint(msg: &str) -> String {
    if msg.contains("tab") {
        "indent with spaces; YAML does not allow tabs for indentation".into()
    } else if msg.contains("mapping values") {
        "a value that contains `: ` must be quoted, e.g. `key: \"a: b\"`".into()
    } else {
        "check the indentation and quoting around this position".into()
    }
}

/// Character offsets (what the parser reports) to byte offsets, without a scan per lookup.
struct CharIndex {
    /// Byte offset of each character; empty when the text is ASCII and the two are equal.
    bytes: Vec<usize>,
    len: usize,
}

impl CharIndex {
    fn new(src: &str) -> CharIndex {
        let bytes = if src.is_ascii() { Vec::new() } else { src.char_indices().map(|(i, _)| i).collect() };
        CharIndex { bytes, len: src.len() }
    }
    fn byte(&self, char_offset: usize) -> usize {
        if self.bytes.is_empty() {
            char_offset.min(self.len)
        } else {
            self.bytes.get(char_offset).copied().unwrap_or(self.len)
        }
    }
}

struct Builder<'s> {
    src: &'s str,
    chars: CharIndex,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    expanded: usize,
    docs: usize,
    root: Option<Node>,
    diags: Vec<Diagnostic>,
}

/// Nesting depth of a value (a scalar is 0).
fn depth(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn count(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
        _ => 1,
    }
}

impl Builder<'_> {
    /// Returns Ok(false) to stop.
    fn event(&mut self, ev: Event<'_>, sp: YSpan) -> Result<bool, Box<Diagnostic>> {
        let sp = span(sp);
        let ev_is_seq = matches!(ev, Event::SequenceStart(..));
        match ev {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            Event::StreamEnd => return Ok(false),
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err(Box::new(
                        Diagnostic::new(Code::MultipleDocuments, sp, "a pipeline file holds exactly one YAML document")
                            .hint("remove the `---` separator, or put each pipeline in a file of its own"),
                    ));
                }
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(Box::new(Diagnostic::new(Code::YamlSyntax, sp, "alias refers to an unknown anchor")));
                };
                let cost = count(node);
                self.expanded += cost;
                if self.expanded > ALIAS_BUDGET {
                    return Err(Box::new(
                        Diagnostic::new(
                            Code::AliasBudget,
                            sp,
                            format!("YAML aliases expand to more than {ALIAS_BUDGET} values; the file is refused"),
                        )
                        .hint("write the values out, or reuse them through `vars` and templates"),
                    ));
                }
                if self.stack.len() + depth(node) > MAX_DEPTH {
                    return Err(Box::new(
                        Diagnostic::new(
                            Code::TooDeep,
                            sp,
                            format!("values are nested more than {MAX_DEPTH} levels deep"),
                        )
                        .hint("this alias expands to a deeply nested value; flatten the structure"),
                    ));
                }
                let mut n = node.clone();
                n.span = sp;
                self.push_value(n)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = self.scalar(&text, style, tag.as_deref(), sp)?;
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node)?;
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                let is_seq = ev_is_seq;
                if let Some(t) = tag.as_deref() {
                    self.check_tag(t, sp)?;
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Box::new(
                        Diagnostic::new(
                            Code::TooDeep,
                            sp,
                            format!("values are nested more than {MAX_DEPTH} levels deep"),
                        )
                        .hint("flatten the structure"),
                    ));
                }
                let flow = self.src_char_is(sp, '{') || self.src_char_is(sp, '[');
                let kind = if is_seq {
                    FrameKind::Seq(Vec::new())
                } else {
                    FrameKind::Map { entries: Vec::new(), pending_key: None, flow, template: None }
                };
                self.stack.push(Frame { span: sp, anchor, kind });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(true);
                };
                let end = if sp.end.offset > frame.span.start.offset { sp.end } else { sp.start };
                let span = Span { start: frame.span.start, end };
                let (value, style) = match frame.kind {
                    FrameKind::Seq(items) => (Value::Seq(items), Style::Collection),
                    // Already reported; read on as if it had been quoted, so later checks see a string.
                    FrameKind::Map { template: Some(t), .. } => (Value::Str(t), Style::Plain),
                    FrameKind::Map { entries, .. } => (Value::Map(merge_keys(entries)), Style::Collection),
                };
                let node = Node { value, span, style };
                if frame.anchor > 0 {
                    self.anchors.insert(frame.anchor, node.clone());
                }
                self.push_value(node)?;
            }
        }
        Ok(true)
    }

    fn src_char_is(&self, sp: Span, c: char) -> bool {
        self.src.get(self.chars.byte(sp.start.offset)..).and_then(|s| s.chars().next()) == Some(c)
    }

    fn check_tag(&self, tag: &saphyr_parser::Tag, sp: Span) -> Result<(), Box<Diagnostic>> {
        let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
        if core && ["str", "int", "float", "bool", "null", "map", "seq"].contains(&tag.suffix.as_str()) {
            return Ok(());
        }
        Err(Box::new(
            Diagnostic::new(
                Code::UnsupportedTag,
                sp,
                format!("the YAML tag `{}{}` is not supported", tag.handle, tag.suffix),
            )
            .hint("remove the tag; pipelines use plain YAML values"),
        ))
    }

    fn scalar(
        &self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&saphyr_parser::Tag>,
        sp: Span,
    ) -> Result<Node, Box<Diagnostic>> {
        let st = match style {
            ScalarStyle::Plain => Style::Plain,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                // Exact when the source right after the opening quote is the value itself, on one line.
                let at = self.chars.byte(sp.start.offset) + 1;
                let exact = !text.contains('\n')
                    && self.src.get(at..at + text.len()) == Some(text)
                    && matches!(self.src.get(at + text.len()..).and_then(|r| r.chars().next()), Some('"' | '\''));
                Style::Quoted { exact }
            }
            ScalarStyle::Literal => self.literal_style(sp),
            _ => Style::Block,
        };
        let value = if let Some(t) = tag {
            self.check_tag(t, sp)?;
            let v = resolve_plain(text);
            let fits = matches!(
                (t.suffix.as_str(), &v),
                ("str" | "map" | "seq", _)
                    | ("int", Value::Int(_))
                    | ("bool", Value::Bool(_))
                    | ("null", Value::Null)
                    | ("float", Value::Float(_) | Value::Int(_))
            );
            if !fits {
                return Err(Box::new(
                    Diagnostic::new(Code::UnsupportedTag, sp, format!("{text:?} is not a valid `!!{}`", t.suffix))
                        .hint("remove the tag, or write a value of that type"),
                ));
            }
            match (t.suffix.as_str(), v) {
                ("str", _) => Value::Str(text.to_string()),
                ("float", Value::Int(i)) => Value::Float(i as f64),
                (_, v) => v,
            }
        } else if st == Style::Plain {
            resolve_plain(text)
        } else {
            Value::Str(text.to_string())
        };
        Ok(Node { value, span: sp, style: st })
    }

    /// Where the content of a `|` block starts: the line after the header, and its indentation.
    fn literal_style(&self, sp: Span) -> Style {
        let at = self.chars.byte(sp.start.offset);
        let rest = self.src.get(at..).unwrap_or("");
        // The span starts at the `|` header, or (depending on the parser) at the content itself.
        let (first_line, content) = if rest.starts_with('|') {
            (sp.start.line + 1, rest.split_once('\n').map_or("", |(_, c)| c))
        } else {
            let line_start = self.src.get(..at).and_then(|s| s.rfind('\n')).map_or(0, |i| i + 1);
            (sp.start.line, self.src.get(line_start..).unwrap_or(""))
        };
        let indent = content
            .split('\n')
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.chars().take_while(|c| *c == ' ').count() as u32);
        Style::Literal { first_line, indent }
    }

    fn push_value(&mut self, node: Node) -> Result<(), Box<Diagnostic>> {
        let src = self.src;
        let chars = &self.chars;
        let Some(top) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return Ok(());
        };
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, pending_key, flow, template } => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    let name = match &key.value {
                        Value::Str(s) => s.clone(),
                        Value::Null => {
                            self.diags.push(
                                Diagnostic::new(Code::ComplexKey, key.span, "a mapping key is empty (null)")
                                    .hint("write a name before the `:`"),
                            );
                            return Ok(());
                        }
                        Value::Bool(b) => b.to_string(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Map(_) if *flow || key.style == Style::Collection => {
                            let whole = Span { start: top.span.start, end: key.span.end };
                            let text = format!("{}}}", slice(src, chars, whole));
                            let looks_template = text.starts_with("{{");
                            let d = if looks_template {
                                let shown: String = text.lines().next().unwrap_or("").chars().take(60).collect();
                                *template = Some(text.clone());
                                let mut whole = whole;
                                whole.end.col += 1;
                                whole.end.offset += 1;
                                Diagnostic::new(
                                    Code::UnquotedTemplate,
                                    whole,
                                    "this template is not quoted, so YAML reads `{{ ... }}` as a mapping",
                                )
                                .label("quote the template")
                                .hint(format!("quote the template: write \"{}\" with the double quotes", shown.trim()))
                            } else {
                                Diagnostic::new(
                                    Code::ComplexKey,
                                    key.span,
                                    "a mapping key must be a plain string, not a mapping",
                                )
                                .hint("use a string as the key")
                            };
                            self.diags.push(d);
                            return Ok(());
                        }
                        _ => {
                            self.diags.push(
                                Diagnostic::new(
                                    Code::ComplexKey,
                                    key.span,
                                    "a mapping key must be a plain string, not a list or mapping",
                                )
                                .hint("use a string as the key"),
                            );
                            return Ok(());
                        }
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        self.diags.push(
                            Diagnostic::new(
                                Code::DuplicateKey,
                                key.span,
                                format!("the key `{name}` appears twice in this mapping"),
                            )
                            .label("second occurrence")
                            .hint(format!("remove one of them; the first is at line {}", first.span.start.line)),
                        );
                        return Ok(());
                    }
                    entries.push((Key { name, span: key.span }, node));
                }
            },
        }
        Ok(())
    }
}

/// YAML 1.1 merge keys (`<<: *base`), which many hand-written files use: explicit keys win.
fn merge_keys(entries: Vec<(Key, Node)>) -> Vec<(Key, Node)> {
    if !entries.iter().any(|(k, v)| k.name == "<<" && matches!(v.value, Value::Map(_) | Value::Seq(_))) {
        return entries;
    }
    let mut out: Vec<(Key, Node)> = Vec::new();
    let mut merged: Vec<(Key, Node)> = Vec::new();
    for (k, v) in entries {
        if k.name == "<<" {
            let sources: Vec<Node> = match v.value {
                Value::Map(_) => vec![v],
                Value::Seq(items) => items,
                _ => continue,
            };
            for s in sources {
                if let Value::Map(es) = s.value {
                    for (mk, mv) in es {
                        if !merged.iter().any(|(k2, _)| k2.name == mk.name) {
                            merged.push((mk, mv));
                        }
                    }
                }
            }
        } else {
            out.push((k, v));
        }
    }
    for (k, v) in merged {
        if !out.iter().any(|(k2, _)| k2.name == k.name) {
            out.push((k, v));
        }
    }
    out
}

fn slice<'a>(src: &'a str, chars: &CharIndex, sp: Span) -> &'a str {
    let a = chars.byte(sp.start.offset);
    let b = chars.byte(sp.end.offset).max(a);
    src.get(a..b).unwrap_or("")
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(t: &str) -> Value {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let first = t.as_bytes()[0];
    if first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.' {
        if let Some(hex) = t.strip_prefix("0x") {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return Value::Int(i);
            }
        }
        if let Some(oct) = t.strip_prefix("0o") {
            if let Ok(i) = i64::from_str_radix(oct, 8) {
                return Value::Int(i);
            }
        }
        let digits = t.trim_start_matches(['-', '+']);
        if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
            if let Ok(i) = t.parse::<i64>() {
                return Value::Int(i);
            }
        }
        let float_like = t.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
            && t.bytes().any(|c| c.is_ascii_digit());
        if float_like {
            if let Ok(f) = t.parse::<f64>() {
                return Value::Float(f);
            }
        }
    }
    Value::Str(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(src: &str) -> Node {
        let p = parse(src);
        assert!(p.diags.is_empty(), "{:?}", p.diags);
        p.root.unwrap_or(Node { value: Value::Null, span: Span::default(), style: Style::Plain })
    }

    #[test]
    fn scalars_resolve_like_yaml_1_2() {
        let n = root("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 0x10\ng: yes\nh: 1_000");
        let j = n.to_json();
        assert_eq!(j["a"], 1);
        assert_eq!(j["b"], 1.5);
        assert_eq!(j["c"], true);
        assert!(j["d"].is_null());
        assert_eq!(j["e"], "1");
        assert_eq!(j["f"], 16);
        assert_eq!(j["g"], "yes");
        assert_eq!(j["h"], "1_000");
    }

    #[test]
    fn values_keep_positions() {
        let n = root("steps:\n  - id: a\n    uses: http\n");
        let uses = n.at(&[Seg::Key("steps"), Seg::Index(0), Seg::Key("uses")]);
        let sp = uses.map(|u| u.span).unwrap_or_default();
        assert_eq!((sp.start.line, sp.start.col), (3, 11));
        assert_eq!(sp.end.col, 15);
    }

    #[test]
    fn json_parses_with_positions() {
        let n = root("{\"name\": \"x\",\n \"version\": 1}");
        assert_eq!(n.get("version").map(|v| v.span.start.line), Some(2));
    }

    #[test]
    fn billion_laughs_is_refused_fast() {
        let mut src = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            src.push_str(&format!(
                "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = n;
        }
        let p = parse(&src);
        assert!(p.root.is_none());
        assert_eq!(p.diags[0].code, Code::AliasBudget);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let p = parse(&src);
        assert_eq!(p.diags[0].code, Code::TooDeep);
    }

    #[test]
    fn unquoted_template_is_recognised() {
        let p = parse("url: {{ vars.x }}\n");
        assert_eq!(p.diags[0].code, Code::UnquotedTemplate);
        assert!(p.diags[0].hint.as_deref().unwrap_or("").contains("\"{{ vars.x }}\""));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let p = parse("a: 1\na: 2\n");
        assert_eq!(p.diags[0].code, Code::DuplicateKey);
        assert_eq!(p.diags[0].span.start.line, 2);
    }

    #[test]
    fn merge_keys_merge() {
        let n = root("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n");
        assert_eq!(n.to_json()["c"], serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn template_positions_inside_strings() {
        let n = root("url: \"https://x/{{ a }}\"\n");
        let url = n.get("url").map(|u| u.str_span(10, 7)).unwrap_or_default();
        assert_eq!((url.start.col, url.end.col), (17, 24));
    }
}
