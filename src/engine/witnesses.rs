//! Having checkpoints cosigned: one task per configured witness sends it each new checkpoint
//! with a consistency proof from the size it last cosigned (learning that size from the
//! witness's 409 when it does not know it), checks the cosignature that comes back and stores
//! it beside the checkpoint. A witness that is down or refuses never holds up authorizations:
//! checkpoints wait for cosignatures, and the lag is reported in the metrics, in the log and
//! in `GetCheckpoint`. A witness that has cosigned more than this ledger holds is the sign of
//! a rollback, and is reported as one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::WitnessConfig;
use super::checkpoints::{Checkpointer, Signed};
use crate::storage::LedgerRead;
use crate::witness::AddCheckpoint;
use crate::witness::client::{self, Reply};

/// How long one call to a witness may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between tries at a witness that fails.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a task looks whether the engine still runs while nothing new is signed.
const IDLE_LOOK: Duration = Duration::from_millis(500);

/// What the centre knows of one witness now.
#[derive(Clone, Debug, Default)]
pub struct WitnessState {
    /// The witness's key name.
    pub name: String,
    /// Where it listens.
    pub url: String,
    /// The largest checkpoint it has cosigned (0: none yet).
    pub cosigned_size: u64,
    /// Records of the latest checkpoint it has not cosigned.
    pub lag: u64,
    /// Why the last call did not end in a cosignature, if it did not.
    pub error: Option<String>,
}

/// The states of every witness, shared by their tasks and the audit API.
#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<Vec<WitnessState>>>);

impl Board {
    pub fn states(&self) -> Vec<WitnessState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut WitnessState)) {
        if let Some(s) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            f(s);
        }
    }
}

/// Starts one task per witness; each ends when the engine stops (`alive` closes).
pub(super) fn spawn(
    witnesses: &[WitnessConfig],
    checkpointer: Arc<Checkpointer>,
    ledger: Arc<dyn LedgerRead>,
    metrics: Arc<crate::metrics::Metrics>,
    alive: mpsc::WeakSender<super::command::Command>,
) -> (Board, Vec<tokio::task::JoinHandle<()>>) {
    let board = Board(Arc::new(Mutex::new(
        witnesses
            .iter()
            .map(|w| WitnessState {
                name: w.key.name().to_owned(),
                url: w.endpoint.to_string(),
                cosigned_size: checkpointer.cosigned_size(&w.key).unwrap_or(0),
                ..WitnessState::default()
            })
            .collect(),
    )));
    let tasks = witnesses
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let sender = Sender {
                index: i,
                witness: w.clone(),
                checkpointer: checkpointer.clone(),
                ledger: ledger.clone(),
                metrics: metrics.clone(),
                board: board.clone(),
            };
            tokio::spawn(sender.run(alive.clone()))
        })
        .collect();
    (board, tasks)
}

/// One witness's task.
struct Sender {
    index: usize,
    witness: WitnessConfig,
    checkpointer: Arc<Checkpointer>,
    ledger: Arc<dyn LedgerRead>,
    metrics: Arc<crate::metrics::Metrics>,
    board: Board,
}

/// What one round at the witness came to.
enum Round {
    /// The latest checkpoint is cosigned: wait for a new one.
    Cosigned,
    /// The witness told us the size it last cosigned: try again at once.
    Learned,
    /// Something failed: wait, then try again.
    Failed(String),
}

impl Sender {
    async fn run(self, alive: mpsc::WeakSender<super::command::Command>) {
        let name = self.witness.key.name().to_owned();
        let mut signed = self.checkpointer.subscribe();
        // What the witness last cosigned, as far as we know; None: ask it.
        let mut known = self.checkpointer.cosigned_size(&self.witness.key);
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        // At start the witness is asked once even when our store says it cosigned our latest:
        // if it has cosigned more since, this ledger was rolled back, and that must show now.
        let mut started = false;
        // 409s in a row: one teaches the size; a witness whose size keeps moving is failing.
        let mut learned_in_a_row = 0;
        loop {
            if alive.upgrade().is_none() {
                return;
            }
            let Some(latest) = self.checkpointer.latest() else {
                let _ = tokio::time::timeout(IDLE_LOOK, signed.changed()).await;
                continue;
            };
            if started && known == Some(latest.checkpoint.size) && self.cosigned(&latest) {
                let _ = tokio::time::timeout(IDLE_LOOK, signed.changed()).await;
                continue;
            }
            let mut round = self.round(&latest, &mut known).await;
            started = true;
            learned_in_a_row = if matches!(round, Round::Learned) {
                learned_in_a_row + 1
            } else {
                0
            };
            if learned_in_a_row > 2 {
                learned_in_a_row = 0;
                round = Round::Failed("the witness's cosigned size keeps changing".into());
            }
            match round {
                Round::Cosigned => {
                    if failing {
                        tracing::info!(witness = %name, size = latest.checkpoint.size, "witness cosigns again");
                    }
                    failing = false;
                    backoff = Duration::from_secs(1);
                }
                Round::Learned => {}
                Round::Failed(why) => {
                    self.metrics.witnesses.failed(&name);
                    if !failing {
                        tracing::warn!(witness = %name, url = %self.witness.endpoint, error = %why,
                            "checkpoint not cosigned; authorizations go on, checkpoints wait");
                    }
                    failing = true;
                    let size = latest.checkpoint.size;
                    self.board.update(self.index, |s| {
                        s.error = Some(why);
                        s.lag = size.saturating_sub(s.cosigned_size);
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Whether the checkpoint already carries this witness's cosignature.
    fn cosigned(&self, s: &Signed) -> bool {
        s.cosignatures.iter().any(|l| self.witness.key.owns_line(l))
    }

    /// One add-checkpoint call for `latest`, from the size the witness is `known` to hold.
    async fn round(&self, latest: &Signed, known: &mut Option<u64>) -> Round {
        let size = latest.checkpoint.size;
        let old = known.unwrap_or(0);
        if old > size {
            return Round::Failed(format!(
                "the witness has cosigned a tree of {old} records but this ledger's latest \
                 checkpoint has {size}: the ledger was rolled back or replaced"
            ));
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            match self.ledger.consistency_proof(old, size) {
                Ok(p) => p,
                Err(e) => return Round::Failed(format!("consistency proof from {old}: {e}")),
            }
        };
        let request = AddCheckpoint {
            old,
            proof,
            note: latest.note.clone(),
        };
        let reply =
            match client::add_checkpoint(&self.witness.endpoint, &request, CALL_TIMEOUT).await {
                Ok(r) => r,
                Err(e) => return Round::Failed(format!("unreachable: {e}")),
            };
        match reply {
            Reply::Cosigned(lines) => self.keep(latest, &lines, known).await,
            Reply::Conflict(theirs) if Some(theirs) != *known => {
                *known = Some(theirs);
                Round::Learned
            }
            Reply::Conflict(theirs) => Round::Failed(format!(
                "the witness says it holds size {theirs} and refused a proof from there"
            )),
            Reply::Refused { status, message } => {
                // 422: our tree does not extend what it cosigned. Nothing else explains that
                // but a changed history, so it is an error, not a warning.
                if status == 422 {
                    tracing::error!(witness = %self.witness.key.name(), old, size, %message,
                        "the witness refuses this ledger's checkpoint as inconsistent with \
                         what it cosigned before: the history was rewritten");
                }
                let hint = match status {
                    403 => {
                        ": the witness does not know this log's key; give its operator \
                            this log's public key (`countersign ledger pubkey`) and origin"
                    }
                    404 => {
                        ": the witness does not witness this log's origin; give its \
                            operator this log's origin and public key"
                    }
                    _ => "",
                };
                Round::Failed(format!("refused ({status}): {message}{hint}"))
            }
        }
    }

    /// Checks and stores the cosignature in a 200 answer.
    async fn keep(&self, latest: &Signed, lines: &str, known: &mut Option<u64>) -> Round {
        let body = latest.checkpoint.body();
        let Some(line) = lines
            .lines()
            .find(|l| self.witness.key.check_line(&body, l).is_ok())
        else {
            return Round::Failed(format!(
                "the answer carries no valid cosignature by the key in \
                 ledger.witnesses[{}].key: that key is not the one this witness signs with \
                 (ask its operator for its witness.pub)",
                self.index
            ));
        };
        // One cosignature per witness and checkpoint is kept: a checkpoint cosigned again
        // (asked at start) already carries this witness's line.
        if !self.cosigned(latest) {
            let (c, seq, line) = (self.checkpointer.clone(), latest.seq, line.to_owned());
            match tokio::task::spawn_blocking(move || c.add_cosignature(seq, &line)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Round::Failed(format!("store the cosignature: {e}")),
                Err(e) => return Round::Failed(format!("store the cosignature: {e}")),
            }
        }
        let size = latest.checkpoint.size;
        *known = Some(size);
        let newest = self
            .checkpointer
            .latest()
            .map_or(size, |s| s.checkpoint.size);
        let lag = newest.saturating_sub(size);
        self.metrics
            .witnesses
            .cosigned(self.witness.key.name(), size, lag);
        self.board.update(self.index, |s| {
            s.cosigned_size = size;
            s.lag = lag;
            s.error = None;
        });
        Round::Cosigned
    }
}
