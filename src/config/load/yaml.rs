//! `.yaml`/`.yml` ecosystem files, through serde-saphyr: panic-free, with budgets
//! that stop alias bombs ("billion laughs") and absurd nesting, and positions for
//! every key and value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;
use serde_saphyr::options::DuplicateKeyPolicy;

use crate::config::ecosystem::{DuplicateKey, LoadError, MAX_DEPTH, Parsed};
use crate::config::source::{Location, SourceFile, pointer_segment};

/// Parses a YAML ecosystem file.
pub fn parse(source: &SourceFile) -> Result<Parsed, LoadError> {
    let mut options = serde_saphyr::Options::default();
    // Duplicates reach our visitor, which reports them as findings (PM2's js-yaml refuses them).
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    if let Some(budget) = options.budget.as_mut() {
        budget.max_depth = MAX_DEPTH;
        budget.max_nodes = 200_000;
        budget.max_aliases = 1_000;
    }
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(&source.text, options).map_err(|err| {
        let at = err.location().map_or(Location { line: 1, column: 1 }, |l| Location {
            line: usize::try_from(l.line()).unwrap_or(1).max(1),
            column: usize::try_from(l.column()).unwrap_or(1).max(1),
        });
        LoadError::Syntax {
            path: source.path.clone(),
            line: at.line,
            column: at.column,
            format: "YAML",
            message: first_line(&err.to_string()),
        }
    })?;
    let mut parsed = Parsed::default();
    parsed.document = flatten(root, String::new(), &mut parsed);
    Ok(parsed)
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

fn location(l: &serde_saphyr::Location) -> Option<Location> {
    let line = usize::try_from(l.line()).ok().filter(|&n| n > 0)?;
    let column = usize::try_from(l.column()).ok().filter(|&n| n > 0)?;
    Some(Location { line, column })
}

fn flatten(node: Spanned<Node>, pointer: String, parsed: &mut Parsed) -> Value {
    if let Some(at) = location(&node.referenced) {
        parsed.map.insert_value(pointer.clone(), at);
    }
    match node.value {
        Node::Scalar(value) => value,
        Node::Seq(items) => Value::Array(
            items.into_iter().enumerate().map(|(i, item)| flatten(item, format!("{pointer}/{i}"), parsed)).collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let child = format!("{pointer}/{}", pointer_segment(&key.value));
                let key_at = location(&key.referenced);
                if map.contains_key(&key.value) {
                    if let (Some(location), Some(first)) = (key_at, parsed.map.locate(&child)) {
                        parsed.duplicates.push(DuplicateKey { pointer: child.clone(), location, first });
                    }
                    map.remove(&key.value);
                }
                if let Some(at) = key_at {
                    parsed.map.insert_key(child.clone(), at);
                }
                let value = flatten(value, child, parsed);
                map.insert(key.value, value);
            }
            Value::Object(map)
        }
    }
}

/// A YAML node whose children keep their positions.
enum Node {
    Scalar(Value),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Number(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Number(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_string())))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(String::from_utf8_lossy(v).into_owned())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Parsed, LoadError> {
        parse(&SourceFile::new("eco.yaml", text))
    }

    #[test]
    fn values_and_positions() {
        let parsed = parse_str("apps:\n  - name: api\n    instances: 2\n    env: {PORT: 80}\n").unwrap();
        assert_eq!(parsed.document["apps"][0]["instances"], 2);
        assert_eq!(parsed.document["apps"][0]["env"]["PORT"], 80);
        assert_eq!(parsed.map.locate("/apps/0/instances"), Some(Location { line: 3, column: 5 }));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
            text.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        let err = parse_str(&text).unwrap_err();
        assert!(matches!(err, LoadError::Syntax { .. }), "{err}");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let parsed = parse_str("a: 1\na: 2\n").unwrap();
        assert_eq!(parsed.document["a"], 2);
        assert_eq!(parsed.duplicates.len(), 1);
        assert_eq!(parsed.duplicates[0].location.line, 2);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse_str("apps:\n  - name: a\n   script: b\n").unwrap_err();
        assert!(matches!(err, LoadError::Syntax { line: 3, .. }), "{err}");
    }
}
