//! Flow import bodies, as `POST /api/v1/flows` and `weir import` take them: a JSON array of
//! flows, or NDJSON (one flow object per line, blank lines skipped), fields by their NetObserv
//! names. A bad body is refused whole, naming the line (and column) of the first problem.

use crate::flow::Flow;

/// Why an import body was refused; nothing of it is stored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("body is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("invalid flow array at line {line} column {column}: {source}")]
    Array {
        line: usize,
        column: usize,
        source: serde_json::Error,
    },
    #[error("invalid flow on line {line}: {source}")]
    Line {
        line: usize,
        source: serde_json::Error,
    },
}

/// A flow as an import gives it: a JSON object only. (Serde's derived `Flow` also takes an
/// array, field by field in declaration order, so `[[]]` would import a flow of zeros.)
struct FlowObject(Flow);

impl<'de> serde::Deserialize<'de> for FlowObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Objects;
        impl<'de> serde::de::Visitor<'de> for Objects {
            type Value = FlowObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a flow object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FlowObject, A::Error> {
                let fields = serde::de::value::MapAccessDeserializer::new(map);
                <Flow as serde::Deserialize>::deserialize(fields).map(FlowObject)
            }
        }
        d.deserialize_map(Objects)
    }
}

/// Parses a JSON array of flows or NDJSON.
pub fn parse_flows(body: &[u8]) -> Result<Vec<Flow>, ImportError> {
    let text = std::str::from_utf8(body)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let flows: Vec<FlowObject> =
            serde_json::from_str(trimmed).map_err(|source| ImportError::Array {
                line: source.line(),
                column: source.column(),
                source,
            })?;
        return Ok(flows.into_iter().map(|f| f.0).collect());
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<FlowObject>(l)
                .map(|f| f.0)
                .map_err(|source| ImportError::Line {
                    line: i + 1,
                    source,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_lines_parse_and_errors_name_the_line() {
        let one = r#"{"SrcAddr":"10.0.0.1","Bytes":5}"#;
        assert_eq!(
            parse_flows(format!("[{one},{one}]").as_bytes())
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_flows(format!("{one}\n\n{one}\n").as_bytes())
                .unwrap()
                .len(),
            2
        );
        let e = parse_flows(format!("{one}\n{{\"Bytes\":\"x\"}}").as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("invalid flow on line 2:"), "{e}");
        let e = parse_flows(b"[\n{\"Bytes\":1},\n{\"Bytes\":-1}]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid flow array at line 3 column"),
            "{e}"
        );
        assert!(matches!(parse_flows(b"\xff"), Err(ImportError::NotUtf8(_))));
    }

    #[test]
    fn a_flow_is_an_object_never_an_array_of_values() {
        // Found by Schemathesis: `[[], {}]` imported two flows.
        let e = parse_flows(b"[[], {}]").unwrap_err();
        assert!(e.to_string().contains("expected a flow object"), "{e}");
        let e = parse_flows(b"[[1700000000000, 1700000000001]]").unwrap_err();
        assert!(e.to_string().contains("expected a flow object"), "{e}");
        let e = parse_flows(b"{\"Bytes\":1}\n[]\n").unwrap_err();
        assert!(e.to_string().starts_with("invalid flow on line 2:"), "{e}");
        // Objects still work, unknown fields still refused.
        assert_eq!(parse_flows(b"[{\"Bytes\":1},{}]").unwrap().len(), 2);
        assert!(parse_flows(b"[{\"Bites\":1}]").is_err());
    }
}
