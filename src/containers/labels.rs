//! The decision of whose a container is, from its ownership labels (the labels themselves
//! are [`Owner`]'s encoding, tabled in `owner.rs`).

use std::collections::HashMap;

use crate::owner::{Owner, ProcessTable, LABEL_MANAGED, LABEL_RUN_ID};
use crate::records::RunIdentity;

/// Whose a container is, as far as cleanup is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// Not labelled by loopwatch: never touched.
    Unmanaged,
    /// This run's own container.
    Ours,
    /// A live loop's container (its owner process runs, with the recorded start time).
    LiveOwner,
    /// Owned by a process on another host: its liveness cannot be checked here.
    OtherHost,
    /// Labels missing or unreadable: left alone rather than guessed at.
    Unverifiable,
    /// The owner process is gone (no such pid, or the pid now belongs to a process
    /// started at another time): an orphan to clean up.
    Orphan,
}

/// Decides whose a container is from its labels. `us` is `None` for an operator's
/// cleanup command, which owns nothing itself.
pub(crate) fn classify(
    labels: &HashMap<String, String>,
    us: Option<&RunIdentity>,
    hostname: &str,
    processes: &mut dyn ProcessTable,
) -> Ownership {
    if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
        return Ownership::Unmanaged;
    }
    let run_id = labels.get(LABEL_RUN_ID);
    if let (Some(us), Some(run_id)) = (us, run_id) {
        if *run_id == us.run_id {
            return Ownership::Ours;
        }
    }
    let Some(owner) = Owner::from_labels(labels) else {
        return Ownership::Unverifiable;
    };
    if !owner.is_on(hostname) {
        return Ownership::OtherHost;
    }
    // No such process, or the pid reused by a process started at another time: gone.
    if owner.is_alive(processes) {
        Ownership::LiveOwner
    } else {
        Ownership::Orphan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeTable(HashMap<u32, u64>);

    impl ProcessTable for FakeTable {
        fn start_time(&mut self, pid: u32) -> Option<u64> {
            self.0.get(&pid).copied()
        }
    }

    use crate::owner::LABEL_OWNER_HOST;

    fn identity(pid: u32, start: u64) -> RunIdentity {
        RunIdentity::new(format!("h-{pid}-{start}"), Owner::new("h", pid, start))
    }

    #[test]
    fn ownership_by_labels_and_process_identity() {
        let us = identity(10, 1000);
        // Process table: pid 10 is us; pid 20 a live loop started at 2000; pid 30 is an
        // unrelated process started at 5000 (it reused the pid of a loop started at 3000).
        let mut table = FakeTable(HashMap::from([(10, 1000), (20, 2000), (30, 5000)]));
        let cases: Vec<(HashMap<String, String>, Ownership)> = vec![
            (HashMap::new(), Ownership::Unmanaged),
            (us.container_labels(), Ownership::Ours),
            (identity(20, 2000).container_labels(), Ownership::LiveOwner),
            (identity(20, 2001).container_labels(), Ownership::LiveOwner),
            (identity(30, 3000).container_labels(), Ownership::Orphan),
            (identity(40, 4000).container_labels(), Ownership::Orphan),
            (
                {
                    let mut l = identity(40, 4000).container_labels();
                    l.insert(LABEL_OWNER_HOST.into(), "elsewhere".into());
                    l
                },
                Ownership::OtherHost,
            ),
            (
                HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]),
                Ownership::Unverifiable,
            ),
        ];
        for (labels, expected) in cases {
            assert_eq!(
                classify(&labels, Some(&us), "h", &mut table),
                expected,
                "{labels:?}"
            );
        }
        // Our own pid with another start time: a previous process that had our pid.
        assert_eq!(
            classify(
                &identity(10, 900).container_labels(),
                Some(&us),
                "h",
                &mut table
            ),
            Ownership::Orphan
        );
    }
}
