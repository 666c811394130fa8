//! The stand-in NVML (`tests/fixtures/nvml-standin/standin.c`), built with the C
//! compiler into a directory of the caller's: shared by the GPU tests and the GPU
//! bench (`#[path]`). Each directory gets its own copy of the library, and so its
//! own script (`<library>.script`) and its own state.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which library to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standin {
    /// Every function the GPU sampler calls.
    Whole,
    /// Without `nvmlDeviceGetPowerUsage`: a library missing a symbol.
    WithoutPower,
}

/// Builds the stand-in into `dir` and returns its path; its script is the path with
/// `.script` appended (see [`write_script`]).
pub fn build_standin(dir: &Path, which: Standin) -> PathBuf {
    // The library's package, or the command's one level below it.
    let fixture = "tests/fixtures/nvml-standin/standin.c";
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = [manifest.join(fixture), manifest.join("..").join(fixture)]
        .into_iter()
        .find(|path| path.exists())
        .expect("the stand-in's source is in the repository");
    let library = dir.join("libnvidia-ml-standin.so");
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_string()));
    // -Wall without -Werror: a newer compiler's new warning must not fail the GPU
    // tests.
    cc.args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&library)
        .arg(&source);
    if which == Standin::WithoutPower {
        cc.arg("-DWITHOUT_POWER");
    }
    let output = cc
        .output()
        .expect("a C compiler (cc) runs; scripts/test installs gcc");
    assert!(
        output.status.success(),
        "the stand-in NVML does not build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

/// Replaces the stand-in's script at once (written beside it, then renamed over it),
/// so that the library never reads half of it.
pub fn write_script(library: &Path, script: &str) {
    let target = PathBuf::from(format!("{}.script", library.display()));
    let partial = PathBuf::from(format!("{}.script.partial", library.display()));
    std::fs::write(&partial, script).expect("the script is written");
    std::fs::rename(&partial, &target).expect("the script is replaced");
}
