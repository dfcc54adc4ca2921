//! Diagnostics: what a user did wrong, where, and how to fix it; the stable code table; rendering.
//!
//! Diagnostics are values, collected and sorted, never thrown. Rendering needs the source text and does no IO.

use serde::Serialize;
use std::fmt::Write as _;

/// A position in a source file: 1-based line and column (in characters), and the character offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
    pub offset: usize,
}

/// A range in a source file; `end` is exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    pub fn point(start: Pos) -> Span {
        Span { start, end: start }
    }
    /// A span of `len` characters starting `chars` characters after the start of this one (same line).
    pub fn sub(&self, chars: usize, len: usize) -> Span {
        let start =
            Pos { line: self.start.line, col: self.start.col + chars as u32, offset: self.start.offset + chars };
        let end = Pos { line: start.line, col: start.col + len as u32, offset: start.offset + len };
        Span { start, end }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $sev:ident, $title:literal;)*) => {
        /// Every diagnostic code. Codes are stable: never renumber, only add.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($name),* }
        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name),*];
            pub fn as_str(self) -> &'static str { match self { $(Code::$name => $code),* } }
            pub fn severity(self) -> Severity { match self { $(Code::$name => Severity::$sev),* } }
            /// One line saying what the code means, as in the documented table.
            pub fn title(self) -> &'static str { match self { $(Code::$name => $title),* } }
        }
    };
}

codes! {
    YamlSyntax = "S0001", Error, "the file is not well-formed YAML or JSON";
    FileTooLarge = "S0002", Error, "the file is larger than 1 MiB";
    TooDeep = "S0003", Error, "values are nested more than 64 levels deep";
    AliasBudget = "S0004", Error, "YAML aliases expand to too many values (\"billion laughs\")";
    UnquotedTemplate = "S0005", Error, "an unquoted `{{ ... }}` was read by YAML as a mapping";
    DuplicateKey = "S0006", Error, "the same key appears twice in one mapping";
    ComplexKey = "S0007", Error, "a mapping key is not a plain string";
    MultipleDocuments = "S0008", Error, "a file holds more than one YAML document";
    UnsupportedTag = "S0009", Error, "a YAML tag other than the core ones (`!!str`, `!!int`, ...)";
    UnknownField = "S1001", Error, "a key that the format does not define (typo?)";
    MissingField = "S1002", Error, "a required key is missing";
    WrongType = "S1003", Error, "a value has the wrong type";
    NotAllowed = "S1004", Error, "a value is not one of the allowed values";
    BadFormat = "S1005", Error, "a string does not have the required form (ids, names, ...)";
    OutOfRange = "S1006", Error, "a number is out of range";
    BadLength = "S1007", Error, "a list or mapping has too few or too many entries";
    BadDuration = "S1008", Error, "a duration is not like `500ms`, `30s`, `5m`, `1h`";
    DuplicateStepId = "S2001", Error, "two steps have the same id";
    UnknownNeed = "S2002", Error, "`needs` names a step that does not exist";
    Cycle = "S2003", Error, "steps depend on each other in a cycle";
    UnknownStepRef = "S2004", Error, "a template reads `steps.X` of a step that does not exist";
    NotAncestor = "S2005", Error, "a template reads a step that cannot have run before it";
    UnknownVar = "S2006", Error, "a template reads `vars.X` that `vars` does not define";
    ItemOutsideForEach = "S2007", Error, "`item` or `index` used in a step without `for_each`";
    ErrorOutsideOnFailure = "S2008", Error, "`error` used outside an `on_failure` step";
    UnknownRoot = "S2009", Error, "a template reads a variable that is not in scope";
    UnknownUses = "S2010", Error, "`uses` names a step kind that does not exist";
    NameMismatch = "S2011", Error, "the pipeline `name` differs from its file name";
    TooManySteps = "S2012", Error, "a pipeline has more than 500 steps";
    BadCron = "S2013", Error, "a schedule's `cron` expression is invalid";
    BadTimezone = "S2014", Error, "a schedule's `timezone` is not an IANA time zone";
    DuplicateWebhookPath = "S2015", Error, "two pipelines of one tenant listen on the same webhook path";
    BadWith = "S2016", Error, "a step's `with` is invalid for its kind";
    DuplicateTrigger = "S2017", Error, "a trigger kind that may appear once appears twice";
    DuplicatePipelineName = "S2018", Error, "two files of one tenant folder define the same pipeline name";
    TemplateSyntax = "S3001", Error, "a template does not parse";
    UnknownFilter = "S3002", Error, "a template uses a filter that does not exist";
    UnknownTest = "S3003", Error, "a template uses a test (`is ...`) that does not exist";
    UnknownFunction = "S3004", Error, "a template calls a function that does not exist";
    UnsupportedStatement = "S3005", Error, "a template uses a statement that pipelines do not allow";
    MethodCall = "S3006", Error, "a template calls a method (`x.split()`); use a filter";
    TemplateTooComplex = "S3007", Error, "one template expression is too long to evaluate safely";
    UnverifiedWebhook = "W4001", Warning, "a webhook trigger accepts unsigned requests";
    UnusedVar = "W4002", Warning, "a var is defined but never read";
    UselessConcurrency = "W4003", Warning, "`concurrency` is set on a step without `for_each`";
    RedundantNeed = "W4004", Warning, "a step lists the same entry in `needs` twice";
    NeverRetried = "W4005", Warning, "`retry_on` lists `template` or `config`, which are never retried";
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub span: Span,
    pub code: Code,
    pub message: String,
    /// Short text printed under the caret.
    pub label: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic { file: String::new(), span, code, message: message.into(), label: None, hint: None }
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
    /// The `--format json` shape of SPEC section 8.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.span.start.line,
            "column": self.span.start.col,
            "severity": self.severity(),
            "code": self.code.as_str(),
            "message": self.message,
            "hint": self.hint,
        })
    }
}

/// Sorts by file, then position, then code; drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (&a.file, a.span.start.line, a.span.start.col, a.code).cmp(&(
            &b.file,
            b.span.start.line,
            b.span.start.col,
            b.code,
        ))
    });
    diags.dedup();
}

/// Renders one diagnostic like rustc, headed by the `file:line:col: error[CODE]: message` line of SPEC section 8.
pub fn render(d: &Diagnostic, source: &str) -> String {
    let mut out = String::new();
    let sev = match d.severity() {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let _ = writeln!(
        out,
        "{}:{}:{}: {}[{}]: {}",
        d.file,
        d.span.start.line,
        d.span.start.col,
        sev,
        d.code.as_str(),
        d.message
    );
    if let Some(line) = source.lines().nth((d.span.start.line as usize).saturating_sub(1)) {
        let num = d.span.start.line.to_string();
        let pad = " ".repeat(num.len());
        let chars: Vec<char> = line.trim_end().chars().collect();
        let start = (d.span.start.col.max(1) - 1) as usize;
        let end = if d.span.end.line == d.span.start.line && d.span.end.col > d.span.start.col {
            (d.span.end.col - 1) as usize
        } else if d.span.end.line > d.span.start.line {
            // A value over several lines: underline the rest of its first line.
            chars.len().max(start + 1)
        } else {
            start + 1
        };
        // Long lines are shown as a window around the caret.
        const WIDTH: usize = 120;
        let from = if chars.len() > WIDTH && start > WIDTH / 2 { start - WIDTH / 2 } else { 0 };
        let to = chars.len().min(from + WIDTH);
        let shown: String = chars[from.min(chars.len())..to].iter().collect();
        let (lead_dots, tail_dots) = (if from > 0 { "..." } else { "" }, if to < chars.len() { "..." } else { "" });
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{num} | {lead_dots}{shown}{tail_dots}");
        let caret_at = start.saturating_sub(from) + lead_dots.len();
        let width = end.saturating_sub(start).clamp(1, (to + 1).saturating_sub(start).max(1));
        // Keep tabs so the caret lines up under them.
        let lead: String = (0..caret_at)
            .map(|i| {
                let src_i = i.checked_sub(lead_dots.len()).map(|j| j + from);
                if src_i.and_then(|j| chars.get(j)) == Some(&'\t') {
                    '\t'
                } else {
                    ' '
                }
            })
            .collect();
        let _ = write!(out, "{pad} | {lead}{}", "^".repeat(width));
        match &d.label {
            Some(l) => {
                let _ = writeln!(out, " {l}");
            }
            None => out.push('\n'),
        }
    }
    if let Some(h) = &d.hint {
        let pad = " ".repeat(d.span.start.line.to_string().len());
        let _ = writeln!(out, "{pad} = hint: {h}");
    }
    out
}

/// The "did you mean" of every name lookup: the closest candidate, if it is close enough.
pub fn suggest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(wrong)) {
        return Some(c);
    }
    for c in candidates {
        let score = strsim::jaro_winkler(wrong, c);
        let edits = strsim::levenshtein(wrong, c);
        // Close in spelling: a few edits for the length, or a long shared prefix.
        let close = edits <= (c.len().max(wrong.len()) / 3).max(1) || (score >= 0.9 && edits <= c.len() / 2);
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// `a`, `b` and `c`.
pub fn all_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} and {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// `a`, `b` or `c`: a list of names for messages.
pub fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}
