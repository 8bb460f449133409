//! `.json` ecosystem files. PM2 evaluates them as a JavaScript expression, so comments,
//! single quotes, unquoted keys and trailing commas are accepted here too; missing
//! commas and stray text are not.

use jsonc_parser::ast;
use jsonc_parser::{CollectOptions, ParseOptions};
use serde_json::{Map, Number, Value};

use crate::config::ecosystem::{DuplicateKey, LoadError, MAX_DEPTH, Parsed};
use crate::config::source::{SourceFile, pointer_segment};

/// Parses a JSON ecosystem file.
pub fn parse(source: &SourceFile) -> Result<Parsed, LoadError> {
    check_depth(source)?;
    let options = ParseOptions { allow_missing_commas: false, ..ParseOptions::default() };
    let result = jsonc_parser::parse_to_ast(&source.text, &CollectOptions::default(), &options).map_err(|err| {
        let at = source.location(err.range().start);
        LoadError::Syntax {
            path: source.path.clone(),
            line: at.line,
            column: at.column,
            format: "JSON",
            message: err.kind().to_string(),
        }
    })?;
    let mut parsed = Parsed::default();
    if let Some(root) = result.value {
        parsed.document = convert(&root, String::new(), source, &mut parsed);
    }
    Ok(parsed)
}

fn convert(node: &ast::Value<'_>, pointer: String, source: &SourceFile, parsed: &mut Parsed) -> Value {
    parsed.map.insert_value(pointer.clone(), source.location(node_start(node)));
    match node {
        ast::Value::StringLit(s) => Value::String(s.value.to_string()),
        ast::Value::NumberLit(n) => number(n.value),
        ast::Value::BooleanLit(b) => Value::Bool(b.value),
        ast::Value::NullKeyword(_) => Value::Null,
        ast::Value::Array(array) => Value::Array(
            array
                .elements
                .iter()
                .enumerate()
                .map(|(i, element)| convert(element, format!("{pointer}/{i}"), source, parsed))
                .collect(),
        ),
        ast::Value::Object(object) => {
            let mut map = Map::new();
            for property in &object.properties {
                let (name, start) = match &property.name {
                    ast::ObjectPropName::String(s) => (s.value.to_string(), s.range.start),
                    ast::ObjectPropName::Word(w) => (w.value.to_string(), w.range.start),
                };
                let child = format!("{pointer}/{}", pointer_segment(&name));
                let key_location = source.location(start);
                if map.contains_key(&name) {
                    if let Some(first) = parsed.map.locate(&child) {
                        parsed.duplicates.push(DuplicateKey { pointer: child.clone(), location: key_location, first });
                    }
                    // PM2 keeps the last value; so do we, but the finding stays.
                    map.remove(&name);
                }
                parsed.map.insert_key(child.clone(), key_location);
                let value = convert(&property.value, child, source, parsed);
                map.insert(name, value);
            }
            Value::Object(map)
        }
    }
}

fn node_start(node: &ast::Value<'_>) -> usize {
    match node {
        ast::Value::StringLit(v) => v.range.start,
        ast::Value::NumberLit(v) => v.range.start,
        ast::Value::BooleanLit(v) => v.range.start,
        ast::Value::NullKeyword(v) => v.range.start,
        ast::Value::Array(v) => v.range.start,
        ast::Value::Object(v) => v.range.start,
    }
}

/// JSON numbers, plus the JavaScript forms PM2's evaluation accepts (`0x1F`, `+1`, `.5`).
fn number(text: &str) -> Value {
    let trimmed = text.trim_start_matches('+');
    if let Ok(i) = trimmed.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = trimmed.parse::<u64>() {
        return Value::Number(u.into());
    }
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X"))
        && let Ok(v) = i64::from_str_radix(hex, 16) {
            return Value::Number((if negative { -v } else { v }).into());
        }
    trimmed
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or_else(|| Value::String(text.to_string()), Value::Number)
}

/// Refuses absurd nesting before the recursive parser sees it.
fn check_depth(source: &SourceFile) -> Result<(), LoadError> {
    let mut depth = 0usize;
    let mut in_string: Option<char> = None;
    let mut escaped = false;
    for (offset, c) in source.text.char_indices() {
        if let Some(quote) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                in_string = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => in_string = Some(c),
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let at = source.location(offset);
                    return Err(LoadError::TooDeep {
                        path: source.path.clone(),
                        line: at.line,
                        column: at.column,
                        max: MAX_DEPTH,
                    });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::Location;

    fn parse_str(text: &str) -> Result<Parsed, LoadError> {
        parse(&SourceFile::new("eco.json", text))
    }

    #[test]
    fn accepts_what_pm2_accepts_and_records_positions() {
        let parsed = parse_str("{\n  // comment\n  apps: [{'name': 'a', \"instances\": 0x2,},],\n}").unwrap();
        assert_eq!(parsed.document["apps"][0]["instances"], 2);
        assert_eq!(parsed.map.locate("/apps/0/name"), Some(Location { line: 3, column: 11 }));
    }

    #[test]
    fn missing_commas_are_syntax_errors_with_a_position() {
        let err = parse_str("{\"apps\": [{\"name\": \"a\" \"script\": \"b\"}]}").unwrap_err();
        assert!(matches!(err, LoadError::Syntax { line: 1, .. }), "{err}");
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_last_wins() {
        let parsed = parse_str("{\"a\": 1,\n \"a\": 2}").unwrap();
        assert_eq!(parsed.document["a"], 2);
        assert_eq!(parsed.duplicates.len(), 1);
        assert_eq!(parsed.duplicates[0].location, Location { line: 2, column: 2 });
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(10_000);
        assert!(matches!(parse_str(&text), Err(LoadError::TooDeep { .. })));
    }
}
