//! Building the app like `spin up --build`, once per test process.
//!
//! Each component's `[component.x.build] command` (a string or a list of strings) runs through
//! `sh -c` in its `workdir` (relative to the manifest; the manifest's directory by default),
//! as Spin runs it. Identical commands in the same directory run once per process, whichever
//! test asks first; concurrent tests wait for it. A failing build fails `start()` with the
//! command's output.
//!
//! Cargo inside `cargo test`: while tests run, `cargo test` keeps holding the lock on its
//! profile directory (`target/debug`; verified: a second `cargo build` prints "Blocking waiting
//! for file lock on artifact directory"). The nested `cargo build --release --target
//! wasm32-wasip2` locks `target/release` (host artefacts) and `target/wasm32-wasip2/release`
//! instead, so under a plain `cargo test` it does not deadlock (verified). Under
//! `cargo test --release` both want `target/release` and the nested build would wait forever,
//! so when the test binary itself lives in a `release` profile directory the build commands
//! get their own `CARGO_TARGET_DIR` (`<profile dir>/../spin-test-host-target`).
//!
//! Wherever the nested build writes (that directory, `CARGO_TARGET_DIR`, `build.target-dir`),
//! a `source` under `<workspace>/target/` is remapped to the real target directory, found with
//! `cargo metadata` run with the same environment (see [`SourceResolver`]).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context as _, anyhow, bail};

use crate::manifest::Manifest;

/// Runs the build commands of `manifest` that have not run yet in this process.
pub(crate) fn build_once(manifest: &Manifest) -> anyhow::Result<()> {
    /// (workdir, command) -> outcome.
    type Done = HashMap<(PathBuf, String), Result<(), String>>;
    static DONE: OnceLock<Mutex<Done>> = OnceLock::new();
    // One lock for the whole build phase: tests starting together wait for one build.
    let mut done = DONE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else {
            continue;
        };
        let workdir = normalize(&manifest.dir.join(build.workdir.as_deref().unwrap_or(".")));
        for command in build.command.as_slice() {
            let key = (workdir.clone(), command.clone());
            let result = done
                .entry(key)
                .or_insert_with(|| run(id, command, &workdir).map_err(|e| format!("{e:#}")));
            if let Err(e) = result {
                bail!("{e}");
            }
        }
    }
    Ok(())
}

fn run(component: &str, command: &str, workdir: &Path) -> anyhow::Result<()> {
    eprintln!(
        "[spin-test-host] Building component {component} with `{command}` in {}",
        workdir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(workdir);
    if let Some(dir) = nested_target_dir() {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let output = cmd
        .output()
        .with_context(|| format!("running build command `{command}` for {component}"))?;
    if !output.status.success() {
        bail!(
            "build command `{command}` for component {component} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Resolves component `source` paths, accounting for a relocated Cargo target directory.
pub(crate) struct SourceResolver {
    /// `(<workspace root>/target, real target dir)` when they differ.
    remap: Option<(PathBuf, PathBuf)>,
}

impl SourceResolver {
    /// `uses_cargo`: whether any build command runs cargo (only then is the remap looked up).
    pub(crate) fn new(manifest_dir: &Path, uses_cargo: bool) -> anyhow::Result<Self> {
        if !uses_cargo {
            return Ok(Self { remap: None });
        }
        type Remaps = HashMap<PathBuf, Option<(PathBuf, PathBuf)>>;
        static CACHE: OnceLock<Mutex<Remaps>> = OnceLock::new();
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(remap) = cache.get(manifest_dir) {
            return Ok(Self {
                remap: remap.clone(),
            });
        }
        let remap = target_dir_remap(manifest_dir)?;
        cache.insert(manifest_dir.to_path_buf(), remap.clone());
        Ok(Self { remap })
    }

    pub(crate) fn resolve(&self, manifest_dir: &Path, source: &str) -> PathBuf {
        let path = normalize(&manifest_dir.join(source));
        if let Some((default_target, real_target)) = &self.remap
            && let Ok(rest) = path.strip_prefix(default_target)
        {
            return real_target.join(rest);
        }
        path
    }
}

fn target_dir_remap(dir: &Path) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ])
    .current_dir(dir);
    if let Some(dir) = nested_target_dir() {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let output = cmd.output().context("running cargo metadata")?;
    if !output.status.success() {
        // Not a cargo workspace: nothing to remap.
        return Ok(None);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    let field = |name: &str| {
        metadata[name]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("cargo metadata has no {name}"))
    };
    let default_target = normalize(&field("workspace_root")?.join("target"));
    let real_target = normalize(&field("target_directory")?);
    Ok((default_target != real_target).then_some((default_target, real_target)))
}

/// The target directory for nested cargo builds when the running test binary was built in a
/// `release` profile directory (whose lock the outer `cargo test --release` holds).
fn nested_target_dir() -> Option<PathBuf> {
    nested_target_dir_for(&std::env::current_exe().ok()?)
}

fn nested_target_dir_for(exe: &Path) -> Option<PathBuf> {
    // <target>/release/deps/<test binary>
    let profile_dir = exe.parent()?.parent()?;
    (profile_dir.file_name()? == "release")
        .then(|| {
            profile_dir
                .parent()
                .map(|t| t.join("spin-test-host-target"))
        })
        .flatten()
}

/// Makes `path` absolute and removes `.` and `..` lexically.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_builds_avoid_the_release_lock_only_for_release_test_binaries() {
        assert_eq!(
            nested_target_dir_for(Path::new("/w/target/release/deps/e2e-123")),
            Some(PathBuf::from("/w/target/spin-test-host-target"))
        );
        assert_eq!(
            nested_target_dir_for(Path::new("/w/target/debug/deps/e2e-123")),
            None
        );
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/b/../../target/./x.wasm")),
            PathBuf::from("/target/x.wasm")
        );
    }
}
