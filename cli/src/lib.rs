//! The `loopwatch` command's library: the supervisor of `loopwatch run`, the host's
//! loops (`loopwatch ps`, `loopwatch fleet`), finished runs compared (`loopwatch
//! compare`) and the
//! generators of the Prometheus rules, their promtool tests and the Grafana dashboard,
//! kept apart from the SDK so that a loop depending on `loopwatch` compiles none of it.
#![warn(missing_docs, rust_2018_idioms, clippy::too_many_lines)]
#![forbid(unsafe_code)]

pub mod args;
pub mod compare;
pub mod fleet;
// The generators are long tables of panels, rules and their tests.
#[allow(clippy::too_many_lines)]
pub mod generate;
pub mod supervise;
