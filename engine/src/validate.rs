//! Validation: text in, a typed pipeline and every diagnostic out (SPEC sections 2-5).
//!
//! Order: parse (YAML/JSON with spans) → schema (the generated JSON Schema) → meaning (ids, needs,
//! cycles, templates, cron, time zones, kind checks). All problems of all files are collected. No IO.

use crate::diag::{self, one_of, suggest, Code, Diagnostic, Span};
use crate::kind::Registry;
use crate::model::{self, Condition, ForEach, Pipeline, Step, Trigger};
use crate::schema::SchemaChecker;
use crate::template::{self, CallKind, Renderer};
use crate::yaml::{self, Node, Seg, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Fields a template may read under each root.
const TRIGGER_FIELDS: &[&str] = &["kind", "body", "headers", "query", "received_at", "webhook_id"];
const RUN_FIELDS: &[&str] = &["id", "pipeline", "version", "tenant", "started_at", "attempt"];
const STEP_FIELDS: &[&str] = &["output", "status", "attempts"];
const ERROR_FIELDS: &[&str] = &["step", "class", "message"];
const ROOTS: &[&str] = &["trigger", "steps", "vars", "secrets", "run", "item", "index", "error"];

/// The validator: the registry of step kinds, the schema built from it, and the template environment.
pub struct Validator {
    registry: Arc<Registry>,
    checker: SchemaChecker,
    renderer: Renderer,
}

/// One file's outcome.
#[derive(Debug)]
pub struct Checked {
    pub file: String,
    pub diags: Vec<Diagnostic>,
    /// The typed pipeline, when the file had no error.
    pub pipeline: Option<Pipeline>,
    /// For each step id (main and on_failure): the steps its templates read.
    pub reads: HashMap<String, BTreeSet<String>>,
    /// Webhook paths with their spans, for checks across a tenant folder.
    pub webhook_paths: Vec<(String, Span)>,
    /// Where the pipeline's `name` is, for checks across a tenant folder.
    pub name_span: Option<Span>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

/// Where a template sits decides what it may read.
#[derive(Clone, Copy)]
struct Place<'a> {
    step: Option<&'a Step>,
    on_failure: bool,
    /// `item`/`index` are in scope (a `with` of a `for_each` step).
    item: bool,
    /// Only `secrets` and `vars` (trigger settings).
    trigger_setting: bool,
}

impl Validator {
    pub fn new(registry: Arc<Registry>) -> Validator {
        let schema = model::pipeline_schema(&registry);
        Validator { registry, checker: SchemaChecker::new(schema), renderer: Renderer::new() }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The pipeline JSON Schema (draft 2020-12) this validator checks against.
    pub fn schema(&self) -> &serde_json::Value {
        self.checker.schema()
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// Checks one file. `file` is the path shown in diagnostics; its stem must equal the pipeline `name`
    /// when it ends in `.yaml`, `.yml` or `.json`.
    pub fn check(&self, file: &str, src: &str) -> Checked {
        let mut c = Checked {
            file: file.to_string(),
            diags: Vec::new(),
            pipeline: None,
            reads: HashMap::new(),
            webhook_paths: Vec::new(),
            name_span: None,
        };
        let parsed = yaml::parse(src);
        c.diags.extend(parsed.diags);
        let Some(root) = parsed.root else {
            if c.diags.is_empty() {
                c.diags.push(
                    Diagnostic::new(Code::MissingField, Span::point(first_pos()), "the file is empty").hint(
                        "a pipeline needs at least `version`, `name`, `triggers` and `steps`; see `sluice schema`",
                    ),
                );
            }
            return finish(c, file);
        };
        let shape = self.checker.check(&root);
        c.diags.extend(shape);
        if c.has_errors() {
            // Check meaning on what can be salvaged, so one pass reports every problem.
            let p = salvage(&root);
            self.meaning(&p, &root, file, &mut c);
        } else {
            match serde_json::from_value::<Pipeline>(root.to_json()) {
                Ok(p) => {
                    self.meaning(&p, &root, file, &mut c);
                    if !c.has_errors() {
                        c.pipeline = Some(p);
                    }
                }
                Err(e) => c.diags.push(Diagnostic::new(
                    Code::WrongType,
                    root.span,
                    format!("the pipeline does not match the format: {e}"),
                )),
            }
        }
        finish(c, file)
    }

    /// Checks many files, adding the checks across each tenant folder (webhook paths).
    pub fn check_all(&self, files: &[(String, String)]) -> Vec<Checked> {
        let mut out: Vec<Checked> = files.iter().map(|(f, s)| self.check(f, s)).collect();
        let mut seen: HashMap<(String, String), (String, Span)> = HashMap::new();
        // A pipeline's name is its file's stem, so `x.yaml` and `x.json` in one folder name one pipeline twice.
        let mut names: HashMap<(String, String), String> = HashMap::new();
        for c in &mut out {
            let dir = parent_dir(&c.file);
            let base = c.file.get(dir.len()..).unwrap_or("").trim_start_matches(['/', '\\']);
            let stem = base.rsplit_once('.').map_or(base, |(s, _)| s).to_string();
            match names.get(&(dir.clone(), stem.clone())) {
                Some(other) => {
                    let at = c.name_span.unwrap_or(Span::point(diag::Pos { line: 1, col: 1, offset: 0 }));
                    let mut d = Diagnostic::new(
                        Code::DuplicatePipelineName,
                        at,
                        format!("the pipeline `{stem}` is also defined by {other}"),
                    )
                    .label("second definition of this pipeline")
                    .hint("a tenant's pipeline names are unique: delete one of the two files, or rename it and its `name`");
                    d.file = c.file.clone();
                    c.diags.push(d);
                    c.pipeline = None;
                }
                None => {
                    names.insert((dir.clone(), stem), c.file.clone());
                }
            }
            for (path, span) in c.webhook_paths.clone() {
                match seen.get(&(dir.clone(), path.clone())) {
                    Some((other, osp)) if other != &c.file => {
                        let mut d = Diagnostic::new(
                            Code::DuplicateWebhookPath,
                            span,
                            format!(
                                "the webhook path `{path}` is also used by {other}:{}:{}",
                                osp.start.line, osp.start.col
                            ),
                        )
                        .label("used twice in this tenant")
                        .hint("each webhook path may start one pipeline; rename one of them");
                        d.file = c.file.clone();
                        c.diags.push(d);
                        c.pipeline = None;
                    }
                    Some(_) => {}
                    None => {
                        seen.insert((dir.clone(), path), (c.file.clone(), span));
                    }
                }
            }
            diag::sort(&mut c.diags);
        }
        out
    }

    fn meaning(&self, p: &Pipeline, root: &Node, file: &str, c: &mut Checked) {
        c.name_span = root.get("name").map(|n| n.span);
        let out = &mut c.diags;
        // The name must match the file.
        if let Some(stem) = file_stem(file) {
            if stem != p.name {
                let sp = root.get("name").map_or(root.span, |n| n.span);
                out.push(
                    Diagnostic::new(
                        Code::NameMismatch,
                        sp,
                        format!("the pipeline is named `{}` but its file is `{stem}`", p.name),
                    )
                    .label("differs from the file name")
                    .hint({
                        let ext = file.rsplit('.').next().unwrap_or("yaml");
                        let stem_ok = regex_lite_name(stem);
                        if stem_ok {
                            format!("rename the file to `{}.{ext}`, or set `name: {stem}`", p.name)
                        } else {
                            format!("rename the file to `{}.{ext}`", p.name)
                        }
                    }),
                );
            }
        }
        let mut vars_read = self.triggers(p, root, c);
        let out = &mut c.diags;

        // Step ids: unique over steps and on_failure.
        let mut first: HashMap<&str, Span> = HashMap::new();
        let all: Vec<(&Step, &Node, bool)> = steps_with_nodes(p, root);
        for (s, node, _) in &all {
            let sp = node.get("id").map_or(node.span, |n| n.span);
            if let Some(prev) = first.get(s.id.as_str()) {
                out.push(
                    Diagnostic::new(Code::DuplicateStepId, sp, format!("the step id `{}` is used twice", s.id))
                        .label("second step with this id")
                        .hint(format!("step ids must be unique; the first is at line {}", prev.start.line)),
                );
            } else {
                first.insert(&s.id, sp);
            }
        }
        let main_ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        let fail_ids: Vec<&str> = p.on_failure.iter().map(|s| s.id.as_str()).collect();

        for (s, node, on_failure) in &all {
            // needs
            let same_side: &[&str] = if *on_failure { &fail_ids } else { &main_ids };
            let mut seen_needs: BTreeSet<&str> = BTreeSet::new();
            for (i, need) in s.needs.iter().enumerate() {
                let sp = node.at(&[Seg::Key("needs"), Seg::Index(i)]).map_or(node.span, |n| n.span);
                if !seen_needs.insert(need) {
                    out.push(
                        Diagnostic::new(Code::RedundantNeed, sp, format!("`{need}` is listed twice in `needs`"))
                            .hint("remove the second one"),
                    );
                    continue;
                }
                if !same_side.contains(&need.as_str()) {
                    let other_side = if *on_failure { &main_ids } else { &fail_ids };
                    let d = if other_side.contains(&need.as_str()) {
                        let why = if *on_failure {
                            "`on_failure` steps run after the main steps have stopped; they can only need other `on_failure` steps"
                        } else {
                            "`on_failure` steps run only after the run failed, so a main step cannot need one"
                        };
                        Diagnostic::new(
                            Code::UnknownNeed,
                            sp,
                            format!("`needs` names `{need}`, which is on the other side of `on_failure`"),
                        )
                        .hint(why)
                    } else {
                        let d = Diagnostic::new(
                            Code::UnknownNeed,
                            sp,
                            format!("`needs` names `{need}`, which is not a step of this pipeline"),
                        );
                        match suggest(need, same_side.iter().copied()) {
                            Some(n) => d
                                .label(format!("did you mean `{n}`?"))
                                .hint(format!("did you mean `{n}`? steps: {}", same_side.join(", "))),
                            None => d.label("unknown step").hint(format!("steps: {}", same_side.join(", "))),
                        }
                    };
                    out.push(d);
                }
            }
            retry_and_timeout(node, out);
            if let Some(w) = node.get("with") {
                retry_and_timeout(w, out);
            }
            // concurrency without for_each
            if s.concurrency.is_some() && s.for_each.is_none() {
                let sp = node.key_span("concurrency").unwrap_or(node.span);
                out.push(
                    Diagnostic::new(Code::UselessConcurrency, sp, "`concurrency` has no effect without `for_each`")
                        .hint("remove it, or add `for_each`"),
                );
            }
            // templates
            let mut reads: BTreeSet<String> = BTreeSet::new();
            let with_place =
                Place { step: Some(s), on_failure: *on_failure, item: s.for_each.is_some(), trigger_setting: false };
            let step_place = Place { item: false, ..with_place };
            if let Some(w) = node.get("with") {
                let kind = self.registry.get(&s.uses);
                let exprs = kind.map_or(&[][..], |k| k.expression_fields());
                for (k, v) in w.entries() {
                    match v.as_str() {
                        Some(e) if exprs.contains(&k.name.as_str()) => {
                            self.condition(e, v, with_place, p, &mut reads, &mut vars_read, out)
                        }
                        _ => self.templates_in(v, with_place, p, &mut reads, &mut vars_read, out),
                    }
                }
                if let Some(kind) = kind {
                    kind.check(w, out);
                }
            }
            if let (Some(Condition::Expr(e)), Some(n)) = (&s.condition, node.get("if")) {
                self.condition(e, n, step_place, p, &mut reads, &mut vars_read, out);
            }
            if let (Some(ForEach::Template(t)), Some(n)) = (&s.for_each, node.get("for_each")) {
                if template::whole_expression(t).is_none() {
                    out.push(
                        Diagnostic::new(
                            Code::WrongType,
                            n.span,
                            "`for_each` must be a list, or a template that is exactly one `{{ expression }}`",
                        )
                        .hint("write e.g. `for_each: \"{{ steps.fetch.output.body.items }}\"`"),
                    );
                } else {
                    self.template(t, n, step_place, p, &mut reads, &mut vars_read, out);
                }
            }
            if let (Some(ForEach::List(items)), Some(n)) = (&s.for_each, node.get("for_each")) {
                if items.len() > 10_000 {
                    out.push(Diagnostic::new(
                        Code::BadLength,
                        n.span,
                        format!("`for_each` has {} items; at most 10000 are allowed", items.len()),
                    ));
                }
            }
            c.reads.insert(s.id.clone(), reads);
        }
        if let Some(d) = root.get("defaults") {
            retry_and_timeout(d, &mut c.diags);
        }
        let out = &mut c.diags;
        // Unused vars.
        if let Some(vars) = root.get("vars") {
            for (k, _) in vars.entries() {
                if !vars_read.contains(&k.name) {
                    out.push(
                        Diagnostic::new(Code::UnusedVar, k.span, format!("the var `{}` is never read", k.name))
                            .hint(format!("remove it, or read it in a template as `{{{{ vars.{} }}}}`", k.name)),
                    );
                }
            }
        }
        // Cycles over needs and reads.
        let deps = dependencies(p, &c.reads);
        if let Some(cycle) = find_cycle(&p.steps, &deps).or_else(|| find_cycle(&p.on_failure, &deps)) {
            let node = all.iter().find(|(s, _, _)| s.id == cycle[0]).map(|(_, n, _)| *n);
            let sp = node.and_then(|n| n.get("id")).map_or(root.span, |n| n.span);
            let shown = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" -> ");
            c.diags.push(
                Diagnostic::new(Code::Cycle, sp, format!("steps depend on each other in a cycle: {shown}"))
                    .label("part of a cycle")
                    .hint("a step depends on the steps in its `needs` and on every step its templates read; remove one of these links"),
            );
        }
    }

    /// Checks the triggers; answers the vars their settings read.
    fn triggers(&self, p: &Pipeline, root: &Node, c: &mut Checked) -> BTreeSet<String> {
        let mut paths_seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut manual_seen = false;
        let mut vars_read = BTreeSet::new();
        let mut reads = BTreeSet::new();
        let place = Place { step: None, on_failure: false, item: false, trigger_setting: true };
        let nodes = root.get("triggers").map_or(&[][..], Node::as_seq);
        for tn in nodes.iter().take(MAX_TRIGGERS) {
            // Each trigger on its own, so one malformed trigger does not hide the others' checks.
            let Ok(t) = serde_json::from_value::<Trigger>(tn.to_json()) else { continue };
            let t = &t;
            let inner = tn.get(t.kind()).unwrap_or(tn);
            match t {
                Trigger::Webhook(w) => {
                    let sp = inner.get("path").map_or(inner.span, |n| n.span);
                    if !paths_seen.insert(w.path.clone()) {
                        c.diags.push(
                            Diagnostic::new(
                                Code::DuplicateWebhookPath,
                                sp,
                                format!("the webhook path `{}` is used twice in this pipeline", w.path),
                            )
                            .hint("keep one webhook trigger per path"),
                        );
                    } else {
                        c.webhook_paths.push((w.path.clone(), sp));
                    }
                    match (&w.verify, inner.get("verify")) {
                        (None, _) => c.diags.push(
                            Diagnostic::new(
                                Code::UnverifiedWebhook,
                                tn.key_span("webhook").unwrap_or(tn.span),
                                format!("the webhook `{}` accepts unsigned requests from anyone", w.path),
                            )
                            .hint("add `verify: { scheme: standard-webhooks, secret: \"{{ secrets.NAME }}\" }`"),
                        ),
                        (Some(v), Some(vn)) => {
                            if let Some(sn) = vn.get("secret") {
                                self.template(&v.secret, sn, place, p, &mut reads, &mut vars_read, &mut c.diags);
                            }
                        }
                        _ => {}
                    }
                }
                Trigger::Schedule(s) => {
                    if let Some(n) = inner.get("cron") {
                        if let Err(msg) = check_cron(&s.cron) {
                            c.diags.push(
                                Diagnostic::new(Code::BadCron, n.span, format!("invalid cron expression `{}`: {msg}", s.cron))
                                    .label("invalid cron")
                                    .hint("use 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, e.g. `*/15 * * * *`"),
                            );
                        }
                    }
                    if let (Some(tz), Some(n)) = (&s.timezone, inner.get("timezone")) {
                        if tz.parse::<chrono_tz::Tz>().is_err() {
                            // Suggest a region for an abbreviation (never another abbreviation with another
                            // offset, as `PST` -> `EST` would be), else the nearest region name.
                            let names = chrono_tz::TZ_VARIANTS
                                .iter()
                                .map(|t| t.name())
                                .filter(|n| n.contains('/') || *n == "UTC");
                            let guess = zone_for_abbreviation(tz).or_else(|| suggest(tz, names));
                            let d =
                                Diagnostic::new(Code::BadTimezone, n.span, format!("`{tz}` is not an IANA time zone"));
                            c.diags.push(match guess {
                                Some(s) => d.label(format!("did you mean `{s}`?")).hint(format!(
                                    "did you mean `{s}`? use an IANA name such as `Europe/Berlin` or `UTC`"
                                )),
                                None => d
                                    .label("unknown time zone")
                                    .hint("use an IANA name such as `Europe/Berlin`, `America/New_York` or `UTC`"),
                            });
                        }
                    }
                }
                Trigger::Manual(_) => {
                    if manual_seen {
                        c.diags.push(
                            Diagnostic::new(
                                Code::DuplicateTrigger,
                                tn.span,
                                "a pipeline has at most one `manual` trigger",
                            )
                            .hint("remove this one"),
                        );
                    }
                    manual_seen = true;
                }
                Trigger::Event(_) => {}
            }
        }
        vars_read
    }

    /// Every template string of a `with` tree.
    #[allow(clippy::too_many_arguments)]
    fn templates_in(
        &self,
        n: &Node,
        place: Place<'_>,
        p: &Pipeline,
        reads: &mut BTreeSet<String>,
        vars_read: &mut BTreeSet<String>,
        out: &mut Vec<Diagnostic>,
    ) {
        match &n.value {
            Value::Str(s) => self.template(s, n, place, p, reads, vars_read, out),
            Value::Seq(items) => items.iter().for_each(|i| self.templates_in(i, place, p, reads, vars_read, out)),
            Value::Map(entries) => {
                entries.iter().for_each(|(_, v)| self.templates_in(v, place, p, reads, vars_read, out))
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn condition(
        &self,
        src: &str,
        n: &Node,
        place: Place<'_>,
        p: &Pipeline,
        reads: &mut BTreeSet<String>,
        vars_read: &mut BTreeSet<String>,
        out: &mut Vec<Diagnostic>,
    ) {
        if template::has_template(src) {
            match template::whole_expression(src) {
                Some(_) => self.template(src, n, place, p, reads, vars_read, out),
                None => out.push(
                    Diagnostic::new(Code::TemplateSyntax, n.span, "an `if:` condition must be one expression")
                        .hint("write the expression alone, e.g. `if: \"steps.shape.output.plan == 'PRO'\"`"),
                ),
            }
            return;
        }
        self.analyzed(template::analyze(src, true), 0, n, place, p, reads, vars_read, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn template(
        &self,
        src: &str,
        n: &Node,
        place: Place<'_>,
        p: &Pipeline,
        reads: &mut BTreeSet<String>,
        vars_read: &mut BTreeSet<String>,
        out: &mut Vec<Diagnostic>,
    ) {
        if !template::has_template(src) {
            return;
        }
        self.analyzed(template::analyze(src, false), 0, n, place, p, reads, vars_read, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn analyzed(
        &self,
        a: Result<template::Analysis, template::SyntaxError>,
        shift: usize,
        n: &Node,
        place: Place<'_>,
        p: &Pipeline,
        reads: &mut BTreeSet<String>,
        vars_read: &mut BTreeSet<String>,
        out: &mut Vec<Diagnostic>,
    ) {
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                let sp = n.str_span(shift + e.offset, e.len);
                out.push(match e.kind {
                    template::SyntaxKind::Invalid => Diagnostic::new(Code::TemplateSyntax, sp, format!("template syntax error: {}", e.message))
                        .label("here")
                        .hint("templates use minijinja syntax: `{{ expression }}`, `{% if ... %}...{% endif %}`"),
                    template::SyntaxKind::Statement => Diagnostic::new(Code::UnsupportedStatement, sp, format!("this statement is not allowed in pipeline templates ({})", e.message))
                        .label("not allowed")
                        .hint("pipeline templates have no `include`, `import`, `extends`, `macro` or `block`: they cannot read files"),
                    template::SyntaxKind::TooComplex => Diagnostic::new(Code::TemplateTooComplex, sp, "this template expression is too long to evaluate safely")
                        .label("too complex")
                        .hint(e.message),
                });
                return;
            }
        };
        for (what, off, len) in &a.unsupported {
            out.push(Diagnostic::new(
                Code::UnsupportedStatement,
                n.str_span(shift + off, *len),
                format!("`{what}` statements are not allowed in pipeline templates"),
            ));
        }
        for m in &a.methods {
            let sp = n.str_span(shift + m.offset, m.len);
            let d = Diagnostic::new(
                Code::MethodCall,
                sp,
                format!("method calls such as `.{}()` are not available in templates", m.name),
            )
            .label("method call");
            let instead = METHODS.iter().find(|(name, _)| *name == m.name).map(|(_, how)| *how);
            out.push(match instead {
                Some(how) => d.hint(format!("write {how}")),
                None if KNOWN_FILTERS.contains(&m.name.as_str()) => {
                    d.hint(format!("use the filter instead: `value | {}(...)`", m.name))
                }
                None => {
                    d.hint("use a filter instead (`value | filter(args)`); the filters are listed in docs/templates.md")
                }
            });
        }
        for call in &a.calls {
            if out.len() >= MAX_DIAGNOSTICS {
                return;
            }
            if self.renderer.knows(call.kind, &call.name) {
                continue;
            }
            let (code, noun, known): (Code, &str, &[&str]) = match call.kind {
                CallKind::Filter => (Code::UnknownFilter, "filter", KNOWN_FILTERS),
                CallKind::Test => (Code::UnknownTest, "test", KNOWN_TESTS),
                CallKind::Function => (Code::UnknownFunction, "function", KNOWN_FUNCTIONS),
            };
            let d = Diagnostic::new(
                code,
                n.str_span(shift + call.offset, call.len),
                format!("unknown {noun} `{}`", call.name),
            );
            let alias = ALIASES.iter().find(|(from, _, _)| *from == call.name);
            out.push(match (alias, suggest(&call.name, known.iter().copied())) {
                (Some((_, to, how)), _) => {
                    d.label(format!("use `{to}`")).hint(format!("Sluice's equivalent is `{to}`: {how}"))
                }
                (None, Some(s)) => {
                    d.label(format!("did you mean `{s}`?")).hint(format!("did you mean `{s}`? see docs/templates.md"))
                }
                (None, None) => d.label(format!("unknown {noun}")).hint(format!("known {noun}s: {}", known.join(", "))),
            });
        }
        for r in &a.refs {
            if out.len() >= MAX_DIAGNOSTICS {
                return;
            }
            let sp = n.str_span(shift + r.offset, r.len);
            if let Some(d) = self.reference(r, sp, place, p, reads, vars_read) {
                out.push(d);
            }
        }
    }

    fn reference(
        &self,
        r: &template::Ref,
        sp: Span,
        place: Place<'_>,
        p: &Pipeline,
        reads: &mut BTreeSet<String>,
        vars_read: &mut BTreeSet<String>,
    ) -> Option<Diagnostic> {
        let field = |allowed: &[&str], what: &str| -> Option<Diagnostic> {
            let f = r.path.first()?;
            if allowed.contains(&f.as_str()) {
                return None;
            }
            let d = Diagnostic::new(Code::UnknownRoot, sp, format!("`{}` has no field `{f}`", what));
            Some(match suggest(f, allowed.iter().copied()) {
                Some(s) => d
                    .label(format!("did you mean `{s}`?"))
                    .hint(format!("did you mean `{what}.{s}`? fields: {}", one_of(allowed))),
                None => d.label("unknown field").hint(format!("fields: {}", one_of(allowed))),
            })
        };
        if place.trigger_setting && !["secrets", "vars"].contains(&r.root.as_str()) {
            return Some(
                Diagnostic::new(Code::UnknownRoot, sp, format!("`{}` is not in scope in a trigger's settings", r.root))
                    .hint("trigger settings may read only `secrets` and `vars`"),
            );
        }
        match r.root.as_str() {
            "trigger" => field(TRIGGER_FIELDS, "trigger"),
            "run" => field(RUN_FIELDS, "run"),
            "secrets" => None,
            "vars" => {
                let Some(name) = r.path.first() else {
                    // `vars` as a whole (e.g. `vars | tojson`) reads every var.
                    vars_read.extend(p.vars.keys().cloned());
                    return None;
                };
                vars_read.insert(name.clone());
                if p.vars.contains_key(name) {
                    return None;
                }
                let d = Diagnostic::new(Code::UnknownVar, sp, format!("`vars.{name}` is not defined"));
                Some(match suggest(name, p.vars.keys().map(String::as_str)) {
                    Some(s) => d.label(format!("did you mean `vars.{s}`?")).hint(format!("did you mean `vars.{s}`?")),
                    None => d.label("undefined var").hint(format!(
                        "define it under `vars:` at the top of the pipeline, e.g. `vars: {{ {name}: ... }}`"
                    )),
                })
            }
            "steps" => {
                let Some(target) = r.path.first() else {
                    // `steps` as a whole, or read with a computed key: it may read any step declared before
                    // this one (on its side of `on_failure`), and so waits for all of them.
                    let side = if place.on_failure { &p.on_failure } else { &p.steps };
                    if let Some(me) = place.step {
                        for s in side.iter().take_while(|s| s.id != me.id) {
                            reads.insert(s.id.clone());
                        }
                    }
                    return None;
                };
                let in_main = p.steps.iter().any(|s| &s.id == target);
                let in_fail = p.on_failure.iter().any(|s| &s.id == target);
                if !in_main && !in_fail {
                    let ids: Vec<&str> = p.steps.iter().chain(p.on_failure.iter()).map(|s| s.id.as_str()).collect();
                    let d = Diagnostic::new(
                        Code::UnknownStepRef,
                        sp,
                        format!("`steps.{target}` reads a step that does not exist"),
                    );
                    return Some(match suggest(target, ids.iter().copied()) {
                        Some(s) => {
                            d.label(format!("did you mean `steps.{s}`?")).hint(format!("did you mean `steps.{s}`?"))
                        }
                        None => d.label("unknown step").hint(format!("steps: {}", ids.join(", "))),
                    });
                }
                if place.step.is_some_and(|me| &me.id == target) {
                    return Some(
                        Diagnostic::new(Code::NotAncestor, sp, format!("the step `{target}` reads its own result"))
                            .hint("a step's templates can read only steps that finished before it"),
                    );
                }
                if in_fail && !place.on_failure {
                    return Some(
                        Diagnostic::new(
                            Code::NotAncestor,
                            sp,
                            format!("`steps.{target}` is an `on_failure` step, which runs only after the run failed"),
                        )
                        .hint("main steps can read only other main steps"),
                    );
                }
                // on_failure steps read main steps as they were when the run failed; that is no dependency.
                if !(place.on_failure && in_main) {
                    reads.insert(target.clone());
                }
                if let Some(f) = r.path.get(1) {
                    if !STEP_FIELDS.contains(&f.as_str()) {
                        let d =
                            Diagnostic::new(Code::UnknownStepRef, sp, format!("`steps.{target}` has no field `{f}`"));
                        return Some(match suggest(f, STEP_FIELDS.iter().copied()) {
                            Some(s) => d
                                .label(format!("did you mean `{s}`?"))
                                .hint(format!("did you mean `steps.{target}.{s}`? fields: {}", one_of(STEP_FIELDS))),
                            None => d.label("unknown field").hint(format!("fields: {}", one_of(STEP_FIELDS))),
                        });
                    }
                }
                None
            }
            "item" | "index" => {
                if place.item {
                    return None;
                }
                let has_for_each = place.step.is_some_and(|s| s.for_each.is_some());
                Some(
                    Diagnostic::new(
                        Code::ItemOutsideForEach,
                        sp,
                        format!("`{}` is only in scope in the `with` of a step with `for_each`", r.root),
                    )
                    .hint(if has_for_each {
                        "`if` and `for_each` are evaluated once for the whole step, before the items exist; use `item` in `with`, or filter the list in `for_each`, e.g. `{{ list | select('odd') }}`"
                    } else {
                        "add `for_each:` to this step, or read the value another way"
                    }),
                )
            }
            "error" => {
                if !place.on_failure {
                    return Some(
                        Diagnostic::new(
                            Code::ErrorOutsideOnFailure,
                            sp,
                            "`error` is only in scope in `on_failure` steps",
                        )
                        .hint("move this step under `on_failure:`"),
                    );
                }
                field(ERROR_FIELDS, "error")
            }
            other => {
                let d =
                    Diagnostic::new(Code::UnknownRoot, sp, format!("`{other}` is not a variable templates can read"));
                let hint = match other {
                    "env" => "templates cannot read the process environment; store the value as a tenant secret and read `secrets.NAME`".to_string(),
                    "secret" | "var" | "step" | "input" | "inputs" | "outputs" | "payload" | "body" => match suggest(other, ROOTS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? in scope: {}", one_of(ROOTS)),
                        None => format!("in scope: {}", one_of(ROOTS)),
                    },
                    _ => match suggest(other, ROOTS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? in scope: {}", one_of(ROOTS)),
                        None => format!("in scope: {}", one_of(ROOTS)),
                    },
                };
                Some(d.label("not in scope").hint(hint))
            }
        }
    }
}

/// Built-in filter, test and function names, for "did you mean" and the list in hints.
pub const KNOWN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "b64decode",
    "b64encode",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "datetime",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "fromjson",
    "groupby",
    "hmac_sha256",
    "indent",
    "int",
    "items",
    "join",
    "jsonpath",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "now",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "sha256",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "uuid",
    "zip",
];
pub const KNOWN_TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "even",
    "false",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "true",
    "undefined",
];
pub const KNOWN_FUNCTIONS: &[&str] = &["dict", "namespace", "now", "range", "uuid"];

/// Most diagnostics reported for one file; past this, the rest is noise.
pub const MAX_DIAGNOSTICS: usize = 200;
/// Triggers a pipeline may have (the schema says so too); more are not checked one by one.
pub const MAX_TRIGGERS: usize = 50;

/// Names from Jinja2, Ansible and other template languages, with Sluice's equivalent.
const ALIASES: &[(&str, &str, &str)] = &[
    ("strftime", "datetime", "`value | datetime('%Y-%m-%d')`, or `now('%Y-%m-%d')`"),
    ("to_json", "tojson", "`value | tojson`"),
    ("from_json", "fromjson", "`text | fromjson`"),
    ("json_query", "jsonpath", "`value | jsonpath('$.items[*].id')`"),
    ("json_path", "jsonpath", "`value | jsonpath('$.items[*].id')`"),
    ("b64_encode", "b64encode", "`value | b64encode`"),
    ("base64", "b64encode", "`value | b64encode`"),
    ("b64_decode", "b64decode", "`text | b64decode`"),
    ("hash", "sha256", "`value | sha256`"),
    ("hmac", "hmac_sha256", "`value | hmac_sha256(key)`"),
    ("url_encode", "urlencode", "`value | urlencode`"),
    ("quote", "urlencode", "`value | urlencode`"),
    ("strip", "trim", "`value | trim`"),
    ("len", "length", "`value | length`"),
    ("keys", "items", "`value | items` (pairs of key and value), or `value | dictsort`"),
    ("to_datetime", "datetime", "`value | datetime` (RFC 3339 text or a unix timestamp)"),
    ("uuid4", "uuid", "`uuid()`"),
];

/// Python-style methods, with the filter or test that does the same.
const METHODS: &[(&str, &str)] = &[
    ("strip", "`value | trim`"),
    ("lower", "`value | lower`"),
    ("upper", "`value | upper`"),
    ("split", "`value | split(' ')`"),
    ("replace", "`value | replace('a', 'b')`"),
    ("join", "`list | join(',')`"),
    ("items", "`mapping | items`"),
    ("keys", "`mapping | list` (the keys), or `mapping | dictsort`"),
    ("values", "`mapping | items | map(attribute=1) | list`"),
    ("get", "`mapping['key'] | default(none)`"),
    ("startswith", "`value is startingwith('prefix')`"),
    ("endswith", "`value is endingwith('suffix')`"),
    ("format", "`'%s-%s' | format(a, b)`"),
    ("title", "`value | title`"),
    ("capitalize", "`value | capitalize`"),
    ("count", "`value | length`"),
];

/// Checks a cron expression: 5 fields, or 6 with seconds first (or a `@daily`-style nickname).
pub fn check_cron(expr: &str) -> Result<(), String> {
    const CRON_FIELDS: [(&str, &str); 6] = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31, `L` or `W`"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday)"),
    ];
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let nickname = expr.trim().starts_with('@');
    if !nickname && parts.len() != 5 && parts.len() != 6 {
        return Err(format!("it has {} fields; a cron expression has 5, or 6 with seconds first", parts.len()));
    }
    let cron = match expr.parse::<croner::Cron>() {
        Ok(c) => c,
        Err(_) if nickname => {
            return Err(format!(
                "`{}` is not a known nickname; use @yearly, @monthly, @weekly, @daily or @hourly",
                expr.trim()
            ))
        }
        Err(_) => {
            // Name the fields at fault: each one that fails with every other field set to `*`.
            let offset = CRON_FIELDS.len() - parts.len();
            let bad: Vec<String> = (0..parts.len())
                .filter(|&i| {
                    let alone: Vec<&str> = (0..parts.len()).map(|j| if j == i { parts[j] } else { "*" }).collect();
                    alone.join(" ").parse::<croner::Cron>().is_err()
                })
                .map(|i| {
                    let (name, range) = CRON_FIELDS[offset + i];
                    format!("the {name} field `{}` (it takes {range})", parts[i])
                })
                .collect();
            return Err(match bad.len() {
                0 => "its fields do not fit together".to_string(),
                1 => format!("{} is not valid", bad[0]),
                _ => format!("{} are not valid", bad.join(" and ")),
            });
        }
    };
    // A valid expression that never fires (`0 0 31 2 *`) is a mistake too. Pure: a fixed start, no clock.
    let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    if cron.find_next_occurrence(&start, false).is_err() {
        return Err("it never fires (no date matches all its fields)".into());
    }
    Ok(())
}

/// Warns about `retry_on` classes that are never retried, and refuses zero timeouts, in `node`
/// (a step, `defaults`, or an http `with`).
fn retry_and_timeout(node: &Node, out: &mut Vec<Diagnostic>) {
    if let Some(list) = node.get("retry").and_then(|r| r.get("retry_on")) {
        for item in list.as_seq() {
            if let Some(cls @ ("template" | "config")) = item.as_str() {
                out.push(
                    Diagnostic::new(
                        Code::NeverRetried,
                        item.span,
                        format!("`{cls}` errors are never retried; listing them in `retry_on` has no effect"),
                    )
                    .hint("a template or configuration error fails the same way on every attempt; remove it"),
                );
            }
        }
    }
    if let Some(t) = node.get("timeout") {
        if t.as_str().and_then(model::Duration::parse).is_some_and(|d| d.as_millis() == 0) {
            out.push(
                Diagnostic::new(Code::BadDuration, t.span, "a timeout of zero would fail every attempt at once")
                    .label("zero")
                    .hint("give the attempt time to finish, e.g. `timeout: 30s`"),
            );
        }
    }
}

/// Whether `s` is a valid pipeline name.
fn regex_lite_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// For each step, the steps it waits for: its `needs` and the steps its templates read.
pub fn dependencies(p: &Pipeline, reads: &HashMap<String, BTreeSet<String>>) -> HashMap<String, BTreeSet<String>> {
    let mut deps = HashMap::new();
    for s in p.steps.iter().chain(p.on_failure.iter()) {
        let mut d: BTreeSet<String> = s.needs.iter().cloned().collect();
        if let Some(r) = reads.get(&s.id) {
            d.extend(r.iter().cloned());
        }
        deps.insert(s.id.clone(), d);
    }
    deps
}

/// A cycle among `steps`, as the list of ids along it.
fn find_cycle(steps: &[Step], deps: &HashMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: HashMap<&str, Mark> = steps.iter().map(|s| (s.id.as_str(), Mark::New)).collect();
    for s in steps {
        if mark.get(s.id.as_str()) != Some(&Mark::New) {
            continue;
        }
        // Iterative DFS: (node, its deps, next index).
        let mut stack: Vec<(&str, Vec<&str>, usize)> = Vec::new();
        stack.push((s.id.as_str(), Vec::new(), 0));
        if let Some(top) = stack.last_mut() {
            top.1 = deps.get(top.0).map(|d| d.iter().map(String::as_str).collect()).unwrap_or_default();
        }
        mark.insert(s.id.as_str(), Mark::Active);
        while let Some((node, children, idx)) = stack.last_mut() {
            if *idx < children.len() {
                let child = children[*idx];
                *idx += 1;
                match mark.get(child).copied() {
                    Some(Mark::New) => {
                        mark.insert(child, Mark::Active);
                        let cd: Vec<&str> =
                            deps.get(child).map(|d| d.iter().map(String::as_str).collect()).unwrap_or_default();
                        stack.push((child, cd, 0));
                    }
                    Some(Mark::Active) => {
                        let start = stack.iter().position(|(n, _, _)| *n == child).unwrap_or(0);
                        // The stack goes from dependant to dependency; show it in run order.
                        let mut cycle: Vec<String> = stack[start..].iter().map(|(n, _, _)| n.to_string()).collect();
                        cycle.reverse();
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                let n = *node;
                mark.insert(n, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

/// The parts of a malformed pipeline that are well-formed, field by field, for the meaning checks.
fn salvage(root: &Node) -> Pipeline {
    fn field<T: serde::de::DeserializeOwned>(n: &Node, key: &str) -> Option<T> {
        n.get(key).and_then(|v| serde_json::from_value(v.to_json()).ok())
    }
    fn list<T: serde::de::DeserializeOwned>(n: &Node, key: &str, one: impl Fn(&Node) -> Option<T>) -> Vec<T> {
        n.get(key).map(|l| l.as_seq().iter().filter_map(&one).collect()).unwrap_or_default()
    }
    let step = |n: &Node| -> Option<Step> {
        if let Ok(s) = serde_json::from_value::<Step>(n.to_json()) {
            return Some(s);
        }
        // Keep index alignment with the tree: a step without a usable id gets an impossible one.
        Some(Step {
            id: n.get("id").and_then(Node::as_str).map_or_else(|| " ".to_string(), str::to_string),
            description: None,
            uses: n.get("uses").and_then(Node::as_str).unwrap_or("").to_string(),
            with: field(n, "with"),
            needs: n
                .get("needs")
                .map(|l| l.as_seq().iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            condition: field(n, "if"),
            for_each: field(n, "for_each"),
            concurrency: field(n, "concurrency"),
            continue_on_error: field(n, "continue_on_error").unwrap_or(false),
            timeout: field(n, "timeout"),
            retry: field(n, "retry"),
        })
    };
    Pipeline {
        version: 1,
        name: field(root, "name").unwrap_or_default(),
        description: None,
        triggers: list(root, "triggers", |n| serde_json::from_value(n.to_json()).ok())
            .into_iter()
            .take(MAX_TRIGGERS)
            .collect(),
        vars: field(root, "vars").unwrap_or_default(),
        defaults: field(root, "defaults").unwrap_or_default(),
        steps: list(root, "steps", step).into_iter().take(model::MAX_STEPS).collect(),
        on_failure: list(root, "on_failure", step).into_iter().take(model::MAX_STEPS).collect(),
    }
}

fn steps_with_nodes<'a>(p: &'a Pipeline, root: &'a Node) -> Vec<(&'a Step, &'a Node, bool)> {
    let mut v = Vec::new();
    for (key, list, fail) in [("steps", &p.steps, false), ("on_failure", &p.on_failure, true)] {
        for (i, s) in list.iter().enumerate() {
            if let Some(n) = root.at(&[Seg::Key(key), Seg::Index(i)]) {
                v.push((s, n, fail));
            }
        }
    }
    v
}

fn finish(mut c: Checked, file: &str) -> Checked {
    for d in &mut c.diags {
        d.file = file.to_string();
    }
    diag::sort(&mut c.diags);
    c
}

fn first_pos() -> diag::Pos {
    diag::Pos { line: 1, col: 1, offset: 0 }
}

/// The pipeline name a file path implies: its stem, for `.yaml`, `.yml` and `.json` files.
pub fn file_stem(file: &str) -> Option<&str> {
    let base = file.rsplit(['/', '\\']).next()?;
    [".yaml", ".yml", ".json"].iter().find_map(|ext| base.strip_suffix(ext))
}

fn parent_dir(file: &str) -> String {
    match file.rfind(['/', '\\']) {
        Some(i) => file[..i].to_string(),
        None => String::new(),
    }
}

/// The IANA zone most people mean by a time zone abbreviation (abbreviations are ambiguous and ignore
/// daylight saving time, so a schedule should name a region).
fn zone_for_abbreviation(abbr: &str) -> Option<&'static str> {
    Some(match abbr.to_ascii_uppercase().as_str() {
        "PST" | "PDT" | "PT" => "America/Los_Angeles",
        "MST" | "MDT" | "MT" => "America/Denver",
        "CST" | "CDT" | "CT" => "America/Chicago",
        "EST" | "EDT" | "ET" => "America/New_York",
        "AKST" | "AKDT" => "America/Anchorage",
        "HST" => "Pacific/Honolulu",
        "BST" | "WET" | "WEST" => "Europe/London",
        "CET" | "CEST" | "MEZ" | "MESZ" => "Europe/Berlin",
        "EET" | "EEST" => "Europe/Athens",
        "MSK" => "Europe/Moscow",
        "IST" => "Asia/Kolkata",
        "JST" => "Asia/Tokyo",
        "KST" => "Asia/Seoul",
        "SGT" => "Asia/Singapore",
        "AEST" | "AEDT" => "Australia/Sydney",
        "NZST" | "NZDT" => "Pacific/Auckland",
        "Z" | "UT" | "ZULU" => "UTC",
        _ => return None,
    })
}
