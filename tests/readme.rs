//! The README and the pages of docs/ stay true to the code, and their links resolve.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    repository_file("README.md")
}

#[test]
fn the_metrics_table_is_the_catalog() {
    assert_eq!(
        between_markers(&repository_file("docs/metrics.md"), "metrics-table"),
        loopwatch::catalog::markdown_table(),
        "docs/metrics.md's metric table differs from the catalog; paste the first table of `cargo run -p loopwatch-cli -- metrics` between the markers"
    );
}

#[test]
fn the_genai_mapping_is_the_catalogs() {
    assert_eq!(
        between_markers(&repository_file("docs/metrics.md"), "genai-mapping"),
        loopwatch::catalog::genai_mapping_table(),
        "docs/metrics.md's GenAI mapping differs from the catalog's; paste the second table of `cargo run -p loopwatch-cli -- metrics` between the markers"
    );
}

/// The README stays a five-minute read; the detail lives in docs/.
#[test]
fn the_readme_is_short() {
    let lines = readme().lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines (at most 250): move the detail to a page of docs/"
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
    let architecture = repository_file("docs/architecture.md");
    let mut table = std::collections::BTreeMap::new();
    for row in between_markers(&architecture, "architecture")
        .lines()
        .skip(2)
    {
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
        "docs/architecture.md's module table differs from the modules' imports"
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
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
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

/// docs/alerts.md's table, written by hand, lists every row of `loopwatch::ALERTS`
/// once, with its severity and message, and nothing else.
#[test]
fn the_alert_table_is_the_alert_rows() {
    let page = repository_file("docs/alerts.md");
    let mut listed = BTreeMap::new();
    // After the header and its separator: one alert a line.
    for line in between_markers(&page, "alerts-table").lines().skip(2) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(
            cells.len(),
            4,
            "docs/alerts.md: not a row of four cells: {line}"
        );
        let name = cells[0]
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("docs/alerts.md: no alert name in backticks: {line}"));
        assert!(
            listed.insert(name, (cells[2], cells[3])).is_none(),
            "docs/alerts.md lists {name} twice"
        );
    }
    let rows: BTreeMap<&str, (&str, &str)> = loopwatch::ALERTS
        .iter()
        .map(|spec| (spec.name, (spec.severity.as_str(), spec.message)))
        .collect();
    assert_eq!(
        listed, rows,
        "docs/alerts.md's alert table differs from the rows of src/alerts/mod.rs (name, severity, message)"
    );
}

#[test]
fn the_configuration_tables_are_config_rs() {
    let configuration = repository_file("docs/configuration.md");
    assert_eq!(
        between_markers(&configuration, "configuration-environment"),
        loopwatch::EnvVariable::markdown_table(),
        "docs/configuration.md's environment table differs from src/config.rs; paste the first table of `cargo run -p loopwatch-cli -- config` between the markers"
    );
    assert_eq!(
        between_markers(&configuration, "configuration-keys"),
        loopwatch::Thresholds::markdown_table(),
        "docs/configuration.md's loopwatch.toml table differs from src/config.rs; paste the second table of `cargo run -p loopwatch-cli -- config` between the markers"
    );
}

/// The README and every page of docs/, as one text.
fn documentation() -> String {
    let mut text = readme();
    for page in markdown_files(root()) {
        if page.starts_with(root().join("docs")) {
            text.push_str(&std::fs::read_to_string(page).unwrap());
        }
    }
    text
}

/// Every `LOOPWATCH_*` variable the library or the command names is documented, in the
/// README or a page of docs/.
#[test]
fn every_variable_the_code_names_is_documented() {
    let readme = documentation();
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
    assert!(
        missing.is_empty(),
        "in neither the README nor docs/: {missing:?}"
    );
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

/// The crate documentation and docs/architecture.md list every feature, say which are
/// on by default, and docs.rs documents them all.
#[test]
fn every_cargo_feature_is_documented() {
    let lib: String = repository_file("src/lib.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    let architecture = repository_file("docs/architecture.md");
    let paragraph = |text: &str, opening: &str| -> String {
        let from = text.find(opening).unwrap_or_else(|| panic!("{opening:?}"));
        let rest = &text[from..];
        let to = rest.find("\n\n").unwrap_or(rest.len());
        rest[..to].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    for (text, opening) in [
        (lib.as_str(), "Cargo features:"),
        (architecture.as_str(), "Cargo features of the library:"),
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
    let architecture = repository_file("docs/architecture.md");
    let graph = import_graph();
    let mut layers: std::collections::BTreeMap<String, usize> = Default::default();
    for line in architecture.lines() {
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

/// The Markdown files whose links are checked: the README, the CHANGELOG and every page
/// under docs/ (sub-directories included), sorted.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    walk(&root.join("docs"), &mut files);
    files.sort();
    files
}

/// The text of a Markdown file outside fenced code blocks and inline code spans, line by
/// line (a code span's text is blanked, so a `[a](b)` written as code is no link).
fn prose_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            lines.push(String::new());
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            lines.push(String::new());
            continue;
        }
        let mut prose = String::new();
        let mut rest = line;
        while let Some(at) = rest.find('`') {
            prose.push_str(&rest[..at]);
            let ticks = rest[at..].chars().take_while(|c| *c == '`').count();
            let after = &rest[at + ticks..];
            match after.find(&"`".repeat(ticks)) {
                Some(end) => {
                    prose.push_str(&"`".repeat(ticks));
                    prose.push_str(&" ".repeat(after[..end].chars().count()));
                    prose.push_str(&"`".repeat(ticks));
                    rest = &after[end + ticks..];
                }
                None => {
                    prose.push_str(&rest[at..at + ticks]);
                    rest = after;
                }
            }
        }
        prose.push_str(rest);
        lines.push(prose);
    }
    lines
}

/// The anchor GitHub gives a heading: its text as rendered (links reduced to their text,
/// code spans to their content), lowercased, every character but letters, digits, spaces,
/// `-` and `_` dropped, spaces turned into `-`.
fn github_slug(heading: &str) -> String {
    // [text](target) → text
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|e| close + e) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (ATX headings outside code blocks), with
/// GitHub's `-1`, `-2`… suffixes on repeated ones, and any `<a id>`/`<a name>` anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            continue;
        }
        for attribute in ["<a id=\"", "<a name=\""] {
            for (at, _) in line.match_indices(attribute) {
                let value = &line[at + attribute.len()..];
                if let Some(end) = value.find('"') {
                    anchors.insert(value[..end].to_string());
                }
            }
        }
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !trimmed[hashes..].starts_with(' ') {
            continue;
        }
        let heading = trimmed[hashes..].trim().trim_end_matches('#').trim();
        let slug = github_slug(heading);
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The inline links `[text](target)` and images `![alt](target)` of a Markdown file's
/// prose, with their line numbers; a title after the target (`"…"`) is left off.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in prose_lines(text).iter().enumerate() {
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            let target = if let Some(angled) = rest.strip_prefix('<') {
                angled.split('>').next().unwrap_or_default()
            } else {
                // Up to the parenthesis that closes this one.
                let mut depth = 0usize;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| match c {
                        '(' => {
                            depth += 1;
                            false
                        }
                        ')' if depth == 0 => true,
                        ')' => {
                            depth -= 1;
                            false
                        }
                        _ => false,
                    })
                    .map_or(rest.len(), |(i, _)| i);
                rest[..end].split_whitespace().next().unwrap_or_default()
            };
            found.push((number + 1, target.to_string()));
        }
    }
    found
}

/// Every relative link between the README, the CHANGELOG and the pages of docs/ names a
/// file that exists and, when it has an anchor, a heading of that file. Links to other
/// sites (`http://`, `https://`, `mailto:`) are not followed.
#[test]
fn every_link_between_the_documents_resolves() {
    let root = root();
    let files = markdown_files(root);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(root).unwrap().display().to_string();
        for (line, target) in links(&text) {
            if target.is_empty()
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else if let Some(from_root) = path.strip_prefix('/') {
                root.join(from_root)
            } else {
                file.parent().unwrap().join(path)
            };
            if !linked.exists() {
                broken.push(format!("{shown}:{line}: {target}: no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_none_or(|e| e != "md") {
                broken.push(format!(
                    "{shown}:{line}: {target}: an anchor into a file that is not Markdown"
                ));
                continue;
            }
            let headings = anchors(&std::fs::read_to_string(&linked).unwrap());
            if !headings.contains(anchor) {
                broken.push(format!(
                    "{shown}:{line}: {target}: no heading with the anchor #{anchor}"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > files.len(),
        "only {checked} relative links found in {} files: is the link parser reading them?",
        files.len()
    );
}

/// The anchor rules the link check relies on, on headings of the kinds the docs use.
#[test]
fn anchors_follow_githubs_rules() {
    assert_eq!(github_slug("Python quick start"), "python-quick-start");
    assert_eq!(github_slug("`loopwatch.toml` keys"), "loopwatchtoml-keys");
    assert_eq!(
        github_slug("Delivery, and one notification per problem"),
        "delivery-and-one-notification-per-problem"
    );
    assert_eq!(github_slug("LLMErrors"), "llmerrors");
    assert_eq!(github_slug("snake_case & co."), "snake_case--co");
    assert_eq!(
        github_slug("See [the proxy](llm-proxy.md)"),
        "see-the-proxy"
    );
    let text = "# A\n## Setup\n```sh\n# not a heading\n```\n## Setup\n";
    let found = anchors(text);
    assert!(
        found.contains("setup") && found.contains("setup-1"),
        "{found:?}"
    );
    assert!(!found.contains("not-a-heading"), "{found:?}");
    assert_eq!(
        links("see [a](b.md#c), `[x](y.md)` and ![p](p.png \"title\")"),
        vec![(1, "b.md#c".to_string()), (1, "p.png".to_string())]
    );
}

/// The README and every page of docs/ are compiled as doc tests (the `documentation`
/// module of src/lib.rs), so a Rust snippet that names a moved or renamed item fails.
#[test]
fn every_page_is_a_doc_test() {
    let lib = repository_file("src/lib.rs");
    let root = root();
    let missing: Vec<String> = markdown_files(root)
        .into_iter()
        .filter(|page| !page.ends_with("CHANGELOG.md"))
        .map(|page| page.strip_prefix(root).unwrap().display().to_string())
        .filter(|page| !lib.contains(&format!("= \"../{page}\";")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in src/lib.rs's documentation module: {missing:?}"
    );
}
