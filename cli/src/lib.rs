//! The `loopwatch` command's library: the supervisor of `loopwatch run`, the host's
//! loops (`loopwatch ps`, `loopwatch fleet`), finished runs compared (`loopwatch
//! compare`) and the
//! generators of the Prometheus rules, their promtool tests and the Grafana dashboard,
//! kept apart from the SDK so that a loop depending on `loopwatch` compiles none of it.
#![warn(missing_docs, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod args;
pub mod compare;
pub mod fleet;
pub mod generate;
pub mod supervise;
