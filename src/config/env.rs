//! `${VAR}` expansion in every string value of the parsed TOML, before it is typed; `$${` is a
//! literal `${`. Every unset or malformed reference is reported with the key it sits under.

use super::errors::Errors;

/// Expands `${VAR}` in every string value under `table`, recording each failure under its key.
pub(super) fn expand_table(
    table: &mut toml::Table,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    for (key, value) in table.iter_mut() {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        expand_value(value, &here, env, errors);
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    match value {
        toml::Value::String(s) => {
            if let Some(expanded) = errors.check(path, expand_str(s, env)) {
                *s = expanded;
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        toml::Value::Table(t) => expand_table(t, path, env, errors),
        _ => {}
    }
}

/// One string with its `${VAR}` references replaced; the first bad reference is the error.
pub(super) fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| "unterminated ${ (write $${ for a literal ${)".to_string())?;
            let name = &inner[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            let val = env(name).ok_or_else(|| {
                format!("environment variable {name} is not set (referenced as ${{{name}}})")
            })?;
            out.push_str(&val);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use crate::config::testing::{err, parse};

    #[test]
    fn env_vars_are_expanded_and_missing_ones_named() {
        let c = parse("[identity]\nkind='client-secret'\ntenant_id='t'\nclient_id='c'\nclient_secret='${AZURE_CLIENT_SECRET}'\n[[backends]]\nname='a'\nendpoint='https://${RES}.openai.azure.com'").unwrap();
        assert_eq!(c.backends[0].host(), "myres.openai.azure.com");
        let IdentityConfig::ClientSecret { secret, .. } = &c.identity else {
            panic!("wrong kind")
        };
        use secrecy::ExposeSecret as _;
        assert_eq!(secret.expose_secret(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = err("[[backends]]\nname='a'\nendpoint='https://${NOPE}.openai.azure.com'");
        assert_eq!(
            e,
            "test.toml: backends[0].endpoint: environment variable NOPE is not set (referenced as ${NOPE})"
        );
        assert_eq!(expand_str("a$${b}c$d", &|_| None).unwrap(), "a${b}c$d");
    }

    #[test]
    fn every_missing_variable_is_named_with_its_key() {
        let e = err(
            "[identity]\nkind='managed-identity'\nclient_id='${ID}'\n[[backends]]\nname='a'\nendpoint='https://${NOPE}.openai.azure.com'\ndeployments=['${D}']",
        );
        assert_eq!(
            e,
            "test.toml: 3 problems:\n  \
             backends[0].deployments[0]: environment variable D is not set (referenced as ${D})\n  \
             backends[0].endpoint: environment variable NOPE is not set (referenced as ${NOPE})\n  \
             identity.client_id: environment variable ID is not set (referenced as ${ID})"
        );
    }
}
