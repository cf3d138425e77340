//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The copy of the Gymnasium transitions fixture kept in the project.
pub fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gymnasium-classic-control-transitions.csv")
}

pub fn fixture_text() -> String {
    std::fs::read_to_string(fixture_path()).expect("the fixture is committed under tests/fixtures")
}
