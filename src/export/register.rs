//! Prometheus file-based service discovery: each running loop writes one target file
//! into a shared directory, so one Prometheus with a `file_sd_configs` job over that
//! directory scrapes every loop on the host, whatever port each took.
//!
//! A loop's file is named after its owner process and port,
//! `loopwatch-<pid>-<start time>-<port>.json` (a process may run several monitors),
//! written atomically (a temporary file renamed into place), and removed when the
//! monitor shuts down. A loop that died without removing its file leaves it behind;
//! the next registration in the directory removes files whose owner is gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::owner::{LiveProcesses, Owner, ProcessTable};
use crate::records::RunIdentity;

/// One file_sd target group.
#[derive(Serialize)]
struct TargetGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<&'static str, String>,
}

/// The `host:port` Prometheus should scrape: the listen address, or loopback when
/// loopwatch listens on every interface (the files are read on this host).
fn scrape_target(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        match listen {
            SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// The registration file of a monitor: its owner's [`Owner::file_stem`], its port (a
/// process may run several monitors), and `.json`.
fn file_name(owner: &Owner, listen: SocketAddr) -> String {
    format!("{}-{}.json", owner.file_stem(), listen.port())
}

/// The owner a registration file names, if the name is one of ours.
fn owner_of(name: &str) -> Option<Owner> {
    Owner::from_file_stem(name.strip_suffix(".json")?)
}

/// Removes the files of loops whose owner process is gone; returns how many.
fn remove_dead(dir: &Path, processes: &mut dyn ProcessTable) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(owner_of) else {
            continue;
        };
        if !owner.is_alive(processes) && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed the registration of a loop that is gone");
            removed += 1;
        }
    }
    removed
}

/// This loop's registration; its file is removed when it is dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Writes this loop's target file into `dir` (created if needed), after removing
    /// the files of dead loops there. Failure is logged: the loop runs unregistered.
    pub(crate) fn register(
        dir: &Path,
        identity: &RunIdentity,
        listen: SocketAddr,
    ) -> Option<Registration> {
        let attempt = || -> std::io::Result<PathBuf> {
            std::fs::create_dir_all(dir)?;
            if let Some(mut processes) = LiveProcesses::new() {
                remove_dead(dir, &mut processes);
            }
            // Target labels: every series scraped through the file carries them.
            let mut labels = std::collections::BTreeMap::from([
                ("loopwatch_run_id", identity.run_id.clone()),
                ("host", identity.owner.host.clone()),
            ]);
            for (key, value) in identity.loop_labels() {
                labels.insert(key, value.to_string());
            }
            let group = [TargetGroup {
                targets: vec![scrape_target(listen)],
                labels,
            }];
            let body = serde_json::to_vec_pretty(&group).map_err(std::io::Error::other)?;
            let name = file_name(&identity.owner, listen);
            let path = dir.join(&name);
            // Prometheus watches the directory: it must never see a half-written file.
            let temporary = dir.join(format!(".{name}.tmp"));
            std::fs::write(&temporary, body)?;
            std::fs::rename(&temporary, &path)?;
            Ok(path)
        };
        match attempt() {
            Ok(path) => {
                tracing::info!(file = %path.display(), "registered for Prometheus file discovery");
                Some(Registration { path })
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "could not register for Prometheus file discovery; the loop runs unregistered");
                None
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(file = %self.path.display(), error = %e, "could not remove the registration");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::owner::FixedTable as Table;

    #[test]
    fn targets_point_at_loopback_for_wildcard_listeners() {
        assert_eq!(
            scrape_target("0.0.0.0:8123".parse().unwrap()),
            "127.0.0.1:8123"
        );
        assert_eq!(scrape_target("[::]:8123".parse().unwrap()), "[::1]:8123");
        assert_eq!(
            scrape_target("10.1.2.3:9000".parse().unwrap()),
            "10.1.2.3:9000"
        );
    }

    #[test]
    fn only_files_of_dead_owners_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let port: SocketAddr = "127.0.0.1:8123".parse().unwrap();
        for name in [
            file_name(&Owner::new("h", 10, 1000), port), // alive
            file_name(&Owner::new("h", 11, 1000), port), // pid gone
            file_name(&Owner::new("h", 12, 1000), port), // pid reused by a later process
            "loopwatch-11-1000.json".to_string(),        // gone, named as before ports
            "prometheus.json".to_string(),
            "loopwatch-x-1.json".to_string(),
        ] {
            std::fs::write(dir.path().join(name), "[]").unwrap();
        }
        let mut table = Table(vec![(10, 1001), (12, 5000)]);
        assert_eq!(remove_dead(dir.path(), &mut table), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "loopwatch-10-1000-8123.json",
                "loopwatch-x-1.json",
                "prometheus.json"
            ]
        );
    }

    #[test]
    fn a_registration_is_written_whole_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let identity = RunIdentity::of_this_process();
        let registration =
            Registration::register(dir.path(), &identity, "0.0.0.0:9999".parse().unwrap()).unwrap();
        let text = std::fs::read_to_string(&registration.path).unwrap();
        let groups: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(groups[0]["targets"][0], "127.0.0.1:9999");
        assert_eq!(
            groups[0]["labels"]["loopwatch_run_id"],
            identity.run_id.as_str()
        );
        let path = registration.path.clone();
        drop(registration);
        assert!(!path.exists());
    }
}
