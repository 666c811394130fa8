//! No import circle between the library's files.
//!
//! A file that uses an item of another file depends on it; a circle of such uses
//! (`a.rs` uses `b.rs`, which uses `a.rs`) means neither can be read, or changed,
//! without the other. This test builds the graph from the sources, as a reader would
//! follow the paths: every `use` and every `crate::…`, `super::…` and `self::…` path
//! resolves to the deepest file it names (`crate::monitor::hub::Hub` to
//! `src/monitor/hub.rs`, `super::Hub` from `src/monitor/start.rs` to
//! `src/monitor/mod.rs`). A module file declaring its children (`mod hub;`) does not
//! depend on them; re-exporting one of their items (`pub use hub::Hub;`) does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `["monitor", "hub"]`.
type ModulePath = Vec<String>;

/// Every source file of the library under its module path (`lib.rs` is the root, `[]`).
fn modules() -> BTreeMap<ModulePath, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], found: &mut BTreeMap<ModulePath, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(stem);
                walk(&path, &module, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if !(stem == "mod" || (prefix.is_empty() && stem == "lib")) {
                    module.push(stem);
                }
                found.insert(module, path);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut found,
    );
    // The stand-in for `containers` is loaded with `#[path]` in its place: it is the
    // same module, as the files beside it see it.
    found.retain(|m, _| m.last().map(String::as_str) != Some("stub"));
    found
}

/// The source without comments and string literals, so that neither is read as a path.
fn code_of(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                code.push_str("\"\"");
            }
            // A char literal ('"', '\'') would open a string above; lifetimes stay.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\\") || rest.chars().nth(1) == Some('\'') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                    code.push_str("' '");
                } else {
                    code.push(c);
                }
            }
            _ => code.push(c),
        }
    }
    code
}

/// The code without its inline test module (`#[cfg(test)] mod tests { … }`), which
/// is no part of the library's structure (and whose `super` is the file itself).
fn without_tests(code: &str) -> &str {
    let mut at = 0;
    while let Some(found) = code[at..].find("#[cfg(test)]") {
        let start = at + found;
        let after = code[start + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod ")
            && !after.split(['{', ';']).next().unwrap_or("").contains('\n')
            && after
                .find('{')
                .is_some_and(|b| after.find(';').is_none_or(|s| b < s))
        {
            return &code[..start];
        }
        at = start + 1;
    }
    code
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// The tree of every `use` declaration, and whether it is a re-export (`pub use`,
/// `pub(crate) use` …). Renames (`as`) are dropped.
fn use_trees(code: &str) -> Vec<(String, bool)> {
    let mut trees = Vec::new();
    let mut rest = code;
    let mut offset = 0;
    while let Some(at) = rest.find("use ") {
        let start = offset + at;
        let before = code[..start].trim_end();
        let after = &rest[at + 4..];
        offset = start + 4;
        rest = after;
        if code[..start]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let reexport = ["pub", "pub(crate)", "pub(super)"]
            .iter()
            .any(|p| before.ends_with(p));
        if let Some(end) = after.find(';') {
            let tree: String = after[..end]
                .split(" as ")
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part.to_string()
                    } else {
                        // `x as y, z` → `, z`
                        part.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_')
                            .to_string()
                    }
                })
                .collect();
            if tree
                .chars()
                .all(|c| c.is_alphanumeric() || "_:{}, \n*".contains(c))
            {
                trees.push((tree, reexport));
            }
        }
    }
    trees
}

/// Every path the code names outside its re-exports: those of `use` declarations,
/// expanded, and those starting with `crate::`, `super::` or `self::` anywhere else.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths: Vec<String> = use_trees(code)
        .into_iter()
        .filter(|(_, reexport)| !reexport)
        .flat_map(|(tree, _)| expand(&tree))
        .collect();
    // Inline paths, in the code outside `use` declarations.
    let mut outside = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let is_word = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        outside.push_str(&rest[..at]);
        let end = if is_word {
            at + 4
        } else {
            rest[at..].find(';').map_or(at + 4, |e| at + e)
        };
        rest = &rest[end..];
    }
    outside.push_str(rest);
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in outside.match_indices(start) {
            if outside[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let path: String = outside[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path);
        }
    }
    paths
}

/// What a file is to the others: its module's children and its re-exports (the name
/// an item is re-exported under → the path it comes from).
struct Interface {
    children: BTreeSet<String>,
    reexports: BTreeMap<String, String>,
}

/// The file `path` names, seen from `from`: the deepest module it reaches, and
/// through a re-export of that module, the file the item comes from. None for a path
/// outside the crate.
fn resolve(
    path: &str,
    from: &ModulePath,
    interfaces: &BTreeMap<ModulePath, Interface>,
    depth: usize,
) -> Option<ModulePath> {
    let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
    let mut module: ModulePath = match *segments.peek()? {
        "crate" => {
            segments.next();
            Vec::new()
        }
        "self" => {
            segments.next();
            from.clone()
        }
        "super" => {
            let mut module = from.clone();
            while segments.peek() == Some(&"super") {
                segments.next();
                module.pop();
            }
            module
        }
        first if interfaces[from].children.contains(first) => from.clone(),
        _ => return None,
    };
    for segment in segments.by_ref() {
        let mut deeper = module.clone();
        deeper.push(segment.to_string());
        if interfaces.contains_key(&deeper) {
            module = deeper;
            continue;
        }
        // An item of `module`: its own, or re-exported from another file.
        let source = interfaces
            .get(&module)
            .and_then(|i| i.reexports.get(segment));
        if let (Some(source), true) = (source, depth < 8) {
            return resolve(source, &module, interfaces, depth + 1);
        }
        break;
    }
    Some(module)
}

/// File → the files it uses.
fn file_graph() -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let modules = modules();
    let codes: BTreeMap<ModulePath, String> = modules
        .iter()
        .map(|(m, file)| {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            (m.clone(), without_tests(&code).to_string())
        })
        .collect();
    let interfaces: BTreeMap<ModulePath, Interface> = codes
        .iter()
        .map(|(module, code)| {
            let children = modules
                .keys()
                .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
                .map(|m| m.last().unwrap().clone())
                .collect();
            let reexports = use_trees(code)
                .into_iter()
                .filter(|(_, reexport)| *reexport)
                .flat_map(|(tree, _)| expand(&tree))
                .filter_map(|p| Some((p.rsplit("::").next()?.to_string(), p)))
                .collect();
            (
                module.clone(),
                Interface {
                    children,
                    reexports,
                },
            )
        })
        .collect();
    codes
        .iter()
        .map(|(module, code)| {
            let uses = paths_in(code)
                .iter()
                .filter_map(|p| resolve(p, module, &interfaces, 0))
                .filter(|target| target != module && !target.is_empty())
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

/// A circle of the graph, if it has one.
fn a_circle(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Option<Vec<ModulePath>> {
    fn visit(
        at: &ModulePath,
        graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        trail: &mut Vec<ModulePath>,
        done: &mut BTreeSet<ModulePath>,
    ) -> Option<Vec<ModulePath>> {
        if let Some(start) = trail.iter().position(|m| m == at) {
            let mut circle = trail[start..].to_vec();
            circle.push(at.clone());
            return Some(circle);
        }
        if done.contains(at) {
            return None;
        }
        trail.push(at.clone());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, trail, done) {
                return Some(circle);
            }
        }
        trail.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn shown(circle: &[ModulePath]) -> String {
    circle
        .iter()
        .map(|m| m.join("::"))
        .collect::<Vec<_>>()
        .join(" → ")
}

#[test]
fn no_file_of_the_library_imports_itself_through_others() {
    let graph = file_graph();
    assert!(graph.len() > 40, "too few files found: {}", graph.len());
    // The graph is read, not assumed: the hub uses the state it applies events to.
    assert!(graph[&vec!["monitor".to_string(), "hub".to_string()]]
        .contains(&vec!["monitor".to_string(), "state".to_string()]));
    if let Some(circle) = a_circle(&graph) {
        panic!("an import circle between files: {}", shown(&circle));
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let m = |s: &str| vec![s.to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(m("a"), BTreeSet::from([m("b")]));
    graph.insert(m("b"), BTreeSet::from([m("c")]));
    graph.insert(m("c"), BTreeSet::from([m("a")]));
    assert_eq!(shown(&a_circle(&graph).unwrap()), "a → b → c → a");
    graph.insert(m("c"), BTreeSet::new());
    assert_eq!(a_circle(&graph), None);
}

#[test]
fn paths_are_read_from_use_trees_and_code_but_not_from_comments_or_strings() {
    let code = code_of(
        "use super::{hub::Hub, state::{RunState, apply}};\n\
         // crate::ignored::path\n\
         let s = \"crate::in_a_string\";\n\
         crate::containers::run(x); let c = '\"';\n",
    );
    let paths = paths_in(&code);
    for expected in [
        "super::hub::Hub",
        "super::state::RunState",
        "super::state::apply",
        "crate::containers::run",
    ] {
        assert!(
            paths.contains(&expected.to_string()),
            "{expected} in {paths:?}"
        );
    }
    assert!(!paths
        .iter()
        .any(|p| p.contains("ignored") || p.contains("in_a_string")));
}
