//! The model servers' part of the run's state: each server's books
//! ([`ServerBook`]) and its history of points for the page, thinned like the host
//! samples.

use crate::export::ModelServersView;
use crate::records::thinned::Thinned;
use crate::records::MAX_TIME_POINTS;
use crate::servers::book::{Change, ServerBook, ServerPoint, ServerView, When};
use crate::servers::{ModelServer, ReadFailure, Reading};

/// The model servers, as far as their reads have arrived.
#[derive(Debug)]
pub(super) struct Servers {
    book: ServerBook,
    /// One history per server, in the configuration's order.
    history: Vec<Thinned<ServerPoint>>,
}

impl Servers {
    /// The books of `servers`, none read yet.
    pub(super) fn new(servers: &[ModelServer]) -> Self {
        Servers {
            book: ServerBook::new(servers),
            history: servers
                .iter()
                .map(|_| Thinned::with_capacity(MAX_TIME_POINTS))
                .collect(),
        }
    }

    /// Whether any server is configured.
    pub(super) fn any(&self) -> bool {
        !self.book.is_empty()
    }

    /// A streamed call through the metering proxy got its first chunk after
    /// `seconds`.
    pub(super) fn proxy_first_chunk(&mut self, seconds: f64) {
        if self.any() {
            self.book.proxy_first_chunk(seconds);
        }
    }

    /// Applies a read of server `index`: what changed, and every server as it now
    /// stands; `None` for an index no server has.
    pub(super) fn read(
        &mut self,
        index: usize,
        outcome: Result<Reading, ReadFailure>,
        at: When,
    ) -> Option<(Change, Vec<ServerView>)> {
        let change = self.book.read(index, outcome, at)?;
        if let (Some(point), Some(history)) = (change.point, self.history.get_mut(index)) {
            history.push(point);
        }
        Some((change, self.book.views()))
    }

    /// The servers and their histories, for the page and the JSON.
    pub(super) fn view(&self) -> ModelServersView {
        ModelServersView {
            servers: self.book.views(),
            points: self.history.iter().map(Thinned::points).collect(),
        }
    }
}
