//! Application and component variables, and the `spin:variables@3.0.0` host implementation.
//!
//! Imitates Spin's `spin-expressions` resolver: application `[variables]` have a `default` or
//! are `required` (never both; `secret` is accepted); a test's overrides play the part of
//! Spin's environment-variable provider (`SPIN_VARIABLE_<NAME>` with the name upper-cased) and
//! win over defaults. Component `[component.x.variables]` are templates (`{{ name }}` mixed with
//! text) over application variables only. A component can read only the variables it declares:
//! anything else is `undefined("no variable for \"<component>\".\"<name>\"")`, and a malformed
//! name is `invalid-name(..)`, with Spin's exact messages.
//!
//! Simplified: values are resolved once when the app starts (Spin asks its providers on every
//! `get`; with static overrides the result is the same). Spin resolves a missing required
//! variable lazily in some paths; here the app refuses to start, naming the variable, which is
//! what `spin up` reports for a required variable used by a component.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, bail};

use crate::bindings::spin::variables::variables as wit;
use crate::manifest::VariableDecl;

/// A parsed `{{ }}` template (Spin's `spin_expressions::Template`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    Expr(String),
}

impl Template {
    pub(crate) fn new(template: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            if let Some(expr_rest) = rest.strip_prefix("{{") {
                let Some((expr, after)) = expr_rest.split_once("}}") else {
                    bail!("invalid variable template: unmatched '{{{{' in template");
                };
                parts.push(Part::Expr(expr.trim().to_owned()));
                rest = after;
            } else {
                let idx = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Lit(rest[..idx].to_owned()));
                rest = &rest[idx..];
            }
        }
        Ok(Self { parts })
    }

    #[cfg(test)]
    fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(name) => Some(name.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Substitutes resolved application variables.
    pub(crate) fn render(&self, values: &HashMap<String, String>) -> anyhow::Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(lit) => out.push_str(lit),
                Part::Expr(name) => out.push_str(
                    values
                        .get(name)
                        .with_context(|| format!("invalid variable name: {name}"))?,
                ),
            }
        }
        Ok(out)
    }
}

/// Spin's variable-name rule (`spin_expressions::Key::validate`), with its messages.
pub(crate) fn validate_name(key: &str) -> Result<(), String> {
    let reason = if key.is_empty() {
        "must not be empty".to_owned()
    } else if let Some(invalid) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!(
            "invalid character {invalid:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        )
    } else if !key.as_bytes()[0].is_ascii_lowercase() {
        "must start with a lowercase ASCII letter".to_owned()
    } else if !key.as_bytes()[key.len() - 1].is_ascii_alphanumeric() {
        "must end with a lowercase ASCII letter or digit".to_owned()
    } else if key.contains("__") {
        "must not contain multiple consecutive underscores".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("{key:?}: {reason}"))
}

/// Turns an override name as a test may write it into the variable name: `greeting` stays,
/// `SPIN_VARIABLE_GREETING` becomes `greeting` (Spin's environment provider upper-cases the
/// variable name and prefixes `SPIN_VARIABLE_`).
pub(crate) fn override_name(name: &str) -> String {
    match name.strip_prefix("SPIN_VARIABLE_") {
        Some(rest) => rest.to_ascii_lowercase(),
        None => name.to_owned(),
    }
}

/// Resolves every application variable: override, else default, else a start-up error naming
/// the required variable.
pub(crate) fn resolve_app_variables(
    decls: &BTreeMap<String, VariableDecl>,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<HashMap<String, String>> {
    for name in overrides.keys() {
        if !decls.contains_key(name) {
            bail!(
                "variable override {name:?} (SPIN_VARIABLE_{}) is not declared in the manifest's [variables]",
                name.to_ascii_uppercase()
            );
        }
    }
    let mut values = HashMap::new();
    for (name, decl) in decls {
        validate_name(name).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
        match (&decl.default, decl.required) {
            (Some(_), true) => {
                bail!("variable {name:?} cannot both be required and have a default")
            }
            (None, false) => bail!("variable {name:?} must either be required or have a default"),
            _ => {}
        }
        let value = match overrides.get(name).or(decl.default.as_ref()) {
            Some(value) => value.clone(),
            None => bail!(
                "provider error: no provider resolved required variable {name:?} (set it with .variable({name:?}, ..), as SPIN_VARIABLE_{} would)",
                name.to_ascii_uppercase()
            ),
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// The variables one component may read, resolved.
#[derive(Debug, Default)]
pub(crate) struct ComponentVariables {
    component_id: String,
    values: HashMap<String, String>,
}

impl ComponentVariables {
    pub(crate) fn resolve(
        component_id: &str,
        templates: &BTreeMap<String, String>,
        app_values: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        for (key, template) in templates {
            validate_name(key).map_err(|e| {
                anyhow::anyhow!("component {component_id:?}: invalid variable name: {e}")
            })?;
            let parsed = Template::new(template)
                .with_context(|| format!("component {component_id:?} variable {key:?}"))?;
            if let Some(unknown) = parsed.variables().find(|v| !app_values.contains_key(*v)) {
                bail!(
                    "component {component_id:?} variable {key:?}: invalid variable template: unknown variable {unknown:?}"
                );
            }
            values.insert(key.clone(), parsed.render(app_values)?);
        }
        Ok(Self {
            component_id: component_id.to_owned(),
            values,
        })
    }

    /// `spin:variables/variables.get` semantics.
    pub(crate) fn get(&self, name: &str) -> Result<String, wit::Error> {
        validate_name(name).map_err(wit::Error::InvalidName)?;
        self.values.get(name).cloned().ok_or_else(|| {
            wit::Error::Undefined(format!("no variable for {:?}.{name:?}", self.component_id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_like_spin() {
        let t = Template::new("a-{{ expr }}-b{{x}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Lit("a-".into()),
                Part::Expr("expr".into()),
                Part::Lit("-b".into()),
                Part::Expr("x".into())
            ]
        );
        assert!(Template::new("{{ matched }} {{ unmatched").is_err());
        assert!(Template::new("plain").unwrap().is_literal());
    }

    #[test]
    fn names_follow_spin_rules() {
        for good in ["a", "abc", "a1b2c3", "a_1", "a_1_b_3"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "aX", "1bc", "_x", "x.y", "x_", "a__b", "x-y"] {
            validate_name(bad).unwrap_err();
        }
    }

    #[test]
    fn override_names_accept_the_env_form() {
        assert_eq!(
            override_name("SPIN_VARIABLE_WXPAY_MCH_API"),
            "wxpay_mch_api"
        );
        assert_eq!(override_name("greeting"), "greeting");
    }
}
