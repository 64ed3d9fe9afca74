//! The subset of the Spin manifest v2 (`spin.toml`) the host understands.
//!
//! Read: `spin_manifest_version = 2`, `[application]`, `[variables]`, `[[trigger.http]]`
//! (`route` string or `{ private = true }`, `component` as an id), and per component `source`
//! (a local path), `variables`, `key_value_stores`, `allowed_outbound_hosts` (and the legacy
//! `allowed_http_hosts`, refused as Spin 4 refuses it), `environment`, and `build`
//! (`command`, `workdir`, `watch`). Unknown keys are ignored rather than rejected, unlike Spin;
//! `files`, inline components and `source = { url = .. }` are not supported and are rejected
//! when they would change behaviour.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// A parsed manifest plus the directory its relative paths are relative to.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) dir: PathBuf,
    pub(crate) application: Application,
    pub(crate) variables: BTreeMap<String, VariableDecl>,
    pub(crate) http_triggers: Vec<HttpTrigger>,
    pub(crate) components: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Application {
    #[serde(default)]
    pub(crate) name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VariableDecl {
    #[serde(default)]
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) required: bool,
    /// Accepted like Spin; a secret is only ever a hint to tooling.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "parsed for completeness; Spin does not act on it at runtime"
    )]
    pub(crate) secret: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct HttpTrigger {
    pub(crate) component: String,
    /// `None` for `route = { private = true }`.
    pub(crate) route: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ComponentDecl {
    pub(crate) source: toml::Value,
    #[serde(default)]
    pub(crate) variables: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) key_value_stores: Vec<String>,
    #[serde(default)]
    pub(crate) allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub(crate) allowed_http_hosts: Vec<String>,
    #[serde(default)]
    pub(crate) environment: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) build: Option<BuildDecl>,
    #[serde(default)]
    pub(crate) files: Vec<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BuildDecl {
    pub(crate) command: Commands,
    #[serde(default)]
    pub(crate) workdir: Option<String>,
}

/// `command = "..."` or `command = ["...", "..."]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Commands {
    One(String),
    Many(Vec<String>),
}

impl Commands {
    pub(crate) fn as_slice(&self) -> &[String] {
        match self {
            Self::One(c) => std::slice::from_ref(c),
            Self::Many(cs) => cs,
        }
    }
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    #[serde(default)]
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<RawTrigger>>,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Deserialize)]
struct RawTrigger {
    #[serde(default)]
    component: Option<toml::Value>,
    #[serde(default)]
    route: Option<toml::Value>,
}

impl Manifest {
    pub(crate) fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_str(&text, &dir).with_context(|| format!("manifest {}", path.display()))
    }

    pub(crate) fn from_str(text: &str, dir: &Path) -> anyhow::Result<Self> {
        let raw: RawManifest = toml::from_str(text).context("parsing spin.toml")?;
        if raw.spin_manifest_version.as_integer() != Some(2) {
            bail!(
                "spin_manifest_version must be 2, got {}",
                raw.spin_manifest_version
            );
        }
        let mut http_triggers = Vec::new();
        for (kind, triggers) in &raw.trigger {
            if kind != "http" {
                bail!("trigger type {kind:?} is not supported by the test host (only http)");
            }
            for trigger in triggers {
                let component = match &trigger.component {
                    Some(toml::Value::String(id)) => id.clone(),
                    Some(_) => bail!("inline components in [[trigger.http]] are not supported"),
                    None => bail!(
                        "[[trigger.http]] without component (static_response is not supported)"
                    ),
                };
                if !raw.component.contains_key(&component) {
                    bail!("[[trigger.http]] references unknown component {component:?}");
                }
                let route = trigger
                    .route
                    .as_ref()
                    .with_context(|| format!("[[trigger.http]] for {component:?} has no route"))?;
                let route = crate::router::route_value(&component, route)?;
                http_triggers.push(HttpTrigger { component, route });
            }
        }
        for (id, component) in &raw.component {
            if !component.files.is_empty() {
                bail!("component {id:?}: `files` is not supported by the test host");
            }
            if !component.allowed_http_hosts.is_empty() {
                bail!(
                    "component {id:?}: `allowed_http_hosts` is no longer supported by Spin; use `allowed_outbound_hosts`"
                );
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            application: raw.application,
            variables: raw.variables,
            http_triggers,
            components: raw.component,
        })
    }
}

impl ComponentDecl {
    /// The `source` path relative to the manifest directory.
    pub(crate) fn source_path(&self, id: &str) -> anyhow::Result<&str> {
        match &self.source {
            toml::Value::String(path) => Ok(path),
            _ => bail!("component {id:?}: only a local `source` path is supported"),
        }
    }
}
