//! Secret redaction, the one place that decides what is secret.
//!
//! By key: env values whose keys match `[secrets] patterns` are shown as
//! [`HIDDEN`] wherever the plan, import or the journal show env ([`Redactor`]).
//!
//! By value: once a value is known to be secret it is scrubbed from *every* text the
//! tool writes (stdout, stderr, the journal, logs), whatever carried it there: PM2's
//! own error text echoing an env value, a parser's message, a lint snippet. Values
//! are learned as the desired state and the live state are read ([`learn_document`],
//! [`learn_process`]): env values of secret keys, passwords inside URLs
//! (`postgres://user:PASSWORD@host`), and values of secret-named flags in `args`
//! (`--password=X`, `--api-token X`). [`scrub`] replaces them all in one pass (an
//! Aho-Corasick automaton), and also hides any URL password and `--secret-flag=value`
//! it meets, known or not. Values shorter than [`MIN_SCRUBBED_CHARS`] are hidden by
//! key only: scrubbing `abc` from every line would garble the output without hiding
//! anything worth hiding.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

/// What a redacted value is shown as.
pub const HIDDEN: &str = "(sensitive)";
/// What a changed secret is shown as.
pub const CHANGED: &str = "(sensitive value changed)";
/// Known secret values shorter than this are not scrubbed from free text.
pub const MIN_SCRUBBED_CHARS: usize = 6;

/// The default `[secrets] patterns`.
pub const DEFAULT_PATTERNS: &[&str] =
    &["*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*PASS", "*PASSPHRASE*", "*KEY*", "*CREDENTIAL*", "*PRIVATE*"];

/// Case-insensitive `*` glob patterns on env keys.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<String>,
}

impl Redactor {
    /// From `[secrets] patterns` (e.g. `*TOKEN*`). Also makes them the patterns that
    /// values are learned by ([`learn_document`]) for the rest of the run.
    pub fn new(patterns: &[String]) -> Self {
        let redactor = Self::quiet(patterns);
        if let Ok(mut state) = STATE.write() {
            state.patterns = redactor.clone();
        }
        redactor
    }

    fn quiet(patterns: &[String]) -> Self {
        Self { patterns: patterns.iter().map(|p| p.to_ascii_uppercase()).collect() }
    }

    /// Whether the env key names a secret.
    pub fn is_secret(&self, key: &str) -> bool {
        let key = key.to_ascii_uppercase();
        self.patterns.iter().any(|p| glob(p, &key))
    }

    /// Whether a command-line flag (`--db-password`, `-api_key`) names a secret.
    fn is_secret_flag(&self, flag: &str) -> bool {
        let name = flag.trim_start_matches('-');
        !name.is_empty() && flag.starts_with('-') && self.is_secret(&name.replace('-', "_"))
    }
}

/// The values learned so far, and the automaton that finds them.
struct State {
    patterns: Redactor,
    values: Vec<String>,
    /// Built on the first scrub after a value was learned (not once per value).
    finder: Option<Arc<AhoCorasick>>,
    stale: bool,
}

static STATE: std::sync::LazyLock<RwLock<State>> = std::sync::LazyLock::new(|| {
    RwLock::new(State {
        patterns: Redactor::quiet(&DEFAULT_PATTERNS.iter().map(|p| (*p).to_string()).collect::<Vec<_>>()),
        values: Vec::new(),
        finder: None,
        stale: false,
    })
});

fn patterns() -> Redactor {
    STATE.read().map(|s| s.patterns.clone()).unwrap_or_else(|_| Redactor::quiet(&[]))
}

/// Registers a secret value (and the escaped forms it takes in JSON and in Node's
/// error messages) so that [`scrub`] hides it from then on.
pub fn learn(value: &str) {
    let mut forms = vec![value.to_string()];
    // JSON text (the journal, --format json) and Node's inspect (`'\x00'`).
    let json = serde_json::to_string(value).unwrap_or_default();
    forms.push(json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_string());
    forms.push(value.chars().map(|c| if c.is_control() { format!("\\x{:02x}", c as u32) } else { c.to_string() }).collect());
    // The printable runs between control characters, which an echo may show alone.
    forms.extend(value.split(char::is_control).map(String::from));
    forms.retain(|form| form.chars().count() >= MIN_SCRUBBED_CHARS);
    if forms.is_empty() {
        return;
    }
    let Ok(mut state) = STATE.write() else { return };
    for form in forms {
        if !state.values.contains(&form) {
            state.values.push(form);
            state.stale = true;
        }
    }
}

/// The automaton over every value learned so far (rebuilt only when one was added).
fn finder() -> Option<Arc<AhoCorasick>> {
    if let Ok(state) = STATE.read()
        && !state.stale
    {
        return state.finder.clone();
    }
    let mut state = STATE.write().ok()?;
    if state.stale {
        state.finder = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&state.values).ok().map(Arc::new);
        state.stale = false;
    }
    state.finder.clone()
}

/// Learns the secrets of one env entry: the value of a secret key, a URL password.
pub fn learn_env(key: &str, value: &Value) {
    learn_env_with(&patterns(), key, value);
}

fn learn_env_with(redactor: &Redactor, key: &str, value: &Value) {
    let text = match value {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        _ => return,
    };
    if redactor.is_secret(key) {
        learn(&text);
    }
    learn_text_with(redactor, &text);
}

/// Learns the passwords of URLs in `text` and secret-flag values (`--token=X`).
pub fn learn_text(text: &str) {
    learn_text_with(&patterns(), text);
}

fn learn_text_with(redactor: &Redactor, text: &str) {
    // Most values hold neither; two byte scans say so without allocating.
    if !text.contains("://") && !text.contains('-') {
        return;
    }
    for password in url_passwords(text) {
        learn(password);
    }
    for (flag, value) in flag_values(text) {
        if redactor.is_secret_flag(flag) {
            learn(value);
        }
    }
}

/// Learns from `args` as PM2 takes them (a string or a list): `--password=X`,
/// `--password X`, URL passwords.
pub fn learn_args(args: &[String]) {
    let redactor = patterns();
    for pair in args.windows(2) {
        if redactor.is_secret_flag(&pair[0]) && !pair[0].contains('=') && !pair[1].starts_with('-') {
            learn(&pair[1]);
        }
    }
    for arg in args {
        learn_text(arg);
    }
}

/// Learns every secret in an ecosystem document: env maps (`env`, `env_<name>`, at
/// any depth), `args`, and URL passwords in any string.
pub fn learn_document(document: &Value) {
    match document {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(_) | Value::Number(_) => learn_env(key, value),
                    Value::Array(items) if key == "args" || key == "node_args" => {
                        let args: Vec<String> = items.iter().filter_map(|v| v.as_str().map(String::from)).collect();
                        learn_args(&args);
                        learn_document(value);
                    }
                    _ => learn_document(value),
                }
                if (key == "args" || key == "node_args")
                    && let Value::String(line) = value
                {
                    learn_args(&line.split_whitespace().map(String::from).collect::<Vec<_>>());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(learn_document),
        Value::String(text) => learn_text(text),
        _ => {}
    }
}

/// Learns the secrets a live process carries (the env it set, its args).
pub fn learn_process(process: &crate::live::LiveProcess) {
    let redactor = patterns();
    for (key, value) in &process.env_set {
        learn_env_with(&redactor, key, value);
    }
    if !process.args.is_empty() {
        learn_args(&process.args);
    }
}

/// `text` with every known secret value, every URL password and every value of a
/// secret-named `--flag=value` replaced by [`HIDDEN`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let finder = finder();
    let redactor = patterns();
    let mut out = Cow::Borrowed(text);
    if let Some(finder) = finder
        && finder.is_match(text)
    {
        out = Cow::Owned(finder.replace_all(text, &vec![HIDDEN; finder.patterns_len()]));
    }
    // Passwords in URLs and secret flags, known or not.
    let mut spans: Vec<(usize, usize)> = url_passwords(&out).map(|p| offset_in(&out, p)).collect();
    spans.extend(flag_values(&out).filter(|(flag, _)| redactor.is_secret_flag(flag)).map(|(_, v)| offset_in(&out, v)));
    spans.retain(|&(start, end)| end > start && out.get(start..end) != Some(HIDDEN));
    if spans.is_empty() {
        return out;
    }
    spans.sort_unstable();
    let mut result = String::with_capacity(out.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        result.push_str(&out[at..start]);
        result.push_str(HIDDEN);
        at = end;
    }
    result.push_str(&out[at..]);
    Cow::Owned(result)
}

/// A source line with the value of a secret key hidden (`DB_PASSWORD: "x"`,
/// `"API_TOKEN": "x",`, `SECRET = 'x'`), for snippets of files that may not even
/// parse, and then [`scrub`]bed.
pub fn scrub_source_line(line: &str) -> Cow<'_, str> {
    let redactor = patterns();
    let trimmed = line.trim_start();
    let key_end = trimmed.find([':', '=']).unwrap_or(0);
    let key = trimmed[..key_end].trim().trim_start_matches('-').trim().trim_matches(['"', '\'', '`']);
    if key_end > 0 && !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') && redactor.is_secret(key) {
        let cut = line.len() - trimmed.len() + key_end + 1;
        let rest = &line[cut..];
        let tail = if rest.trim_end().ends_with(',') { "," } else { "" };
        return Cow::Owned(format!("{} {HIDDEN}{tail}", &line[..cut]));
    }
    scrub(line)
}

/// Byte offsets of `part` (a sub-slice of `whole`) in `whole`.
fn offset_in(whole: &str, part: &str) -> (usize, usize) {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    (start, start + part.len())
}

/// The password parts of `scheme://user:password@host` URLs in `text`.
fn url_passwords(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("://").filter_map(move |(at, _)| {
        let rest = &text[at + 3..];
        let authority_end = rest.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\'').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let userinfo = &authority[..authority.rfind('@')?];
        let password = &userinfo[userinfo.find(':')? + 1..];
        (!password.is_empty()).then_some(password)
    })
}

/// `(flag, value)` of every `--flag=value` (or `-flag=value`) in `text`.
fn flag_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.match_indices('-').filter_map(move |(at, _)| {
        let starts_word = at == 0 || text[..at].ends_with(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '[' || c == ',');
        if !starts_word {
            return None;
        }
        let rest = &text[at..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == ']').unwrap_or(rest.len());
        let (flag, value) = rest[..end].split_once('=')?;
        (!value.is_empty()).then_some((flag, value))
    })
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(after) = rest.strip_prefix(part) else { return false };
            rest = after;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(at) = rest.find(part) {
            rest = &rest[at + part.len()..];
        } else {
            return false;
        }
    }
    true
}

/// A writer that scrubs what goes through it (for the log output).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Redactor {
        Redactor::quiet(&DEFAULT_PATTERNS.iter().map(|p| (*p).to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn default_patterns_catch_the_usual_names() {
        let r = Redactor::quiet(&["*TOKEN*".into(), "*SECRET*".into(), "*PASSWORD*".into(), "*KEY*".into(), "DB_*".into()]);
        for key in ["GITHUB_TOKEN", "token", "client_secret", "DB_PASSWORD", "API_KEY", "db_url"] {
            assert!(r.is_secret(key), "{key}");
        }
        for key in ["PORT", "NODE_ENV", "MONKEY_BUSINESS_X"] {
            assert_eq!(r.is_secret(key), key.contains("KEY"), "{key}");
        }
        assert!(!r.is_secret("PATH"));
        let d = defaults();
        for key in ["DB_PASS", "SMTP_PASS", "MYSQL_PASSWD", "GPG_PASSPHRASE", "PRIVATE_KEY_PEM", "AWS_CREDENTIALS"] {
            assert!(d.is_secret(key), "{key}");
        }
        for key in ["PORT", "NODE_ENV", "DATABASE_URL", "PASSENGER_APP_ENV", "PWD"] {
            assert!(!d.is_secret(key), "{key}");
        }
        assert!(d.is_secret_flag("--db-password") && d.is_secret_flag("--api_token") && !d.is_secret_flag("--port"));
    }

    #[test]
    fn learned_values_are_scrubbed_in_every_form_they_take() {
        learn_env("DB_PASS", &Value::String("hunter2-longer\u{0}x".into()));
        learn_env("DATABASE_URL", &Value::String("postgres://app:pgS3cretpw@db:5432/app".into()));
        learn_args(&["--port".into(), "80".into(), "--api-token".into(), "tok-123456".into(), "--password=p4ssw0rd!".into()]);
        learn_env("SHORT_TOKEN", &Value::String("abc".into()));
        for (text, gone) in [
            ("Received 'hunter2-longer\\x00x'", "hunter2-longer"),
            ("{\"env\":{\"DB_PASS\":\"hunter2-longer\\u0000x\"}}", "hunter2"),
            ("error: could not connect with pgS3cretpw", "pgS3cretpw"),
            ("args: --api-token tok-123456", "tok-123456"),
            ("spawn app --password=p4ssw0rd! failed", "p4ssw0rd!"),
        ] {
            let out = scrub(text);
            assert!(!out.contains(gone) && out.contains(HIDDEN), "{text} -> {out}");
        }
        assert_eq!(scrub("abc is short, kept"), "abc is short, kept");
        assert_eq!(scrub("nothing here"), Cow::Borrowed("nothing here"));
        // Unknown URL passwords and secret flags are hidden as well.
        assert_eq!(scrub("redis://:unknownpw@cache:6379"), format!("redis://:{HIDDEN}@cache:6379"));
        assert_eq!(scrub("node app --secret=zz --port=80"), format!("node app --secret={HIDDEN} --port=80"));
    }

    #[test]
    fn source_lines_of_secret_keys_are_hidden_whether_or_not_the_file_parses() {
        for line in ["  API_TOKEN: 'abc',", "    \"DB_PASSWORD\": \"x\",", "SECRET = \"q\"", "  - DB_PASS: y"] {
            let out = scrub_source_line(line);
            assert!(out.contains(HIDDEN), "{line} -> {out}");
            assert!(!out.contains("abc") && !out.contains("\"x\"") && !out.contains("\"q\"") && !out.contains(": y"), "{out}");
        }
        assert_eq!(scrub_source_line("  PORT: 3000,"), "  PORT: 3000,");
    }
}
