//! The README stays true to the code.

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

#[test]
fn the_metrics_table_is_the_catalog() {
    let readme = readme();
    let start = "<!-- metrics-table:start -->\n";
    let end = "<!-- metrics-table:end -->";
    let from = readme.find(start).expect("start marker") + start.len();
    let to = readme.find(end).expect("end marker");
    assert_eq!(
        &readme[from..to],
        loopwatch::catalog::markdown_table(),
        "README metrics table differs from the catalog; paste `cargo run -p loopwatch-cli -- metrics` between the markers"
    );
}

#[test]
fn the_two_commands_come_first_and_ci_runs_the_test_command() {
    let readme = readme();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("a sh block")
        .split("```")
        .next()
        .unwrap();
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[0].starts_with("cargo run"), "{commands:?}");
    assert_eq!(commands[1], "scripts/test");
    let ci =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test"),
        "CI must run the README's test command"
    );
}

/// The modules of `src/` and, for each, the other modules its code names with a
/// `crate::` path (comments aside).
fn import_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    fn walk(module: &str, dir: &Path, files: &mut Vec<(String, std::path::PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(module, &path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push((module.to_string(), path));
            }
        }
    }
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if name == "lib" {
            continue;
        }
        if path.is_dir() {
            walk(&name, &path, &mut files);
        } else {
            files.push((name, path));
        }
    }
    let modules: std::collections::BTreeSet<String> =
        files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), Default::default()))
        .collect();
    for (module, path) in &files {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && name != *module {
                    graph.get_mut(module).unwrap().insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn the_architecture_table_is_the_import_graph() {
    let readme = readme();
    let start = "<!-- architecture:start -->\n";
    let from = readme.find(start).expect("start marker") + start.len();
    let to = readme
        .find("<!-- architecture:end -->")
        .expect("end marker");
    let mut table = std::collections::BTreeMap::new();
    for row in readme[from..to].lines().skip(2) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let module = cells[0].trim_start_matches("| ").trim_matches('`');
        if module == "lib.rs" {
            continue;
        }
        let imports: std::collections::BTreeSet<String> = cells[1]
            .split(", ")
            .filter(|m| *m != "—")
            .map(str::to_string)
            .collect();
        table.insert(module.to_string(), imports);
    }
    let graph = import_graph();
    assert_eq!(
        table, graph,
        "the README's architecture table differs from the modules' imports"
    );
    // No cycles: peel off modules whose imports are all peeled, until none are left.
    let mut left = graph.clone();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|(_, imports)| imports.iter().all(|i| !left.contains_key(i)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!ready.is_empty(), "an import cycle among {:?}", left.keys());
        for m in ready {
            left.remove(&m);
        }
    }
    assert!(
        graph.values().all(|imports| !imports.contains("monitor")),
        "nothing imports monitor"
    );
}
