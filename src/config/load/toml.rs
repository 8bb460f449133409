//! `.toml` ecosystem files (not read by PM2 itself; `reconcile` accepts them as a
//! format without code execution): `[[apps]]` tables.

use serde_json::{Map, Number, Value};
use toml::de::{DeTable, DeValue};

use crate::config::ecosystem::{LoadError, Parsed};
use crate::config::source::{SourceFile, pointer_segment};

/// Parses a TOML ecosystem file. TOML itself forbids duplicate keys.
pub fn parse(source: &SourceFile) -> Result<Parsed, LoadError> {
    let root = DeTable::parse(&source.text).map_err(|err| {
        let at = source.location(err.span().map_or(0, |s| s.start));
        LoadError::Syntax {
            path: source.path.clone(),
            line: at.line,
            column: at.column,
            format: "TOML",
            message: err.message().trim().to_string(),
        }
    })?;
    let mut parsed = Parsed::default();
    let start = root.span().start;
    parsed.map.insert_value(String::new(), source.location(start));
    parsed.document = table(root.get_ref(), "", source, &mut parsed);
    Ok(parsed)
}

fn table(entries: &DeTable<'_>, pointer: &str, source: &SourceFile, parsed: &mut Parsed) -> Value {
    let mut map = Map::new();
    for (key, value) in entries {
        let child = format!("{pointer}/{}", pointer_segment(key.get_ref()));
        parsed.map.insert_key(child.clone(), source.location(key.span().start));
        let converted = convert(value.get_ref(), value.span().start, &child, source, parsed);
        map.insert(key.get_ref().to_string(), converted);
    }
    Value::Object(map)
}

fn convert(value: &DeValue<'_>, start: usize, pointer: &str, source: &SourceFile, parsed: &mut Parsed) -> Value {
    parsed.map.insert_value(pointer.to_string(), source.location(start));
    match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            match i64::from_str_radix(&digits, i.radix()) {
                Ok(v) => Value::Number(v.into()),
                Err(_) => Value::String(i.to_string()),
            }
        }
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(f.as_str().to_string()), Value::Number),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item.get_ref(), item.span().start, &format!("{pointer}/{i}"), source, parsed))
                .collect(),
        ),
        DeValue::Table(t) => table(t, pointer, source, parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::Location;

    #[test]
    fn apps_tables_with_positions() {
        let source = SourceFile::new("eco.toml", "[[apps]]\nname = \"a\"\nmin_uptime = 0x10\n[apps.env]\nPORT = 80\n");
        let parsed = parse(&source).unwrap();
        assert_eq!(parsed.document["apps"][0]["min_uptime"], 16);
        assert_eq!(parsed.document["apps"][0]["env"]["PORT"], 80);
        assert_eq!(parsed.map.locate("/apps/0/min_uptime"), Some(Location { line: 3, column: 1 }));
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let source = SourceFile::new("eco.toml", "[[apps]]\nname = \"a\"\nname = \"b\"\n");
        assert!(matches!(parse(&source), Err(LoadError::Syntax { line: 3, .. })));
    }
}
