//! `${VAR}` and `${VAR:-default}` substitution from the environment.
//!
//! Done on parsed YAML string values, never on the raw text, so a variable's value can't
//! inject YAML structure.

/// Replaces every `${VAR}` / `${VAR:-default}` in `input` using `lookup`.
/// `$${` escapes a literal `${`. Returns the name of the first variable that is unset and
/// has no default.
pub fn substitute(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        if let Some(body_start) = after.strip_prefix("${") {
            let Some(end) = body_start.find('}') else {
                // No closing brace: keep the text as it is.
                out.push_str(after);
                return Ok(out);
            };
            let body = &body_start[..end];
            let (name, default) = match body.find(":-") {
                Some(i) => (&body[..i], Some(&body[i + 2..])),
                None => (body, None),
            };
            if !is_var_name(name) {
                out.push_str(&after[..end + 3]);
                rest = &body_start[end + 1..];
                continue;
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(name.to_string()),
            }
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The string is exactly one `${...}` reference.
fn is_single_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Substitutes in every string of a YAML value, recursively (keys are left alone).
pub fn substitute_yaml(
    value: &mut serde_yaml::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    substitute_value(value, lookup, false)
}

fn substitute_value(
    value: &mut serde_yaml::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    keep_string: bool,
) -> Result<(), String> {
    match value {
        serde_yaml::Value::String(s) => {
            let whole = is_single_reference(s);
            let out = substitute(s, lookup)?;
            // `port: ${PORT}` should be a number, as if the value had been written in place
            // (but a secret stays a string, whatever it looks like).
            if whole && !keep_string {
                if let Ok(v @ (serde_yaml::Value::Number(_) | serde_yaml::Value::Bool(_))) =
                    serde_yaml::from_str::<serde_yaml::Value>(&out)
                {
                    *value = v;
                    return Ok(());
                }
            }
            *s = out;
        }
        serde_yaml::Value::Sequence(seq) => {
            for v in seq {
                substitute_value(v, lookup, keep_string)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let secret = k.as_str().is_some_and(crate::secret::is_secret_key);
                substitute_value(v, lookup, keep_string || secret)?;
            }
        }
        serde_yaml::Value::Tagged(t) => substitute_value(&mut t.value, lookup, keep_string)?,
        _ => {}
    }
    Ok(())
}

pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(substitute("x ${A} y", &env).unwrap(), "x alpha y");
        assert_eq!(substitute("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(substitute("${A:-dflt}", &env).unwrap(), "alpha");
        assert_eq!(substitute("${EMPTY:-d}", &env).unwrap(), "");
        assert_eq!(substitute("${B:-}", &env).unwrap(), "");
        assert_eq!(substitute("${A}${A}", &env).unwrap(), "alphaalpha");
    }

    #[test]
    fn missing_variable_is_named() {
        assert_eq!(
            substitute("key=${MISSING_ONE}", &env).unwrap_err(),
            "MISSING_ONE"
        );
    }

    #[test]
    fn leaves_other_dollars_alone() {
        assert_eq!(
            substitute("cost $5 and $A", &env).unwrap(),
            "cost $5 and $A"
        );
        assert_eq!(substitute("$${A}", &env).unwrap(), "${A}");
        assert_eq!(substitute("${not closed", &env).unwrap(), "${not closed");
        assert_eq!(substitute("${1bad}", &env).unwrap(), "${1bad}");
    }

    #[test]
    fn whole_value_references_keep_their_type() {
        let lookup = |n: &str| match n {
            "PORT" => Some("8125".to_string()),
            "ON" => Some("true".to_string()),
            "NAME" => Some("host".to_string()),
            _ => None,
        };
        let mut v: serde_yaml::Value = serde_yaml::from_str(
            "{port: '${PORT}', on: '${ON}', name: '${NAME}', url: 'h:${PORT}'}",
        )
        .unwrap();
        substitute_yaml(&mut v, &lookup).unwrap();
        assert_eq!(v["port"], serde_yaml::Value::from(8125));
        assert_eq!(v["on"], serde_yaml::Value::from(true));
        assert_eq!(v["name"], serde_yaml::Value::from("host"));
        assert_eq!(v["url"], serde_yaml::Value::from("h:8125"));
    }

    proptest! {
        #[test]
        fn text_without_dollar_is_unchanged(s in "[^$]*") {
            prop_assert_eq!(substitute(&s, &env).unwrap(), s);
        }

        #[test]
        fn set_variable_round_trips(prefix in "[a-z ]{0,8}", value in "[^$]{0,12}") {
            let lookup = |n: &str| (n == "V").then(|| value.clone());
            let got = substitute(&format!("{prefix}${{V}}{prefix}"), &lookup).unwrap();
            prop_assert_eq!(got, format!("{prefix}{value}{prefix}"));
        }
    }
}
