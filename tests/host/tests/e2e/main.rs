//! End-to-end tests of the embedded Spin test host against the fixture component
//! (`tests/fixture`). One test binary, so the fixture is built and compiled once.

mod concurrency;
mod kv;
mod outbound;
mod routing;
mod self_requests;
mod variables;

use std::path::PathBuf;

use spin_test_host::{TestApp, TestAppBuilder};

pub const MANIFEST: &str = "tests/fixture/spin.toml";

/// A builder for the fixture app.
pub fn fixture() -> TestAppBuilder {
    TestApp::builder(MANIFEST)
}

/// The fixture manifest's text and directory, for variations of it.
pub fn fixture_manifest() -> (String, PathBuf) {
    let dir = spin_test_host::real_spin::workspace_root().join("tests/fixture");
    let text = std::fs::read_to_string(dir.join("spin.toml")).expect("fixture spin.toml");
    (text, dir)
}

/// The fixture's `spin.toml` with `from` replaced by `to` (which must occur).
pub fn fixture_variant(from: &str, to: &str) -> TestAppBuilder {
    let (text, dir) = fixture_manifest();
    assert!(text.contains(from), "fixture spin.toml has no {from:?}");
    TestApp::builder_from_toml(text.replacen(from, to, 1), dir)
}

/// Parses the fixture's `/headers` answer (`name: value` lines).
pub fn header_lines(body: &str) -> std::collections::BTreeMap<String, String> {
    body.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
