//! Guard rails on the source tree itself, run with every test:
//! - `cfg(madsim)` appears only in the runtime seam (`hyperion/src/runtime.rs`) and at the
//!   simulator crate's gates (`sim/src/lib.rs`, `sim/src/bin/hyperion-sim.rs`): everything else
//!   compiles the same in both builds;
//! - no file in `hyperion/src` grows past [`FILE_LINES_MAX`] lines unless [`LONG_FILES`] names
//!   it with the reason: one room, one job.
//!
//! The checks are plain functions over (path, text) pairs, so the tests below also show each one
//! catching a broken tree.

use std::path::{Path, PathBuf};

/// Where `cfg(madsim)` may appear.
const MADSIM_GATES: &[&str] = &[
    "hyperion/src/runtime.rs",
    "sim/src/lib.rs",
    "sim/src/bin/hyperion-sim.rs",
];

/// Longest file in `hyperion/src` without a reason.
const FILE_LINES_MAX: usize = 800;

/// Files of `hyperion/src` allowed past [`FILE_LINES_MAX`], each with the reason.
const LONG_FILES: &[(&str, &str)] = &[];

/// The directories whose Rust sources are checked, relative to the repository root.
const SOURCE_ROOTS: &[&str] = &["hyperion", "sim"];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the hyperion crate sits in the repository root")
        .to_path_buf()
}

/// Every `.rs` file under the source roots (build output and vendored crates excluded), as
/// (relative path, text).
fn sources() -> Vec<(String, String)> {
    let root = repository_root();
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = SOURCE_ROOTS.iter().map(|dir| root.join(dir)).collect();
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                // Build output, and third-party code vendored with a patch (sim/vendor).
                if path.file_name().is_some_and(|name| name == "target")
                    || path.ends_with("sim/vendor")
                {
                    continue;
                }
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path
                    .strip_prefix(&root)
                    .expect("under the root")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
                files.push((relative, text));
            }
        }
    }
    files.sort();
    files
}

/// `path:line` of every `cfg(madsim)` (in any spelling) outside [`MADSIM_GATES`].
fn madsim_cfgs_outside_the_gates(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        // This file names the patterns it looks for.
        if MADSIM_GATES.contains(&path.as_str()) || path == "hyperion/tests/tidy.rs" {
            continue;
        }
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("cfg(madsim)")
                || code.contains("cfg!(madsim)")
                || code.contains("not(madsim)")
                || code.contains("any(madsim")
                || code.contains("all(madsim")
            {
                found.push(format!("{path}:{}", number + 1));
            }
        }
    }
    found
}

/// Files of `hyperion/src` longer than [`FILE_LINES_MAX`] that [`LONG_FILES`] does not name.
fn long_files(files: &[(String, String)], allowed: &[(&str, &str)]) -> Vec<String> {
    files
        .iter()
        .filter(|(path, _)| path.starts_with("hyperion/src/"))
        .filter(|(path, _)| !allowed.iter().any(|(allowed, _)| allowed == path))
        .filter_map(|(path, text)| {
            let lines = text.lines().count();
            (lines > FILE_LINES_MAX).then(|| format!("{path}: {lines} lines"))
        })
        .collect()
}

#[test]
fn cfg_madsim_appears_only_in_the_runtime_seam_and_the_simulator_gates() {
    let files = sources();
    assert!(
        files
            .iter()
            .any(|(path, _)| path == "hyperion/src/runtime.rs"),
        "the walk found the sources"
    );
    let outside = madsim_cfgs_outside_the_gates(&files);
    assert!(
        outside.is_empty(),
        "cfg(madsim) outside {MADSIM_GATES:?}; take time, tasks and I/O from the runtime seam \
         instead:\n{}",
        outside.join("\n")
    );
}

#[test]
fn no_file_in_hyperion_src_is_longer_than_the_limit_without_a_reason() {
    let long = long_files(&sources(), LONG_FILES);
    assert!(
        long.is_empty(),
        "files over {FILE_LINES_MAX} lines: split them by job, or add them to LONG_FILES with \
         the reason:\n{}",
        long.join("\n")
    );
    for (path, reason) in LONG_FILES {
        assert!(!reason.is_empty(), "{path} is allowed without a reason");
    }
}

#[test]
fn the_checks_catch_a_broken_tree() {
    let broken = vec![
        (
            "hyperion/src/api.rs".to_string(),
            "#[cfg(madsim)]\nfn f() {}\n// cfg(madsim) in a comment is fine\n".to_string(),
        ),
        (
            "hyperion/src/runtime.rs".to_string(),
            "#[cfg(not(madsim))]\n".to_string(),
        ),
        (
            "hyperion/src/big.rs".to_string(),
            "x\n".repeat(FILE_LINES_MAX + 1),
        ),
        (
            "sim/src/big.rs".to_string(),
            "x\n".repeat(FILE_LINES_MAX + 1),
        ),
    ];
    assert_eq!(
        madsim_cfgs_outside_the_gates(&broken),
        vec!["hyperion/src/api.rs:1"]
    );
    assert_eq!(
        long_files(&broken, &[]),
        vec![format!("hyperion/src/big.rs: {} lines", FILE_LINES_MAX + 1)]
    );
    assert!(long_files(&broken, &[("hyperion/src/big.rs", "a reason")]).is_empty());
}
