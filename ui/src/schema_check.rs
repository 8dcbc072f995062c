//! A small JSON Schema checker: the subset [`crate::openapi`] writes (`$ref` to the document's
//! components, `type`, `const`, `enum`, `required`, `properties`, `additionalProperties`,
//! `items`, `prefixItems`, `minItems`, `maxItems`, `minimum`, `maximum`, `allOf`, `anyOf`,
//! `oneOf`). A keyword it does not know (`pattern`, `propertyNames`) is ignored, as a
//! validator must. The router tests and every end-to-end test run the answers they get
//! through it against the agent's own description, so the description cannot drift from what
//! the handlers answer between Schemathesis runs.

use serde_json::Value;

/// What a `$ref` (`#/components/schemas/Name`, a pointer into `doc`) names, if anything.
pub fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    reference
        .strip_prefix('#')
        .and_then(|p| doc.pointer(p))
        .filter(|v| !v.is_null())
}

/// Where `value` breaks `schema` (empty when it holds), each as `path: problem`. `doc` is the
/// whole OpenAPI document, for `$ref`.
pub fn violations(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, value, "$", &mut out);
    out
}

fn type_holds(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            out.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match resolve(doc, r) {
            Some(target) => check(doc, target, v, at, out),
            None => out.push(format!("{at}: $ref {r} names nothing")),
        }
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_holds(t, v) => {
            out.push(format!("{at}: {v} is not {t}"));
            return;
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .any(|t| t.as_str().is_some_and(|t| type_holds(t, v))) =>
        {
            out.push(format!("{at}: {v} is none of {}", Value::Array(ts.clone())));
            return;
        }
        _ => {}
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        out.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        out.push(format!(
            "{at}: {v} is not one of {}",
            Value::Array(e.clone())
        ));
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        out.push(format!("{at}: {v} is below {min}"));
    }
    if let (Some(max), Some(n)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64())
        && n > max
    {
        out.push(format!("{at}: {v} is above {max}"));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        let Some(subs) = s.get(key).and_then(Value::as_array) else {
            continue;
        };
        let held = subs
            .iter()
            .map(|sub| {
                let mut inner = Vec::new();
                check(doc, sub, v, at, &mut inner);
                inner
            })
            .collect::<Vec<_>>();
        let holding = held.iter().filter(|e| e.is_empty()).count();
        match key {
            "allOf" => out.extend(held.into_iter().flatten()),
            "anyOf" if holding == 0 => out.push(format!("{at}: none of anyOf holds: {held:?}")),
            "oneOf" if holding != 1 => {
                out.push(format!(
                    "{at}: {holding} of oneOf hold (one must): {held:?}"
                ));
            }
            _ => {}
        }
    }
    if let Some(obj) = v.as_object() {
        for k in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = k.as_str()
                && !obj.contains_key(k)
            {
                out.push(format!("{at}: lacks required {k}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, member) in obj {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check(doc, sub, member, &here, out),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{here}: not described")),
                    Some(extra @ Value::Object(_)) => check(doc, extra, member, &here, out),
                    _ => {}
                },
            }
        }
    }
    if let Some(items) = v.as_array() {
        let prefix = s.get("prefixItems").and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            let sub = match prefix.and_then(|p| p.get(i)) {
                Some(sub) => sub,
                None => match s.get("items") {
                    Some(sub) => sub,
                    None => continue,
                },
            };
            check(doc, sub, item, &format!("{at}[{i}]"), out);
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.push(format!("{at}: fewer than {min} items"));
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && (items.len() as u64) > max
        {
            out.push(format!("{at}: more than {max} items"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::violations;
    use serde_json::json;

    /// The checker itself finds what it must: a wrong type, a missing member, an undescribed
    /// one, a broken $ref, an enum miss, and passes what holds.
    #[test]
    fn the_checker_finds_each_kind_of_break() {
        let doc =
            json!({ "components": { "schemas": { "N": { "type": "integer", "minimum": 0 } } } });
        let schema = json!({
            "type": "object", "required": ["a", "b"], "additionalProperties": false,
            "properties": {
                "a": { "$ref": "#/components/schemas/N" },
                "b": { "type": "array", "items": { "enum": ["x", "y"] }, "maxItems": 2 },
                "c": { "type": ["string", "null"] },
                "d": { "oneOf": [{ "type": "string" }, { "type": "integer" }] },
                "f": { "const": true },
                "g": { "type": "array", "prefixItems": [{ "type": "integer", "maximum": 9 }],
                       "items": { "type": "string" } }
            }
        });
        let fine = json!({ "a": 1, "b": ["x"], "c": null, "d": 3, "f": true, "g": [9, "s"] });
        assert_eq!(violations(&doc, &schema, &fine), Vec::<String>::new());
        let found = violations(
            &doc,
            &schema,
            &json!({ "a": -1, "b": ["z", "x", "y"], "c": 2, "e": 1, "d": [], "f": false,
                     "g": [10, 1] }),
        );
        let text = found.join("\n");
        for want in [
            "$.a: -1 is below 0",
            "$.b[0]: \"z\" is not one of",
            "$.b: more than 2 items",
            "$.c: 2 is none of",
            "$.e: not described",
            "$.d: 0 of oneOf hold",
            "$.f: false is not true",
            "$.g[0]: 10 is above 9",
            "$.g[1]: 1 is not string",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let missing = violations(&doc, &schema, &json!({ "b": [] }));
        assert!(
            missing.iter().any(|e| e == "$: lacks required a"),
            "{missing:?}"
        );
        let broken = json!({ "$ref": "#/components/schemas/Nope" });
        assert_eq!(violations(&doc, &broken, &json!(1)).len(), 1);
    }
}
