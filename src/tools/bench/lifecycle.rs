//! One lifecycle from both ends: the teller that submits and watches it, the supervisor console
//! that approves every offer, the images a workload carries, and the shared bookkeeping
//! (counters, samples, when each first offer arrived) the timed run reports from.

// A tool, not the engine: a load generator measures real elapsed time (Instant), and its bookkeeping locks are never
// poisoned unless a task already panicked, which ends the run anyway.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::Workload;
use crate::api::pb::{self, supervisor_service_client::SupervisorServiceClient};
use crate::tools::client::{self, CallError, Cluster};
use crate::tools::workload::{JPEG_HEADER, fake_jpeg, submit_request_with};

/// Image size of workload W1.
const W1_IMAGE_BYTES: usize = 64 * 1024;
/// What one finished lifecycle measured, from the teller's side.
pub(super) struct Sample {
    pub(super) submit: Duration,
    pub(super) notify: Duration,
}

/// Shared between the tellers, who note when each submission went out, and the supervisors,
/// who note when its first offer came in. Keyed by teller serial, which the offer carries;
/// sharded so that the bench itself is not the lock everything waits on.
pub(super) struct OfferClock {
    shards: Vec<std::sync::Mutex<HashMap<String, Instant>>>,
    pub(super) offers: std::sync::Mutex<Vec<Duration>>,
}

impl OfferClock {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..64)
                .map(|_| std::sync::Mutex::new(HashMap::new()))
                .collect(),
            offers: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn shard(&self, serial: &str) -> &std::sync::Mutex<HashMap<String, Instant>> {
        let h = serial
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        &self.shards[h % self.shards.len()]
    }

    fn sent(&self, serial: &str, at: Instant) {
        self.shard(serial)
            .lock()
            .unwrap()
            .insert(serial.to_owned(), at);
    }

    /// The first offer of a request (a dual-control request has two).
    fn offered(&self, serial: &str) {
        if let Some(at) = self.shard(serial).lock().unwrap().remove(serial) {
            self.offers.lock().unwrap().push(at.elapsed());
        }
    }
}

/// Counts that every task adds to.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) finished_in_window: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) refused: AtomicU64,
}

/// One lifecycle as a teller sees it, with what every lifecycle shares.
#[derive(Clone)]
pub(super) struct Lifecycle {
    pub(super) images: Arc<Images>,
    pub(super) amount: i64,
    pub(super) offer_clock: Arc<OfferClock>,
    pub(super) counters: Arc<Counters>,
    pub(super) samples: Arc<Mutex<Vec<Sample>>>,
    pub(super) window_end: Instant,
}

impl Lifecycle {
    pub(super) async fn run(&self, c: &Cluster, serial: String) {
        match self.attempt(c, &serial).await {
            Ok(sample) => {
                if Instant::now() <= self.window_end {
                    self.counters
                        .finished_in_window
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.samples.lock().await.push(sample);
            }
            Err(e) => {
                let counter = if e.is_refusal() {
                    &self.counters.refused
                } else {
                    &self.counters.errors
                };
                if counter.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("bench: {serial}: {e}");
                }
                // Do not spin on a server that refuses.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Submit (retried on the new leader with the same serial, which is idempotent), then
    /// Watch until the final state (resumed on the new leader after the last version seen).
    async fn attempt(&self, c: &Cluster, serial: &str) -> Result<Sample, LifecycleError> {
        let sent = Instant::now();
        self.offer_clock.sent(serial, sent);
        let r = c
            .call(|ch| {
                let images = self.images.for_request(serial);
                let req = submit_request_with(serial, "WDL-CASH", self.amount, ACCOUNT, images);
                async move { client::teller_on(ch).submit(req).await }
            })
            .await?
            .into_inner();
        let submit = sent.elapsed();
        let request_id = r
            .request
            .map(|r| r.request_id)
            .ok_or(LifecycleError::NoRequest)?;
        let mut watch = c.watch(&request_id);
        while let Some(w) = watch.next().await? {
            if w.state == pb::RequestState::Approved as i32 {
                return Ok(Sample {
                    submit,
                    notify: sent.elapsed(),
                });
            }
            if w.state > pb::RequestState::Approved as i32 {
                return Err(LifecycleError::NotApproved(w.state));
            }
        }
        Err(LifecycleError::WatchEnded)
    }
}

/// Why a lifecycle did not end approved, as the teller saw it.
#[derive(Debug, thiserror::Error)]
enum LifecycleError {
    /// The server answered an RPC (or the Watch stream) with an error status, or no leader
    /// could be found.
    #[error("{0}")]
    Call(#[from] CallError),
    /// Submit succeeded but its answer held no request.
    #[error("Submit answered without a request")]
    NoRequest,
    /// The request reached a final state other than Approved (the raw state number).
    #[error("ended in state {0}, not approved")]
    NotApproved(i32),
    /// The Watch stream ended before any final state.
    #[error("Watch ended before the decision")]
    WatchEnded,
}

impl LifecycleError {
    /// Whether the server refused the work for load (RESOURCE_EXHAUSTED: a full queue, too
    /// many pending), which the report counts apart from errors.
    fn is_refusal(&self) -> bool {
        matches!(self, LifecycleError::Call(e)
            if e.status().is_some_and(|s| s.code() == tonic::Code::ResourceExhausted))
    }
}

pub(super) const ACCOUNT: &str = "6222020200112233445";

/// The images of a workload. W1's bodies are random bytes made once per run; each request's
/// copies get the request's serial stamped over their first bytes, because the image store is
/// content-addressed and identical images on every request would be stored once and flatter
/// the figures. Stamping costs a copy, where fresh random bodies would cost the clients (who
/// share the server's two cores) more CPU than the server spends on them.
pub(super) struct Images {
    bodies: Vec<(pb::ImageKind, Vec<u8>)>,
}

impl Images {
    pub(super) fn new(workload: Workload) -> Images {
        let bodies = match workload {
            Workload::W0 => Vec::new(),
            Workload::W1 => vec![
                (
                    pb::ImageKind::Voucher,
                    fake_jpeg(W1_IMAGE_BYTES - JPEG_HEADER),
                ),
                (
                    pb::ImageKind::IdFront,
                    fake_jpeg(W1_IMAGE_BYTES - JPEG_HEADER),
                ),
            ],
        };
        Images { bodies }
    }

    pub(super) fn for_request(&self, serial: &str) -> Vec<pb::ImageUpload> {
        self.bodies
            .iter()
            .map(|(kind, body)| {
                let mut content = body.clone();
                let stamp = &mut content[JPEG_HEADER..];
                let n = serial.len().min(stamp.len());
                stamp[..n].copy_from_slice(&serial.as_bytes()[..n]);
                pb::ImageUpload {
                    kind: *kind as i32,
                    media_type: "image/jpeg".into(),
                    content,
                }
            })
            .collect()
    }
}

/// A console that approves every offer at once. When its leader is gone it attends the new
/// one, which first hands back the reviews it held: those are approved too.
pub(super) async fn supervise(
    c: Cluster,
    offer_clock: Arc<OfferClock>,
    voucher_amount: i64,
) -> Result<(), CallError> {
    let mut since = tokio::time::Instant::now();
    loop {
        let (number, ch) = c.channel().await?;
        let mut console = client::supervisor_on(ch);
        let failed = match attend(&mut console, &offer_clock, voucher_amount).await {
            Ok(()) => return Ok(()),
            Err(s) => s,
        };
        c.failed(number, failed, since).await?;
        since = tokio::time::Instant::now();
    }
}

/// One Attend stream, until it ends (`Ok`) or a call fails.
async fn attend(
    c: &mut SupervisorServiceClient<Channel>,
    offer_clock: &OfferClock,
    voucher_amount: i64,
) -> Result<(), tonic::Status> {
    let mut offers = c.attend(pb::AttendRequest {}).await?.into_inner();
    while let Some(msg) = offers.message().await? {
        let (request_id, epoch) = match msg.event {
            Some(pb::attend_response::Event::Offer(o)) => {
                if let Some(r) = &o.request {
                    offer_clock.offered(&r.teller_serial);
                }
                let accepted = c
                    .accept(pb::AcceptRequest {
                        request_id: o.request_id.clone(),
                        epoch: o.epoch,
                    })
                    .await;
                match accepted {
                    Ok(_) => (o.request_id, o.epoch),
                    Err(s) if client::leader_gone(&s) => return Err(s),
                    // Withdrawn meanwhile (timeout, cancellation): nothing to decide.
                    Err(_) => continue,
                }
            }
            Some(pb::attend_response::Event::ReviewResumed(r)) => (r.request_id, r.epoch),
            _ => continue,
        };
        // A refused decision shows as that lifecycle's error on the teller's side.
        let decided = c
            .decide(pb::DecideRequest {
                request_id,
                epoch,
                decision: pb::Decision::Approve as i32,
                reason_code: String::new(),
                comment: "checked".into(),
                // Read off the voucher; ignored where the policy asks no re-keying.
                rekeyed: Some(pb::Rekeyed {
                    amount_minor_units: Some(voucher_amount),
                    account: Some(ACCOUNT.into()),
                    counterparty: None,
                }),
            })
            .await;
        match decided {
            Err(s) if client::leader_gone(&s) => return Err(s),
            _ => {}
        }
    }
    Ok(())
}
