//! The monitor the tests and benches build when what they look at is the monitor
//! itself: shared by `tests/support` and the benches (`#[path]`), so that each says
//! only how it differs.

use loopwatch::{Monitor, MonitorBuilder};

/// A monitor that keeps out of the way: a free port on loopback, no final files
/// written at shutdown, no Docker (no container sampling, no orphan sweep). Add what
/// the test needs, then `build()`.
pub fn quiet_monitor() -> MonitorBuilder {
    Monitor::builder()
        .listen("127.0.0.1:0".parse().expect("a loopback address"))
        .final_export(false)
        .containers(false)
}
