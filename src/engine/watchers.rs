//! Tellers' Watch streams, per request: who is told of each change. A stream that cannot keep
//! up is dropped (its client reconnects and starts again from the current state), and a
//! request's streams end once it is final.

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::domain::{Request, RequestId};

#[derive(Default)]
pub(crate) struct Watchers {
    by_request: HashMap<RequestId, Vec<mpsc::Sender<Request>>>,
}

impl Watchers {
    /// Opens a stream of `id`'s changes, buffering at most `buffer` of them.
    pub fn watch(&mut self, id: RequestId, buffer: usize) -> mpsc::Receiver<Request> {
        let (tx, rx) = mpsc::channel(buffer);
        self.by_request.entry(id).or_default().push(tx);
        rx
    }

    /// Whether anyone watches `id` (so a change is worth a copy of the request).
    pub fn watched(&self, id: &RequestId) -> bool {
        self.by_request.contains_key(id)
    }

    /// Tells every stream of the request of its new state.
    pub fn notify(&mut self, view: Request) {
        let done = view.state.is_final();
        let id = view.id.clone();
        if let Some(ws) = self.by_request.get_mut(&id) {
            ws.retain(|w| w.try_send(view.clone()).is_ok());
            if ws.is_empty() || done {
                self.by_request.remove(&id);
            }
        }
    }

    /// Ends the streams of the requests `which` picks; returns how many requests had any.
    pub fn end_where(&mut self, which: impl Fn(&RequestId) -> bool) -> usize {
        let before = self.by_request.len();
        self.by_request.retain(|id, _| !which(id));
        before - self.by_request.len()
    }

    /// Ends every stream (clients see UNAVAILABLE and reconnect).
    pub fn clear(&mut self) {
        self.by_request.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_stream_is_dropped_and_all_end_when_the_request_is_final() {
        let id = RequestId::from_random([3; 16]);
        let mut w = Watchers::default();
        assert!(!w.watched(&id));
        let mut fast = w.watch(id.clone(), 4);
        let _slow = w.watch(id.clone(), 1);
        let r = crate::domain::testing::request(&id, 1);
        w.notify(r.clone());
        w.notify(r.clone());
        assert!(w.watched(&id), "the fast stream still watches");
        assert!(fast.try_recv().is_ok() && fast.try_recv().is_ok());
        let mut done = r;
        done.state = crate::domain::State::Cancelled;
        w.notify(done);
        assert!(!w.watched(&id));
        assert_eq!(
            fast.try_recv().map(|r| r.state).ok(),
            Some(crate::domain::State::Cancelled)
        );
    }
}
