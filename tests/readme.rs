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

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The text between `<!-- {name}:start -->` and `<!-- {name}:end -->`.
fn between_markers<'a>(text: &'a str, name: &str) -> &'a str {
    let start = format!("<!-- {name}:start -->\n");
    let from = text.find(&start).expect("start marker") + start.len();
    let to = text
        .find(&format!("<!-- {name}:end -->"))
        .expect("end marker");
    &text[from..to]
}

#[test]
fn the_configuration_tables_are_config_rs() {
    let readme = readme();
    let expected = format!(
        "{}\n{}",
        loopwatch::EnvVariable::markdown_table(),
        loopwatch::Thresholds::markdown_table()
    );
    assert_eq!(
        between_markers(&readme, "configuration-tables"),
        expected,
        "README configuration tables differ from src/config.rs; paste `cargo run -p loopwatch-cli -- config` between the markers"
    );
}

/// Every `LOOPWATCH_*` variable the library or the command names is in the README.
#[test]
fn every_variable_the_code_names_is_documented() {
    let readme = readme();
    let mut missing = std::collections::BTreeSet::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    fn walk(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    walk(&root.join("cli/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("\"LOOPWATCH_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            if !readme.contains(&format!("`{name}")) {
                missing.insert(name);
            }
        }
    }
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}

/// The Cargo features of `Cargo.toml`, but `default` and the test-only `integration`,
/// with whether each is on by default.
fn features() -> Vec<(String, bool)> {
    let manifest: toml::Table = repository_file("Cargo.toml").parse().unwrap();
    let features = manifest["features"].as_table().unwrap();
    let default: Vec<&str> = features["default"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    features
        .keys()
        .filter(|f| *f != "default" && *f != "integration")
        .map(|f| (f.clone(), default.contains(&f.as_str())))
        .collect()
}

/// The crate documentation and the README list every feature, say which are on by
/// default, and docs.rs documents them all.
#[test]
fn every_cargo_feature_is_documented() {
    let lib: String = repository_file("src/lib.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    let readme = readme();
    let paragraph = |text: &str, opening: &str| -> String {
        let from = text.find(opening).unwrap_or_else(|| panic!("{opening:?}"));
        let rest = &text[from..];
        let to = rest.find("\n\n").unwrap_or(rest.len());
        rest[..to].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    for (text, opening) in [
        (lib.as_str(), "Cargo features:"),
        (readme.as_str(), "Cargo features of the library:"),
    ] {
        let paragraph = paragraph(text, opening);
        for (feature, default) in features() {
            let described = paragraph
                .split(&format!("`{feature}` ("))
                .nth(1)
                .unwrap_or_else(|| panic!("{opening} lacks `{feature}`: {paragraph}"));
            assert_eq!(
                described.starts_with("default"),
                default,
                "{opening} `{feature}`: on by default is {default}"
            );
        }
    }
    let manifest: toml::Table = repository_file("Cargo.toml").parse().unwrap();
    let docs_rs: Vec<&str> = manifest["package"]["metadata"]["docs"]["rs"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for (feature, _) in features() {
        assert!(
            docs_rs.contains(&feature.as_str()),
            "docs.rs lacks {feature}"
        );
    }
}

/// The layer diagram above the architecture table: every module of `src/` on one
/// layer, importing only modules on lower layers.
#[test]
fn the_layer_diagram_is_the_import_graph() {
    let readme = readme();
    let graph = import_graph();
    let mut layers: std::collections::BTreeMap<String, usize> = Default::default();
    for line in readme.lines() {
        let Some(rest) = line.trim_start().strip_prefix("layer ") else {
            continue;
        };
        let (number, modules) = rest.split_once(' ').unwrap();
        let layer: usize = number.parse().unwrap();
        // Names of modules, without the parts in parentheses or after a rule.
        let mut names = String::new();
        let mut depth = 0;
        for c in modules.split('─').next().unwrap().chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => names.push(c),
                _ => {}
            }
        }
        for name in names.split_whitespace() {
            assert!(
                graph.contains_key(name),
                "layer {layer}: {name} is no module"
            );
            assert!(
                layers.insert(name.to_string(), layer).is_none(),
                "{name} on two layers"
            );
        }
    }
    // The layering the graph implies: each module one above its highest import.
    let mut implied: std::collections::BTreeMap<&str, usize> = Default::default();
    while implied.len() < graph.len() {
        let before = implied.len();
        for (module, imports) in &graph {
            if let Some(layer) = imports
                .iter()
                .map(|i| implied.get(i.as_str()).map(|l| l + 1))
                .try_fold(0, |top, l| l.map(|l| top.max(l)))
            {
                implied.insert(module, layer);
            }
        }
        assert!(
            implied.len() > before,
            "the modules left unlayered import each other in a circle (tests/imports.rs names it): {:?}",
            graph.keys().filter(|m| !implied.contains_key(m.as_str())).collect::<Vec<_>>()
        );
    }
    let suggestion: String = (0..=*implied.values().max().unwrap())
        .rev()
        .map(|layer| {
            let on: Vec<&str> = implied
                .iter()
                .filter(|(_, l)| **l == layer)
                .map(|(m, _)| *m)
                .collect();
            format!(" layer {layer}   {}\n", on.join("      "))
        })
        .collect();
    for module in graph.keys() {
        assert!(
            layers.contains_key(module),
            "the layer diagram lacks {module}; the graph's layers:\n{suggestion}"
        );
    }
    for (module, imports) in &graph {
        let layer = &layers[module];
        for import in imports {
            assert!(
                layers[import] < *layer,
                "{module} (layer {layer}) imports {import} (layer {}); the graph's layers:\n{suggestion}",
                layers[import]
            );
        }
    }
}
