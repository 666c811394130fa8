//! Zero-code instrumentation of a Python child (`loopwatch run --instrument`): the
//! `loopwatch` Python package the instrumentation runs from, embedded in this binary
//! and written into the run's private directory at start (so that a `loopwatch`
//! installed without pip has it, and the client it reports through always matches
//! this supervisor), and the environment that puts its `_auto` directory, whose
//! `sitecustomize` installs the import hooks, first on the child's `PYTHONPATH`.
//!
//! What the instrumentation does once there is in `python/loopwatch/_auto` and
//! `python/loopwatch/_instrument`, and in docs/frameworks.md. A child that is not
//! Python ignores both variables.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variable that selects the frameworks in the child: `auto`, or a list.
pub const ENV_INSTRUMENT: &str = "LOOPWATCH_INSTRUMENT";

/// The frameworks the instrumentation knows, as `--instrument` names them.
pub const FRAMEWORKS: [&str; 5] = ["openevolve", "shinka", "optuna", "deap", "nevergrad"];

/// The values that turn the instrumentation off (the Python side reads the same).
const NONE: [&str; 4] = ["none", "off", "0", "false"];

/// The package's files, by their path under `python/loopwatch`.
const PACKAGE: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../python/loopwatch/__init__.py"),
    ),
    ("_api.py", include_str!("../../../python/loopwatch/_api.py")),
    (
        "_encoding.py",
        include_str!("../../../python/loopwatch/_encoding.py"),
    ),
    (
        "_evaluation.py",
        include_str!("../../../python/loopwatch/_evaluation.py"),
    ),
    (
        "_merging.py",
        include_str!("../../../python/loopwatch/_merging.py"),
    ),
    (
        "_role.py",
        include_str!("../../../python/loopwatch/_role.py"),
    ),
    (
        "_writer.py",
        include_str!("../../../python/loopwatch/_writer.py"),
    ),
    ("deap.py", include_str!("../../../python/loopwatch/deap.py")),
    (
        "diversity.py",
        include_str!("../../../python/loopwatch/diversity.py"),
    ),
    (
        "nevergrad.py",
        include_str!("../../../python/loopwatch/nevergrad.py"),
    ),
    (
        "optuna.py",
        include_str!("../../../python/loopwatch/optuna.py"),
    ),
    (
        "py.typed",
        include_str!("../../../python/loopwatch/py.typed"),
    ),
    (
        "_auto/__init__.py",
        include_str!("../../../python/loopwatch/_auto/__init__.py"),
    ),
    (
        "_auto/sitecustomize.py",
        include_str!("../../../python/loopwatch/_auto/sitecustomize.py"),
    ),
    (
        "_instrument/__init__.py",
        include_str!("../../../python/loopwatch/_instrument/__init__.py"),
    ),
    (
        "_instrument/_report.py",
        include_str!("../../../python/loopwatch/_instrument/_report.py"),
    ),
    (
        "_instrument/deap_hooks.py",
        include_str!("../../../python/loopwatch/_instrument/deap_hooks.py"),
    ),
    (
        "_instrument/nevergrad_hooks.py",
        include_str!("../../../python/loopwatch/_instrument/nevergrad_hooks.py"),
    ),
    (
        "_instrument/openevolve_hooks.py",
        include_str!("../../../python/loopwatch/_instrument/openevolve_hooks.py"),
    ),
    (
        "_instrument/optuna_hooks.py",
        include_str!("../../../python/loopwatch/_instrument/optuna_hooks.py"),
    ),
    (
        "_instrument/shinka_hooks.py",
        include_str!("../../../python/loopwatch/_instrument/shinka_hooks.py"),
    ),
];

/// `--instrument`'s value (or `LOOPWATCH_INSTRUMENT`'s, its default), checked and
/// normalised (`" Optuna, deap"` is `optuna,deap`): `auto`, `none` (or `off`, `0`,
/// `false`, as the Python side reads the variable), or a comma-separated list of
/// [`FRAMEWORKS`] (with `auto` to add them to it); empty is `auto`; a name that is not
/// a framework is refused.
pub fn flag(value: &str) -> Result<String, String> {
    selection(value).map(|s| s.unwrap_or_else(|| "none".into()))
}

/// `--instrument`'s value as the supervisor takes it: `None` for `none`.
pub fn selection(value: &str) -> Result<Option<String>, String> {
    let names: Vec<String> = value
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    match names.as_slice() {
        // Empty, as the Python side reads it: an exported but empty variable.
        [] => Ok(Some("auto".into())),
        [only] if NONE.contains(&only.as_str()) => Ok(None),
        _ => {
            if let Some(unknown) = names
                .iter()
                .find(|n| *n != "auto" && !FRAMEWORKS.contains(&n.as_str()))
            {
                return Err(format!(
                    "{unknown} is not a framework loopwatch instruments (auto, none, or a list of: {})",
                    FRAMEWORKS.join(", ")
                ));
            }
            Ok(Some(names.join(",")))
        }
    }
}

/// The instrumentation, installed for a run: the frameworks selected and the
/// directory the child's `PYTHONPATH` starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrumentation {
    /// `LOOPWATCH_INSTRUMENT` for the child.
    pub selection: String,
    /// The package's `_auto` directory.
    pub auto_dir: PathBuf,
}

impl Instrumentation {
    /// Writes the package under `dir` (`dir/loopwatch/…`, made 0700 like the run's
    /// directory it sits in) for `selection`.
    pub fn install(dir: &Path, selection: String) -> std::io::Result<Instrumentation> {
        use std::os::unix::fs::DirBuilderExt;
        let package = dir.join("loopwatch");
        for (path, text) in PACKAGE {
            let file = package.join(path);
            if let Some(parent) = file.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            std::fs::write(&file, text)?;
        }
        Ok(Instrumentation {
            selection,
            auto_dir: package.join("_auto"),
        })
    }

    /// Sets the child's `LOOPWATCH_INSTRUMENT`, and its `PYTHONPATH` to the
    /// instrumentation directory followed by the `PYTHONPATH` it would have had.
    /// Without an instrumentation (`None`: `--instrument none`, or none could be
    /// written) the child's `LOOPWATCH_INSTRUMENT` is `none`, so that an
    /// instrumentation directory it inherits (an outer `loopwatch run`'s) stays idle.
    pub fn apply_to(this: Option<&Self>, command: &mut std::process::Command) {
        match this {
            Some(instrumentation) => instrumentation.apply(command),
            None => {
                command.env(ENV_INSTRUMENT, "none");
            }
        }
    }

    /// Sets the child's `LOOPWATCH_INSTRUMENT`, and its `PYTHONPATH` to the
    /// instrumentation directory followed by the `PYTHONPATH` it would have had.
    pub fn apply(&self, command: &mut std::process::Command) {
        let mut path = OsString::from(&self.auto_dir);
        if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            path.push(":");
            path.push(existing);
        }
        command
            .env(ENV_INSTRUMENT, &self.selection)
            .env("PYTHONPATH", path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the Python package is embedded: one added to the package and
    /// forgotten here would be missing from the child's copy.
    #[test]
    fn every_file_of_the_package_is_embedded() {
        fn walk(dir: &Path, root: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "__pycache__") {
                        walk(&path, root, found);
                    }
                } else if path.extension().is_some_and(|e| e == "py" || e == "typed") {
                    let relative = path.strip_prefix(root).unwrap();
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/loopwatch");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = PACKAGE.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        for (path, text) in PACKAGE {
            assert_eq!(
                *text,
                std::fs::read_to_string(root.join(path)).unwrap(),
                "{path}"
            );
        }
    }

    /// The package's `__version__` is this binary's: the child's own `loopwatch` of
    /// the same version is taken for it.
    #[test]
    fn the_package_has_the_binarys_version() {
        let init = PACKAGE.iter().find(|(p, _)| *p == "__init__.py").unwrap().1;
        let line = format!("__version__ = \"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(
            init.lines().any(|l| l == line),
            "{line} in python/loopwatch/__init__.py"
        );
    }

    #[test]
    fn the_selection_is_auto_none_or_known_frameworks() {
        assert_eq!(selection("auto"), Ok(Some("auto".into())));
        assert_eq!(selection("none"), Ok(None));
        assert_eq!(selection(" Off "), Ok(None));
        assert_eq!(selection("0"), Ok(None));
        assert_eq!(selection(" Optuna, deap "), Ok(Some("optuna,deap".into())));
        assert_eq!(selection("auto,shinka"), Ok(Some("auto,shinka".into())));
        assert!(selection("pytorch")
            .unwrap_err()
            .contains("pytorch is not a framework"));
        assert_eq!(selection(" "), Ok(Some("auto".into())));
    }

    #[test]
    fn the_package_is_written_and_put_first_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let installed = Instrumentation::install(dir.path(), "auto".into()).unwrap();
        assert!(installed.auto_dir.join("sitecustomize.py").is_file());
        assert!(dir
            .path()
            .join("loopwatch/_instrument/optuna_hooks.py")
            .is_file());
        let mut command = std::process::Command::new("true");
        installed.apply(&mut command);
        let env: std::collections::HashMap<_, _> = command.get_envs().collect();
        assert_eq!(
            env[std::ffi::OsStr::new(ENV_INSTRUMENT)],
            Some(std::ffi::OsStr::new("auto"))
        );
        let path = env[std::ffi::OsStr::new("PYTHONPATH")].unwrap();
        assert!(path
            .to_string_lossy()
            .starts_with(&*installed.auto_dir.to_string_lossy()));

        // None: the child is told so, and its PYTHONPATH is left alone.
        let mut command = std::process::Command::new("true");
        Instrumentation::apply_to(None, &mut command);
        let env: std::collections::HashMap<_, _> = command.get_envs().collect();
        assert_eq!(
            env[std::ffi::OsStr::new(ENV_INSTRUMENT)],
            Some(std::ffi::OsStr::new("none"))
        );
        assert!(!env.contains_key(std::ffi::OsStr::new("PYTHONPATH")));
    }
}
