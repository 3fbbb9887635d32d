//! Whether the engine can take calls: stopped for good (storage failed beyond recovery),
//! degraded (the ledger, the image store or the projection cannot write now, probed until it
//! can), or serving; and the health
//! signal the server's `grpc.health.v1` follows. It owns that state and the pace of probes;
//! what to drop or rebuild on a change is the engine's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::storage::StorageError;

use super::error::Unavailable;

/// How often a degraded ledger is asked whether it can write again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The stores whose writes can fail and recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    Ledger,
    Images,
    Projection,
}

impl Store {
    /// How logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Store::Ledger => "ledger",
            Store::Images => "image store",
            Store::Projection => "projection",
        }
    }

    /// How the ledger's `writes_resumed` records name it.
    pub fn stored_name(self) -> &'static str {
        match self {
            Store::Ledger => "ledger",
            Store::Images => "images",
            Store::Projection => "projection",
        }
    }
}

pub(crate) struct Availability {
    /// Set once storage failed beyond recovery; every later command is refused with it.
    failed: Option<Unavailable>,
    /// Set while a store cannot write (full disk, I/O error); writes are refused meanwhile.
    degraded: Option<Unavailable>,
    /// Which store `degraded` is about.
    store: Option<Store>,
    /// When the writer was last probed while degraded.
    last_probe: Option<Instant>,
    /// True while the engine can take writes.
    health: watch::Sender<bool>,
}

impl Availability {
    pub fn new() -> Self {
        Availability {
            failed: None,
            degraded: None,
            store: None,
            last_probe: None,
            health: watch::Sender::new(true),
        }
    }

    /// Follows whether the engine can take writes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.health.subscribe()
    }

    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    pub fn degraded(&self) -> bool {
        self.degraded.is_some()
    }

    /// Why to refuse a command now, if at all: stopped, stopping, or (for a command that
    /// writes) degraded.
    pub fn refusal(&self, stopping: bool, writes: bool) -> Option<Unavailable> {
        self.failed
            .clone()
            .or_else(|| stopping.then_some(Unavailable::ShuttingDown))
            .or_else(|| self.degraded.clone().filter(|_| writes))
    }

    /// Storage failed beyond recovery. `true` the first time.
    pub fn fail(&mut self, why: Unavailable) -> bool {
        let first = self.failed.is_none();
        self.failed = Some(why);
        // A failed engine serves nothing: health says so, and a cluster node steps down.
        self.health.send_replace(false);
        first
    }

    /// Which store cannot write now, if any.
    pub fn degraded_store(&self) -> Option<Store> {
        self.store.filter(|_| self.degraded.is_some())
    }

    /// `store` cannot write: refuse writes and report NOT_SERVING until a probe succeeds.
    pub fn degrade(&mut self, store: Store, error: Arc<StorageError>) {
        self.store = Some(store);
        self.degraded = Some(Unavailable::CannotWrite(error));
        self.health.send_replace(false);
        self.last_probe = Some(elapsed_clock());
    }

    /// Whether it is time to probe a degraded ledger (at most once per `PROBE_INTERVAL`).
    pub fn probe_due(&mut self) -> bool {
        if self.degraded.is_none() || self.failed.is_some() {
            return false;
        }
        let now = elapsed_clock();
        if self
            .last_probe
            .is_some_and(|t| now.duration_since(t) < PROBE_INTERVAL)
        {
            return false;
        }
        self.last_probe = Some(now);
        true
    }

    /// A probe succeeded: serve again.
    pub fn recovered(&mut self) {
        self.degraded = None;
        self.store = None;
        self.health.send_replace(true);
    }
}

/// Real elapsed time for the pace of probes of a failed ledger: a retry interval, not a domain
/// time, so it does not go through the injected clock (a test's manual clock would otherwise
/// never let a probe happen).
#[allow(clippy::disallowed_methods)]
fn elapsed_clock() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_refuses_writes_only_and_failed_refuses_everything() {
        let mut a = Availability::new();
        let health = a.subscribe();
        assert!(a.refusal(false, true).is_none());
        assert!(matches!(
            a.refusal(true, false),
            Some(Unavailable::ShuttingDown)
        ));
        let io = std::io::Error::other("disk full");
        a.degrade(
            Store::Images,
            Arc::new(StorageError::unavailable("write", io)),
        );
        assert_eq!(a.degraded_store(), Some(Store::Images));
        assert!(!*health.borrow());
        assert!(a.refusal(false, false).is_none());
        assert!(matches!(
            a.refusal(false, true),
            Some(Unavailable::CannotWrite(_))
        ));
        // Probed at most once a second: degrading counts as the first probe.
        assert!(!a.probe_due());
        a.recovered();
        assert!(*health.borrow());
        assert!(a.refusal(false, true).is_none());
        assert!(a.fail(Unavailable::WriterStopped));
        assert!(!*health.borrow(), "a failed engine is not serving");
        assert!(!a.fail(Unavailable::WriterStopped));
        assert!(matches!(
            a.refusal(false, false),
            Some(Unavailable::WriterStopped)
        ));
        assert!(!a.probe_due(), "a stopped engine is not probed");
    }
}
