//! Secret redaction: env values whose keys match `[secrets] patterns` never appear in
//! any output, saved plan or journal. The one place that decides what is secret.

/// What a redacted value is shown as.
pub const HIDDEN: &str = "(sensitive)";
/// What a changed secret is shown as.
pub const CHANGED: &str = "(sensitive value changed)";

/// Case-insensitive `*` glob patterns on env keys.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<String>,
}

impl Redactor {
    /// From `[secrets] patterns` (e.g. `*TOKEN*`).
    pub fn new(patterns: &[String]) -> Self {
        Self { patterns: patterns.iter().map(|p| p.to_ascii_uppercase()).collect() }
    }

    /// Whether the env key names a secret.
    pub fn is_secret(&self, key: &str) -> bool {
        let key = key.to_ascii_uppercase();
        self.patterns.iter().any(|p| glob(p, &key))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_catch_the_usual_names() {
        let r = Redactor::new(&["*TOKEN*".into(), "*SECRET*".into(), "*PASSWORD*".into(), "*KEY*".into(), "DB_*".into()]);
        for key in ["GITHUB_TOKEN", "token", "client_secret", "DB_PASSWORD", "API_KEY", "db_url"] {
            assert!(r.is_secret(key), "{key}");
        }
        for key in ["PORT", "NODE_ENV", "MONKEY_BUSINESS_X"] {
            assert_eq!(r.is_secret(key), key.contains("KEY"), "{key}");
        }
        assert!(!r.is_secret("PATH"));
    }
}
