//! Where metrics leave the process: the HTTP endpoint and the final export files.

pub(crate) mod alertmanager;
pub(crate) mod dashboard;
pub(crate) mod final_export;
pub(crate) mod server;
pub(crate) mod web_config;

pub use server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_IN_FLIGHT, REQUEST_TIMEOUT};
