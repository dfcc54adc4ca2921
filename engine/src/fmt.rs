//! `sluice fmt`: a pipeline file rewritten in its canonical form with its comments kept. Keys go in the
//! format's order (SPEC section 2), collections in block style, strings quoted only where YAML would misread
//! them, multi-line strings as `|` blocks. Each comment stays with the entry it was written above (or after,
//! on the same line). Pure: text in, text out.

use crate::emit::{STEP_KEYS, TOP_KEYS};
use crate::yaml::{self, Key, Node, Value};

/// A comment of the source: where it starts (char offset, line) and its text from `#`.
#[derive(Debug, Clone)]
struct Comment {
    line: u32,
    text: String,
    /// After content on its line (else on a line of its own).
    trailing: bool,
}

/// The comments of `src`: a `#` at a line start or after whitespace, outside quoted strings and blocks.
/// (A plain scalar cannot hold ` #`; quoted ones are measured here from their opening quote, since the
/// parser's end marks run on to the end of the line.)
fn comments(src: &str, root: &Node) -> Vec<Comment> {
    let chars: Vec<char> = src.chars().collect();
    // The end of a quoted scalar starting at `a` (its closing quote), honouring escapes.
    let quoted_end = |a: usize| -> Option<usize> {
        let q = *chars.get(a)?;
        if q != '"' && q != '\'' {
            return None;
        }
        let mut i = a + 1;
        while i < chars.len() {
            match chars[i] {
                '\\' if q == '"' => i += 2,
                c if c == q && q == '\'' && chars.get(i + 1) == Some(&'\'') => i += 2,
                c if c == q => return Some(i + 1),
                _ => i += 1,
            }
        }
        Some(chars.len())
    };
    let mut inside: Vec<(usize, usize)> = Vec::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        match &n.value {
            Value::Seq(items) => stack.extend(items.iter()),
            Value::Map(entries) => {
                for (k, v) in entries {
                    if let Some(end) = quoted_end(k.span.start.offset) {
                        inside.push((k.span.start.offset, end));
                    }
                    stack.push(v);
                }
            }
            _ => match n.style {
                yaml::Style::Literal { .. } | yaml::Style::Block => {
                    inside.push((n.span.start.offset, n.span.end.offset))
                }
                _ => {
                    if let Some(end) = quoted_end(n.span.start.offset) {
                        inside.push((n.span.start.offset, end));
                    }
                }
            },
        }
    }
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut line, mut line_start, mut content) = (1u32, true, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            line_start = true;
            content = false;
            i += 1;
            continue;
        }
        let in_scalar = inside.iter().any(|(a, b)| i >= *a && i < *b);
        if c == '#' && !in_scalar && (line_start || i == 0 || chars[i - 1].is_whitespace()) {
            let end = chars[i..].iter().position(|c| *c == '\n').map_or(chars.len(), |p| i + p);
            let text: String = chars[i..end].iter().collect::<String>().trim_end().to_string();
            out.push(Comment { line, text, trailing: content });
            i = end;
            continue;
        }
        if !c.is_whitespace() {
            content = true;
            line_start = false;
        }
        i += 1;
    }
    out
}

/// Comments attached to nodes: leading (by the line of the node they stand above) and trailing (by line).
struct Notes {
    leading: Vec<(u32, String)>,
    trailing: Vec<(u32, String)>,
    /// Comments after all content.
    tail: Vec<String>,
}

fn starts(n: &Node, out: &mut Vec<u32>) {
    match &n.value {
        Value::Seq(items) => {
            for i in items {
                out.push(i.span.start.line);
                starts(i, out);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                out.push(k.span.start.line);
                starts(v, out);
            }
        }
        _ => {}
    }
}

fn attach(all: Vec<Comment>, root: &Node) -> Notes {
    let mut lines = Vec::new();
    starts(root, &mut lines);
    lines.sort_unstable();
    lines.dedup();
    let mut notes = Notes { leading: vec![], trailing: vec![], tail: vec![] };
    for c in all {
        if c.trailing {
            notes.trailing.push((c.line, c.text));
        } else {
            match lines.iter().find(|l| **l > c.line) {
                Some(l) => notes.leading.push((*l, c.text)),
                None => notes.tail.push(c.text),
            }
        }
    }
    notes
}

struct Writer<'a> {
    notes: &'a mut Notes,
    out: String,
}

impl Writer<'_> {
    /// Writes the comments that stand above source line `line`, at `indent`.
    fn leading(&mut self, line: u32, indent: usize) {
        let pad = " ".repeat(indent);
        let mut rest = Vec::new();
        for (l, text) in self.notes.leading.drain(..) {
            if l == line {
                self.out.push_str(&format!("{pad}{text}\n"));
            } else {
                rest.push((l, text));
            }
        }
        self.notes.leading = rest;
    }

    /// Ends the current output line, with the comments that followed content on source `lines`.
    fn end_line(&mut self, lines: &[u32]) {
        let mut texts = Vec::new();
        let mut rest = Vec::new();
        for (l, text) in self.notes.trailing.drain(..) {
            if lines.contains(&l) {
                texts.push(text);
            } else {
                rest.push((l, text));
            }
        }
        self.notes.trailing = rest;
        for t in texts {
            self.out.push_str(&format!(" {t}"));
        }
        self.out.push('\n');
    }
}

fn key_text(k: &str) -> String {
    if crate::emit::needs_quotes(k) {
        serde_json::to_string(k).unwrap_or_default()
    } else {
        k.to_string()
    }
}

/// A scalar on one line, or `None` for a multi-line string (written as a block).
fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            let s = f.to_string();
            if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
                s
            } else {
                format!("{s}.0")
            }
        }
        Value::Str(s) if s.contains('\n') && block_ok(s) => return None,
        Value::Str(s) if crate::emit::needs_quotes(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Str(s) => s.clone(),
        Value::Seq(v) if v.is_empty() => "[]".into(),
        Value::Map(m) if m.is_empty() => "{}".into(),
        _ => return None,
    })
}

/// Whether a multi-line string reads back the same from a `|` block.
fn block_ok(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    !body.is_empty()
        && !body.starts_with(' ')
        && !body.ends_with('\n')
        && !s.contains('\r')
        && !s.contains('\t')
        && body.lines().all(|l| l.trim_end() == l)
}

fn block(s: &str, indent: usize) -> (String, String) {
    let chomp = if s.ends_with('\n') { "|" } else { "|-" };
    let pad = " ".repeat(indent);
    let body = s.strip_suffix('\n').unwrap_or(s);
    let lines: Vec<String> =
        body.split('\n').map(|l| if l.is_empty() { String::new() } else { format!("{pad}{l}") }).collect();
    (chomp.to_string(), lines.join("\n"))
}

fn ordered<'n>(entries: &'n [(Key, Node)], order: Option<&[&str]>) -> Vec<&'n (Key, Node)> {
    let Some(order) = order else { return entries.iter().collect() };
    let mut out: Vec<&(Key, Node)> = Vec::new();
    for k in order {
        out.extend(entries.iter().filter(|(key, _)| key.name == *k));
    }
    out.extend(entries.iter().filter(|(key, _)| !order.contains(&key.name.as_str())));
    out
}

/// The last source line a node covers (for trailing comments of a multi-line value).
fn end_line(n: &Node) -> u32 {
    n.span.end.line.max(n.span.start.line)
}

fn write_map(w: &mut Writer, entries: &[(Key, Node)], indent: usize, order: Option<&[&str]>, first_inline: bool) {
    let pad = " ".repeat(indent);
    for (i, (k, v)) in ordered(entries, order).into_iter().enumerate() {
        let lead = if i == 0 && first_inline { String::new() } else { pad.clone() };
        if !(i == 0 && first_inline) {
            w.leading(k.span.start.line, indent);
        }
        let child_order = (order == Some(TOP_KEYS)).then_some(k.name.as_str());
        match scalar(&v.value) {
            Some(text) => {
                w.out.push_str(&format!("{lead}{}: {text}", key_text(&k.name)));
                w.end_line(&[k.span.start.line, v.span.start.line, end_line(v)]);
            }
            None => match &v.value {
                Value::Str(s) => {
                    let (head, body) = block(s, indent + 2);
                    w.out.push_str(&format!("{lead}{}: {head}", key_text(&k.name)));
                    w.end_line(&[k.span.start.line]);
                    w.out.push_str(&body);
                    w.out.push('\n');
                }
                Value::Map(m) => {
                    w.out.push_str(&format!("{lead}{}:", key_text(&k.name)));
                    w.end_line(&[k.span.start.line]);
                    write_map(w, m, indent + 2, None, false);
                }
                Value::Seq(items) => {
                    w.out.push_str(&format!("{lead}{}:", key_text(&k.name)));
                    w.end_line(&[k.span.start.line]);
                    let step_list = matches!(child_order, Some("steps" | "on_failure"));
                    write_seq(w, items, indent, step_list);
                }
                _ => {}
            },
        }
    }
}

fn write_seq(w: &mut Writer, items: &[Node], indent: usize, steps: bool) {
    let pad = " ".repeat(indent);
    for item in items {
        w.leading(item.span.start.line, indent);
        match scalar(&item.value) {
            Some(text) => {
                w.out.push_str(&format!("{pad}- {text}"));
                w.end_line(&[item.span.start.line, end_line(item)]);
            }
            None => match &item.value {
                Value::Str(s) => {
                    let (head, body) = block(s, indent + 2);
                    w.out.push_str(&format!("{pad}- {head}\n{body}\n"));
                }
                Value::Map(m) => {
                    w.out.push_str(&format!("{pad}- "));
                    write_map(w, m, indent + 2, steps.then_some(STEP_KEYS), true);
                }
                Value::Seq(inner) => {
                    w.out.push_str(&format!("{pad}-\n"));
                    write_seq(w, inner, indent + 2, false);
                }
                _ => {}
            },
        }
    }
}

/// Whether two trees hold the same data (spans and styles aside; map entries in any order).
fn same(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Seq(x), Value::Seq(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.iter().any(|(k2, v2)| k2.name == k.name && same(v, v2)))
        }
        (x, y) => x == y,
    }
}

/// The canonical form of a pipeline file, comments kept; `Err` with the parse diagnostics when the text is not
/// a YAML mapping. The result is checked to hold the same data as the input; if it did not, the input would
/// be answered unchanged rather than a changed meaning.
pub fn format(src: &str) -> Result<String, Vec<crate::Diagnostic>> {
    let out = format_unchecked(src)?;
    let (a, b) = (yaml::parse(src).root, yaml::parse(&out).root);
    match (a, b) {
        (Some(a), Some(b)) if same(&a, &b) => Ok(out),
        _ => Ok(src.to_string()),
    }
}

fn format_unchecked(src: &str) -> Result<String, Vec<crate::Diagnostic>> {
    let parsed = yaml::parse(src);
    let Some(root) = parsed.root.filter(|_| parsed.diags.iter().all(|d| !d.is_error())) else {
        return Err(parsed.diags);
    };
    let Value::Map(entries) = &root.value else { return Err(parsed.diags) };
    let mut notes = attach(comments(src, &root), &root);
    let mut w = Writer { notes: &mut notes, out: String::new() };
    write_map(&mut w, entries, 0, Some(TOP_KEYS), false);
    // What is left: comments after everything, and any the walk did not place.
    let mut left: Vec<String> = w.notes.leading.drain(..).map(|(_, t)| t).collect();
    left.extend(w.notes.trailing.drain(..).map(|(_, t)| t));
    left.append(&mut w.notes.tail);
    for t in left {
        w.out.push_str(&t);
        w.out.push('\n');
    }
    Ok(w.out)
}
