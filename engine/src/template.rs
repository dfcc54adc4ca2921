//! Templates (SPEC section 3): static analysis for `validate` and the one renderer the runtime uses.
//!
//! Built on minijinja with strict undefined, instruction fuel and an output bound. The clock and the
//! randomness of `now()` and `uuid()` come from the caller through [`Ambient`]; this module does no IO.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use minijinja::machinery::ast::{CallArg, Expr, Stmt};
use minijinja::machinery::{parse, parse_expr, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Rest;
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};
use serde_json::Value as J;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Instructions one rendering may execute.
pub const FUEL: u64 = 100_000;
/// Largest text one rendering may produce.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// Whether a string holds template syntax at all.
pub fn has_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The expression of a string that is exactly one `{{ expr }}`, with its character offset.
pub fn whole_expression(s: &str) -> Option<(&str, usize)> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    let lead = s.len() - s.trim_start().len() + 2;
    let offset = s[..lead].chars().count() + (inner.len() - inner.trim_start().len());
    Some((inner.trim(), offset))
}

/// A variable read by a template: `steps.lookup.output` is root `steps`, path `[lookup, output]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub root: String,
    pub path: Vec<String>,
    /// Character offset and length of the reading expression in the analysed string.
    pub offset: usize,
    pub len: usize,
}

impl Ref {
    pub fn dotted(&self, depth: usize) -> String {
        let mut s = self.root.clone();
        for p in self.path.iter().take(depth) {
            s.push('.');
            s.push_str(p);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Filter,
    Test,
    Function,
}

/// A named filter, test or function used by a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: CallKind,
    pub name: String,
    pub offset: usize,
    pub len: usize,
}

/// What a template reads and calls.
#[derive(Debug, Default, Clone)]
pub struct Analysis {
    pub refs: Vec<Ref>,
    pub calls: Vec<Call>,
    /// Statements pipelines do not allow, with their position.
    pub unsupported: Vec<(&'static str, usize, usize)>,
    /// Method calls (`x.split(' ')`), which the template engine does not provide.
    pub methods: Vec<Call>,
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub offset: usize,
    pub len: usize,
    pub kind: SyntaxKind,
}

/// Why a template was refused before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxKind {
    /// It does not parse.
    Invalid,
    /// A statement pipelines do not allow (`include`, `macro`, ...).
    Statement,
    /// One `{{ }}` or `{% %}` holds more than [`MAX_BLOCK_TOKENS`] tokens: a bound on parser and
    /// evaluator depth, so no input can exhaust the stack.
    TooComplex,
}

/// Tokens one `{{ ... }}` or `{% ... %}` may hold.
pub const MAX_BLOCK_TOKENS: usize = 512;

/// Refuses templates whose blocks are too long to parse and evaluate with bounded stack depth.
fn guard(src: &str, expression: bool) -> Result<(), SyntaxError> {
    use minijinja::machinery::{tokenize, Token};
    // A token is at least one character: short templates cannot reach the bound.
    if src.len() < MAX_BLOCK_TOKENS {
        return Ok(());
    }
    let mut in_block = 0usize;
    let mut start = 0usize;
    for tok in tokenize(src, expression, SyntaxConfig, WhitespaceConfig::default()) {
        let Ok((tok, span)) = tok else { return Ok(()) };
        match tok {
            Token::VariableStart | Token::BlockStart => {
                in_block = 0;
                start = span.start_offset as usize;
            }
            Token::VariableEnd | Token::BlockEnd | Token::TemplateData(_) => in_block = 0,
            _ => {
                in_block += 1;
                if in_block > MAX_BLOCK_TOKENS {
                    let offset = src.get(..start).map_or(0, |s| s.chars().count());
                    return Err(SyntaxError {
                        message: format!("this expression has more than {MAX_BLOCK_TOKENS} parts; split it up, e.g. into a `transform` step"),
                        offset,
                        len: 2,
                        kind: SyntaxKind::TooComplex,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Parses `src` as a template (`expression = false`) or as one bare expression, and lists what it reads.
pub fn analyze(src: &str, expression: bool) -> Result<Analysis, SyntaxError> {
    guard(src, expression)?;
    let mut w = Walker { src, scopes: vec![Vec::new()], out: Analysis::default() };
    if expression {
        let e = parse_expr(src).map_err(|e| syntax_error(src, &e))?;
        w.expr(&e);
    } else {
        let stmt =
            parse(src, "<template>", SyntaxConfig, WhitespaceConfig::default()).map_err(|e| syntax_error(src, &e))?;
        w.stmt(&stmt);
    }
    Ok(w.out)
}

fn syntax_error(src: &str, e: &Error) -> SyntaxError {
    let (offset, len) = match e.range() {
        Some(r) => {
            let start = src.get(..r.start).map_or(0, |s| s.chars().count());
            let len = src.get(r.clone()).map_or(1, |s| s.chars().count().max(1));
            (start, len)
        }
        None => (0, src.chars().count().max(1)),
    };
    let message = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
    let kind = if message.starts_with("unknown statement") { SyntaxKind::Statement } else { SyntaxKind::Invalid };
    SyntaxError { message, offset, len, kind }
}

struct Walker<'s> {
    src: &'s str,
    scopes: Vec<Vec<String>>,
    out: Analysis,
}

impl Walker<'_> {
    fn pos(&self, span: minijinja::machinery::Span) -> (usize, usize) {
        let a = span.start_offset as usize;
        let b = (span.end_offset as usize).max(a);
        let off = self.src.get(..a).map_or(0, |s| s.chars().count());
        let len = self.src.get(a..b).map_or(1, |s| s.chars().count().max(1));
        (off, len)
    }

    fn is_local(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|n| n == name))
    }

    fn bind(&mut self, target: &Expr<'_>) {
        match target {
            Expr::Var(v) => {
                if let Some(s) = self.scopes.last_mut() {
                    s.push(v.id.to_string());
                }
            }
            Expr::List(l) => l.items.iter().for_each(|i| self.bind(i)),
            _ => {}
        }
    }

    fn body(&mut self, stmts: &[Stmt<'_>]) {
        stmts.iter().for_each(|s| self.stmt(s));
    }

    fn stmt(&mut self, s: &Stmt<'_>) {
        match s {
            Stmt::Template(t) => self.body(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr),
            Stmt::EmitRaw(_) => {}
            Stmt::ForLoop(f) => {
                self.expr(&f.iter);
                self.scopes.push(vec!["loop".into()]);
                self.bind(&f.target);
                if let Some(fe) = &f.filter_expr {
                    self.expr(fe);
                }
                self.body(&f.body);
                self.scopes.pop();
                self.body(&f.else_body);
            }
            Stmt::IfCond(i) => {
                self.expr(&i.expr);
                self.body(&i.true_body);
                self.body(&i.false_body);
            }
            Stmt::WithBlock(w) => {
                for (_, v) in &w.assignments {
                    self.expr(v);
                }
                self.scopes.push(Vec::new());
                for (t, _) in &w.assignments {
                    self.bind(t);
                }
                self.body(&w.body);
                self.scopes.pop();
            }
            Stmt::Set(set) => {
                self.expr(&set.expr);
                self.bind(&set.target);
            }
            Stmt::SetBlock(sb) => {
                if let Some(f) = &sb.filter {
                    self.expr(f);
                }
                self.body(&sb.body);
                self.bind(&sb.target);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.body(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.body(&f.body);
            }
            Stmt::Do(d) => {
                let (o, l) = self.pos(d.span());
                self.out.unsupported.push(("do", o, l));
            }
        }
    }

    fn call_args(&mut self, args: &[CallArg<'_>]) {
        for a in args {
            match a {
                CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    /// `a.b['c'].d` as root `a` and path `[b, c, d]`; dynamic subscripts are walked and cut the path.
    fn chain(&mut self, e: &Expr<'_>) -> bool {
        let mut path: Vec<String> = Vec::new();
        let mut cur = e;
        loop {
            match cur {
                Expr::GetAttr(g) => {
                    path.push(g.name.to_string());
                    cur = &g.expr;
                }
                Expr::GetItem(g) => {
                    match &g.subscript_expr {
                        Expr::Const(c) => path.push(c.value.to_string()),
                        other => {
                            self.expr(other);
                            path.clear();
                        }
                    }
                    cur = &g.expr;
                }
                Expr::Var(v) => {
                    if !self.is_local(v.id) {
                        let mut span = v.span();
                        let outer = match e {
                            Expr::GetAttr(g) => g.span(),
                            Expr::GetItem(g) => g.span(),
                            _ => v.span(),
                        };
                        span.end_offset = span.end_offset.max(outer.end_offset);
                        let (offset, len) = self.pos(span);
                        path.reverse();
                        self.out.refs.push(Ref { root: v.id.to_string(), path, offset, len });
                    }
                    return true;
                }
                other => {
                    self.expr(other);
                    return true;
                }
            }
        }
    }

    fn expr(&mut self, e: &Expr<'_>) {
        match e {
            Expr::Var(_) | Expr::GetAttr(_) | Expr::GetItem(_) => {
                self.chain(e);
            }
            Expr::Const(_) => {}
            Expr::Slice(s) => {
                self.expr(&s.expr);
                for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(x);
                }
            }
            Expr::UnaryOp(u) => self.expr(&u.expr),
            Expr::BinOp(b) => {
                self.expr(&b.left);
                self.expr(&b.right);
            }
            Expr::Compare(c) => {
                self.expr(&c.expr);
                for op in &c.ops {
                    self.expr(&op.expr);
                }
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                self.expr(&i.true_expr);
                if let Some(f) = &i.false_expr {
                    self.expr(f);
                }
            }
            Expr::Filter(f) => {
                let (offset, len) = self.pos(f.span());
                self.out.calls.push(Call { kind: CallKind::Filter, name: f.name.to_string(), offset, len });
                // `map('upper')`, `select('odd')`, `selectattr('x', 'eq', 1)` name a filter or test in a string.
                let named = match f.name {
                    "map" => Some((0, CallKind::Filter)),
                    "select" | "reject" => Some((0, CallKind::Test)),
                    "selectattr" | "rejectattr" => Some((1, CallKind::Test)),
                    _ => None,
                };
                if let Some((i, kind)) = named {
                    let pos_args: Vec<&Expr<'_>> =
                        f.args.iter().filter_map(|a| if let CallArg::Pos(e) = a { Some(e) } else { None }).collect();
                    if let Some(Expr::Const(c)) = pos_args.get(i) {
                        if let Some(name) = c.value.as_str() {
                            let (offset, len) = self.pos(c.span());
                            self.out.calls.push(Call { kind, name: name.to_string(), offset, len });
                        }
                    }
                }
                if let Some(x) = &f.expr {
                    self.expr(x);
                }
                self.call_args(&f.args);
            }
            Expr::Test(t) => {
                let (offset, len) = self.pos(t.span());
                self.out.calls.push(Call { kind: CallKind::Test, name: t.name.to_string(), offset, len });
                self.expr(&t.expr);
                self.call_args(&t.args);
            }
            Expr::Call(c) => {
                match &c.expr {
                    Expr::Var(v) if !self.is_local(v.id) => {
                        let (offset, len) = self.pos(v.span());
                        self.out.calls.push(Call { kind: CallKind::Function, name: v.id.to_string(), offset, len });
                    }
                    // A method call: not available; what it is called on is still read.
                    Expr::GetAttr(g) => {
                        let (offset, len) = self.pos(c.span());
                        self.out.methods.push(Call { kind: CallKind::Function, name: g.name.to_string(), offset, len });
                        self.expr(&g.expr);
                    }
                    other => self.expr(other),
                }
                self.call_args(&c.args);
            }
            Expr::List(l) => l.items.iter().for_each(|i| self.expr(i)),
            Expr::Map(m) => {
                m.keys.iter().for_each(|k| self.expr(k));
                m.values.iter().for_each(|v| self.expr(v));
            }
        }
    }
}

/// The clock and randomness a rendering may use, given by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Ambient {
    pub now: chrono::DateTime<chrono::Utc>,
    pub seed: u64,
}

/// A render failure: always error class `template`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub message: String,
}

/// The variables a template can read (SPEC section 3), prepared once per step.
pub struct Scope {
    json: J,
    value: Value,
    secrets: Vec<String>,
}

impl Scope {
    /// `json` is an object with `trigger`, `steps`, `vars`, `secrets`, `run`, and where in scope `item`,
    /// `index`, `error`.
    pub fn new(json: J) -> Scope {
        let secrets = json
            .get("secrets")
            .and_then(J::as_object)
            .map(|m| m.values().filter_map(J::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let value = Value::from_serialize(&json);
        Scope { json, value, secrets }
    }
    pub fn json(&self) -> &J {
        &self.json
    }
    /// Replaces every secret value of this scope in `s` with `***`.
    pub fn redact(&self, s: &str) -> String {
        redact(s, self.secrets.iter().map(String::as_str))
    }
}

/// Replaces each secret (4 characters or longer) found in `s` with `***`.
pub fn redact<'a>(s: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = s.to_string();
    for sec in secrets {
        if sec.chars().count() >= 4 && out.contains(sec) {
            out = out.replace(sec, "***");
        }
    }
    out
}

/// Redacts every string of a JSON tree.
pub fn redact_json(v: &J, secrets: &[&str]) -> J {
    match v {
        J::String(s) => J::String(redact(s, secrets.iter().copied())),
        J::Array(a) => J::Array(a.iter().map(|x| redact_json(x, secrets)).collect()),
        J::Object(o) => J::Object(o.iter().map(|(k, x)| (k.clone(), redact_json(x, secrets))).collect()),
        other => other.clone(),
    }
}

/// A buffer that refuses to grow past [`MAX_OUTPUT`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(std::io::Error::other("template output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The template environment of SPEC section 3. Cheap to share; build it once.
pub struct Renderer {
    env: Environment<'static>,
    known: Mutex<HashMap<(u8, String), bool>>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

static UUID_COUNTER: AtomicU64 = AtomicU64::new(0);

fn ambient_of(state: &State) -> Result<Ambient, Error> {
    let now = state
        .lookup("__sluice_now")
        .and_then(|v| v.as_str().map(str::to_string))
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "no clock in this context"))?;
    let seed = state.lookup("__sluice_seed").and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Ok(Ambient { now, seed })
}

fn new_uuid(state: &State) -> Result<String, Error> {
    let amb = ambient_of(state)?;
    let n = UUID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = Sha256::new();
    h.update(amb.seed.to_le_bytes());
    h.update(n.to_le_bytes());
    let d = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&d[..16]);
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid().to_string())
}

fn fmt_time(t: chrono::DateTime<chrono::Utc>, format: Option<&str>) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write as _;
    match format {
        None => Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Some(f) => {
            let items: Vec<Item> = StrftimeItems::new(f).collect();
            if items.iter().any(|i| matches!(i, Item::Error)) {
                return Err(Error::new(ErrorKind::InvalidOperation, format!("invalid datetime format {f:?}")));
            }
            let mut s = String::new();
            write!(s, "{}", t.format_with_items(items.into_iter()))
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("invalid datetime format {f:?}")))?;
            Ok(s)
        }
    }
}

fn to_time(v: &Value) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    if let Some(s) = v.as_str() {
        return chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("{s:?} is not an RFC 3339 time: {e}")));
    }
    if let Ok(secs) = f64::try_from(v.clone()) {
        let ms = (secs * 1000.0) as i64;
        return chrono::DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "timestamp out of range"));
    }
    Err(Error::new(ErrorKind::InvalidOperation, "datetime expects an RFC 3339 string or a unix timestamp"))
}

fn bytes_of(v: &Value) -> Vec<u8> {
    match v.as_bytes() {
        Some(b) => b.to_vec(),
        None => v.to_string().into_bytes(),
    }
}

impl Renderer {
    pub fn new() -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("fromjson", |s: String| -> Result<Value, Error> {
            let v: J = serde_json::from_str(&s)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}")))?;
            Ok(Value::from_serialize(&v))
        });
        env.add_filter("jsonpath", |v: Value, path: String| -> Result<Value, Error> {
            use jsonpath_rust::JsonPath;
            let j: J = serde_json::to_value(&v)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("jsonpath: {e}")))?;
            let found = j
                .query(&path)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("jsonpath {path:?}: {e}")))?;
            Ok(Value::from_serialize(&found))
        });
        env.add_filter("b64encode", |v: Value| base64::engine::general_purpose::STANDARD.encode(bytes_of(&v)));
        env.add_filter("b64decode", |s: String| -> Result<String, Error> {
            let b = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim()))
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}")))?;
            String::from_utf8(b).map_err(|_| Error::new(ErrorKind::InvalidOperation, "b64decode: not UTF-8 text"))
        });
        env.add_filter("sha256", |v: Value| hex::encode(Sha256::digest(bytes_of(&v))));
        env.add_filter("hmac_sha256", |v: Value, key: String| -> Result<String, Error> {
            let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("hmac_sha256: {e}")))?;
            m.update(&bytes_of(&v));
            Ok(hex::encode(m.finalize().into_bytes()))
        });
        env.add_filter("uuid", |state: &State, _v: Rest<Value>| new_uuid(state));
        env.add_function("uuid", |state: &State| new_uuid(state));
        env.add_filter("now", |state: &State, _v: Rest<Value>| -> Result<String, Error> {
            fmt_time(ambient_of(state)?.now, None)
        });
        env.add_function("now", |state: &State, format: Option<String>| -> Result<String, Error> {
            fmt_time(ambient_of(state)?.now, format.as_deref())
        });
        env.add_filter("datetime", |v: Value, format: Option<String>| -> Result<String, Error> {
            fmt_time(to_time(&v)?, format.as_deref())
        });
        Renderer { env, known: Mutex::new(HashMap::new()) }
    }

    /// Whether a filter, test or function of this name exists.
    pub fn knows(&self, kind: CallKind, name: &str) -> bool {
        let k = (kind as u8, name.to_string());
        if let Ok(m) = self.known.lock() {
            if let Some(v) = m.get(&k) {
                return *v;
            }
        }
        let valid_ident = name.chars().all(|c| c.is_alphanumeric() || c == '_');
        let probe = match kind {
            CallKind::Filter => format!("{{{{ 1 | {name} }}}}"),
            CallKind::Test => format!("{{{{ 1 is {name} }}}}"),
            CallKind::Function => format!("{{{{ {name}() }}}}"),
        };
        let unknown = match (kind, valid_ident) {
            (_, false) => true,
            (CallKind::Function, _) if !["range", "dict", "namespace", "now", "uuid"].contains(&name) => true,
            _ => {
                let ctx = minijinja::context! { __sluice_now => "2026-01-01T00:00:00Z" };
                match self.env.render_str(&probe, ctx) {
                    Ok(_) => false,
                    Err(e) => matches!(
                        e.kind(),
                        ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
                    ),
                }
            }
        };
        if let Ok(mut m) = self.known.lock() {
            m.insert(k, !unknown);
        }
        !unknown
    }

    fn ctx(&self, scope: &Scope, amb: &Ambient) -> Value {
        let now = amb.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        minijinja::context! { __sluice_now => now, __sluice_seed => amb.seed, ..scope.value.clone() }
    }

    fn fail(&self, src: &str, e: Error, scope: &Scope, expression: bool) -> RenderError {
        let message = match e.kind() {
            ErrorKind::UndefinedError => missing_path(src, scope.json(), expression)
                .unwrap_or_else(|| format!("undefined value in template: {}", e.detail().unwrap_or("undefined"))),
            ErrorKind::OutOfFuel => "template ran out of fuel (too many instructions); simplify it".into(),
            _ => {
                let detail = e.detail().map_or(String::new(), |d| format!(": {d}"));
                format!("{}{detail}", e.kind())
            }
        };
        RenderError { message: scope.redact(&message) }
    }

    /// Renders one string: exactly one `{{ expr }}` yields the native value, anything else is text.
    pub fn render(&self, src: &str, scope: &Scope, amb: &Ambient) -> Result<J, RenderError> {
        if !has_template(src) {
            return Ok(J::String(src.to_string()));
        }
        guard(src, false).map_err(|e| RenderError { message: e.message })?;
        let ctx = self.ctx(scope, amb);
        if let Some((expr, _)) = whole_expression(src) {
            let compiled = self.env.compile_expression(expr).map_err(|e| self.fail(expr, e, scope, true))?;
            let v = compiled.eval(ctx).map_err(|e| self.fail(expr, e, scope, true))?;
            if v.as_str().is_some_and(|s| s.len() > MAX_OUTPUT) {
                return Err(RenderError { message: format!("template output is larger than {MAX_OUTPUT} bytes") });
            }
            if v.is_undefined() {
                return Err(RenderError {
                    message: missing_path(expr, scope.json(), true).unwrap_or_else(|| format!("`{expr}` is undefined")),
                });
            }
            let j = serde_json::to_value(&v)
                .map_err(|e| RenderError { message: format!("template value cannot be used as JSON: {e}") })?;
            if serde_json::to_string(&j).map_or(0, |s| s.len()) > MAX_OUTPUT {
                return Err(RenderError { message: format!("template output is larger than {MAX_OUTPUT} bytes") });
            }
            return Ok(j);
        }
        // Written through a bounded buffer: a loop that would print gigabytes stops at the limit.
        let tmpl = self.env.template_from_str(src).map_err(|e| self.fail(src, e, scope, false))?;
        let mut out = Bounded(Vec::new());
        if let Err(e) = tmpl.render_captured_to(ctx, &mut out) {
            if e.kind() == ErrorKind::WriteFailure || out.0.len() > MAX_OUTPUT {
                return Err(RenderError { message: format!("template output is larger than {MAX_OUTPUT} bytes") });
            }
            return Err(self.fail(src, e, scope, false));
        }
        Ok(J::String(String::from_utf8_lossy(&out.0).into_owned()))
    }

    /// Renders every string of a tree (a step's `with`).
    pub fn render_tree(&self, v: &J, scope: &Scope, amb: &Ambient) -> Result<J, RenderError> {
        Ok(match v {
            J::String(s) => self.render(s, scope, amb)?,
            J::Array(a) => J::Array(a.iter().map(|x| self.render_tree(x, scope, amb)).collect::<Result<_, _>>()?),
            J::Object(o) => {
                J::Object(o.iter().map(|(k, x)| Ok((k.clone(), self.render_tree(x, scope, amb)?))).collect::<Result<
                    _,
                    RenderError,
                >>(
                )?)
            }
            other => other.clone(),
        })
    }

    /// Evaluates an `if:` condition (braces optional) to its truth.
    pub fn condition(&self, src: &str, scope: &Scope, amb: &Ambient) -> Result<bool, RenderError> {
        let expr = whole_expression(src).map_or(src.trim(), |(e, _)| e);
        guard(expr, true).map_err(|e| RenderError { message: e.message })?;
        let compiled = self.env.compile_expression(expr).map_err(|e| self.fail(expr, e, scope, true))?;
        let v = compiled.eval(self.ctx(scope, amb)).map_err(|e| self.fail(expr, e, scope, true))?;
        Ok(v.is_true())
    }
}

/// Names the first variable path of `src` that the scope does not have, e.g.
/// "`trigger.body.user_id` is undefined: `trigger.body` has no key `user_id` (it has `email`, `plan`)".
fn missing_path(src: &str, scope: &J, expression: bool) -> Option<String> {
    let a = analyze(src, expression).ok()?;
    for r in &a.refs {
        let mut cur = scope.get(&r.root);
        if cur.is_none() {
            if r.root.starts_with("__sluice") {
                continue;
            }
            return Some(format!("`{}` is undefined", r.root));
        }
        for (depth, seg) in r.path.iter().enumerate() {
            let Some(c) = cur else { break };
            let next = match c {
                J::Object(o) => o.get(seg),
                J::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            if next.is_none() {
                let parent = r.dotted(depth);
                let detail = match c {
                    J::Object(o) => {
                        let keys: Vec<String> = o.keys().take(10).map(|k| format!("`{k}`")).collect();
                        if keys.is_empty() {
                            format!("`{parent}` is an empty mapping")
                        } else {
                            format!("`{parent}` has no key `{seg}` (it has {})", keys.join(", "))
                        }
                    }
                    J::Array(a) => format!("`{parent}` is a list of {} items", a.len()),
                    J::Null => format!("`{parent}` is null"),
                    other => format!("`{parent}` is {}", type_word(other)),
                };
                return Some(format!("`{}` is undefined: {detail}", r.dotted(depth + 1)));
            }
            cur = next;
        }
    }
    None
}

fn type_word(v: &J) -> &'static str {
    match v {
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        _ => "a value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        Scope::new(json!({
            "trigger": { "kind": "manual", "body": { "plan": "pro", "tags": ["a", "b"], "n": 2 } },
            "steps": { "lookup": { "status": "succeeded", "output": { "body": { "email": "x@y.z" } } } },
            "vars": { "base": "https://crm.example" },
            "secrets": { "TOKEN": "s3cr3t-value" },
            "run": { "id": "run_1" },
        }))
    }

    fn amb() -> Ambient {
        Ambient { now: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(), seed: 7 }
    }

    fn check(src: &str, expected: J) {
        let r = Renderer::new();
        assert_eq!(r.render(src, &scope(), &amb()), Ok(expected), "{src}");
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        check("{{ trigger.body.tags }}", json!(["a", "b"]));
        check("{{ trigger.body.n }}", json!(2));
        check(" {{ trigger.body }} ", json!({ "plan": "pro", "tags": ["a", "b"], "n": 2 }));
        check("n={{ trigger.body.n }}", json!("n=2"));
        check("{{ trigger.body.plan | upper }}", json!("PRO"));
        check("plain text", json!("plain text"));
    }

    #[test]
    fn output_is_bounded_while_rendering() {
        let r = Renderer::new();
        // A loop printing 100 MB strings stops at the first one past 1 MiB, not after a thousand of them.
        let t = std::time::Instant::now();
        let e = r.render("{% for i in range(1000) %}{{ 'x' * 2000000 }}{% endfor %}", &scope(), &amb());
        assert!(e.is_err_and(|e| e.message.contains("larger than")));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let e = r.render("{{ 'x' * 2000000 }}", &scope(), &amb());
        assert!(e.is_err_and(|e| e.message.contains("larger than")));
        check("{% for i in range(3) %}{{ i }}{% endfor %}", json!("012"));
    }

    #[test]
    fn extra_filters() {
        check("{{ 'hi' | b64encode }}", json!("aGk="));
        check("{{ 'aGk=' | b64decode }}", json!("hi"));
        check("{{ 'abc' | sha256 }}", json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        check(
            "{{ 'msg' | hmac_sha256('key') }}",
            json!("2d93cbc1be167bcb1637a4a23cbff01a7878f0c50ee833954ea5221bb1b8c628"),
        );
        check("{{ '{\"a\": 1}' | fromjson }}", json!({ "a": 1 }));
        check("{{ trigger.body | jsonpath('$.tags[*]') }}", json!(["a", "b"]));
        check("{{ 'a b&c' | urlencode }}", json!("a%20b%26c"));
        check("{{ trigger.body | tojson }}", json!("{\"plan\":\"pro\",\"tags\":[\"a\",\"b\"],\"n\":2}"));
        check("{{ now() }}", json!("2023-11-14T22:13:20.000Z"));
        check("{{ '2023-11-14T22:13:20Z' | datetime('%Y-%m-%d') }}", json!("2023-11-14"));
        let r = Renderer::new();
        let u = r.render("{{ uuid() }}", &scope(), &amb()).unwrap_or_default();
        assert_eq!(u.as_str().map(str::len), Some(36));
        let bad = r.render("{{ now() | datetime('%Q') }}", &scope(), &amb());
        assert!(bad.is_err());
    }

    #[test]
    fn undefined_names_the_missing_path() {
        let r = Renderer::new();
        let e = r.render("{{ trigger.body.user_id }}", &scope(), &amb()).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some(
                "`trigger.body.user_id` is undefined: `trigger.body` has no key `user_id` (it has `plan`, `tags`, `n`)"
            )
        );
        let e = r.render("id={{ steps.nope.output }}", &scope(), &amb()).err().map(|e| e.message);
        assert!(e.unwrap_or_default().contains("`steps.nope` is undefined"));
    }

    #[test]
    fn rendering_is_bounded() {
        let r = Renderer::new();
        let e = r.render("{% for i in range(90000) %}x{% endfor %}", &scope(), &amb());
        assert!(e.is_err_and(|e| e.message.contains("fuel")));
        let e = r.render("{{ 'x' * 2000000 }}", &scope(), &amb());
        assert!(e.is_err());
    }

    #[test]
    fn secrets_are_redacted_from_errors() {
        let r = Renderer::new();
        let e = r.render("{{ secrets.TOKEN | fromjson }}", &scope(), &amb()).err().map(|e| e.message);
        assert!(!e.unwrap_or_default().contains("s3cr3t"));
        assert_eq!(scope().redact("Bearer s3cr3t-value"), "Bearer ***");
    }

    #[test]
    fn conditions() {
        let r = Renderer::new();
        assert_eq!(r.condition("trigger.body.plan == 'pro'", &scope(), &amb()), Ok(true));
        assert_eq!(r.condition("{{ trigger.body.n > 5 }}", &scope(), &amb()), Ok(false));
    }

    #[test]
    fn analysis_finds_references_with_positions() {
        let a = analyze("{{ steps.lookup.output.body | upper }} {% for t in trigger.body.tags %}{{ t }}{{ loop.index }}{% endfor %}", false)
            .unwrap_or_default();
        let roots: Vec<String> = a.refs.iter().map(|r| r.dotted(9)).collect();
        assert_eq!(roots, ["steps.lookup.output.body", "trigger.body.tags"]);
        assert_eq!((a.refs[0].offset, a.refs[0].len), (3, 24));
        assert_eq!(a.calls[0].name, "upper");
        let e = analyze("{{ a + }}", false).err().map(|e| e.offset);
        assert!(e.is_some());
    }

    #[test]
    fn known_filters() {
        let r = Renderer::new();
        assert!(r.knows(CallKind::Filter, "upper"));
        assert!(r.knows(CallKind::Filter, "jsonpath"));
        assert!(!r.knows(CallKind::Filter, "uper"));
        assert!(r.knows(CallKind::Test, "defined"));
        assert!(!r.knows(CallKind::Test, "definedd"));
        assert!(r.knows(CallKind::Function, "now"));
        assert!(!r.knows(CallKind::Function, "env"));
    }
}
