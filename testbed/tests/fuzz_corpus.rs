//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`: the seeds, and every input a `make fuzz`
//! campaign kept or that crashed once) through the same bodies the fuzz targets run, so what was found once
//! stays fixed. No sanitizer here; `make fuzz` runs the same bodies coverage-guided with AddressSanitizer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, body) in testbed::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the {name} corpus is empty");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                panic!("{name}: {} panics", f.display());
            }
        }
    }
}

/// Every target `make fuzz` runs (`fuzz/Cargo.toml`) has its body in `testbed::fuzzing::TARGETS`, and the other
/// way round: a target added on one side only would never be fuzzed or never be replayed.
#[test]
fn the_fuzz_crate_and_the_replay_list_name_the_same_targets() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml")).unwrap();
    let mut in_crate: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .filter(|n| *n != "sat-fuzz")
        .collect();
    let mut replayed: Vec<&str> = testbed::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    in_crate.sort_unstable();
    replayed.sort_unstable();
    assert_eq!(in_crate, replayed);
    for name in replayed {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/fuzz_targets/{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}
