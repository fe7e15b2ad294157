//! The fuzzing smoke pass that needs no nightly toolchain: every input of the committed
//! corpora (`fuzz/corpus/<target>/`, minimised by `scripts/fuzz`) goes through the same check
//! its fuzz target runs (`fuzz/src/lib.rs`), so an input that once found a bug stays a test.
//! Never fuzzes: `scripts/fuzz` does, with cargo-fuzz.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

/// Runs `check` over every file of `fuzz/corpus/<target>`; returns how many there were.
fn replay_corpus(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails its check", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{target}: the corpus is empty");
    inputs
}

#[test]
fn line_parser_corpus() {
    replay_corpus("parse_line", checks::line_parser);
}

#[test]
fn path_normaliser_corpus() {
    replay_corpus("normalize_path", checks::path_normaliser);
}

#[test]
fn config_loader_corpus() {
    replay_corpus("config", checks::config_loader);
}

#[test]
fn api_request_corpus() {
    replay_corpus("api_request", checks::api_request);
}

#[test]
fn kafka_envelope_corpus() {
    replay_corpus("kafka_envelope", checks::kafka_envelope);
}
