//! `crds/` (and the chart's copy) must be exactly what `tokenmint crd` generates.

use std::path::Path;

#[test]
fn crds_directory_matches_the_generated_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crds = tokenmint::crd::all();
    for crd in &crds {
        let name = tokenmint::crd::file_name(crd);
        let expected = tokenmint::crd::render_one(crd).unwrap();
        for dir in ["crds", "charts/tokenmint/crds"] {
            let path = root.join(dir).join(&name);
            let actual = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; regenerate with `cargo run -- crd`",
                    path.display()
                )
            });
            assert!(
                actual == expected,
                "{} drifted from the Rust types; regenerate it (see README, 'Regenerating the CRDs')",
                path.display()
            );
        }
    }
    // No stale CRD files linger beside them.
    let mut files: Vec<String> = std::fs::read_dir(root.join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut names: Vec<String> = crds.iter().map(tokenmint::crd::file_name).collect();
    names.sort();
    assert_eq!(files, names);
}

#[test]
fn crd_command_output_equals_the_concatenated_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let concatenated: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(concatenated, tokenmint::crd::render_yaml().unwrap());
}
