//! Record processing, off the request hot path: on its own thread, each finished request is
//! tokenized, turned into metrics, appended to its phase's accumulator and streamed to
//! `profile_export.jsonl`.

use std::collections::BTreeMap;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{compute, PhaseAccumulator, PhaseKind, PhaseSummary, RequestRecord};
use crate::export::jsonl::JsonlWriter;
use crate::tokenizer::Tokenizer;

/// Messages to the processing thread. One queue, so a summary request sent after a phase's
/// workers finished is answered only after all their records.
pub enum ProcessorMsg {
    Record(Box<RequestRecord>),
    Summarize(PhaseKind, oneshot::Sender<PhaseSummary>),
}

pub type RecordSender = mpsc::UnboundedSender<ProcessorMsg>;

/// Handle to the processing thread.
pub struct RecordProcessor {
    tx: RecordSender,
    thread: JoinHandle<std::io::Result<()>>,
}

impl RecordProcessor {
    pub fn start(tokenizer: Tokenizer, use_server_counts: bool, mut jsonl: JsonlWriter) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<ProcessorMsg>();
        let thread = std::thread::Builder::new()
            .name("aiperf-records".into())
            .spawn(move || {
                let mut phases: BTreeMap<PhaseKind, PhaseAccumulator> = BTreeMap::new();
                let mut io_result = Ok(());
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        ProcessorMsg::Record(rec) => {
                            let acc = phases.entry(rec.phase).or_default();
                            let written = match &rec.error {
                                None => {
                                    let m = compute(&rec, &tokenizer, use_server_counts);
                                    acc.add_success(&rec, &m);
                                    jsonl.write_success(&rec, &m)
                                }
                                Some(err) => {
                                    acc.add_error(&rec, err);
                                    jsonl.write_error(&rec, err)
                                }
                            };
                            // Flush whenever we catch up, so the file on disk stays current.
                            let written = written.and_then(|_| {
                                if rx.is_empty() {
                                    jsonl.flush()
                                } else {
                                    Ok(())
                                }
                            });
                            if let (Err(e), Ok(())) = (written, &io_result) {
                                io_result = Err(e);
                            }
                        }
                        ProcessorMsg::Summarize(phase, reply) => {
                            let _ = jsonl.flush();
                            let _ = reply.send(phases.entry(phase).or_default().summarize());
                        }
                    }
                }
                io_result.and(jsonl.flush())
            })
            .expect("spawn record thread");
        Self { tx, thread }
    }

    /// Where workers send finished requests.
    pub fn sender(&self) -> RecordSender {
        self.tx.clone()
    }

    /// The phase's summary, after every record queued so far has been processed.
    pub async fn summarize(&self, phase: PhaseKind) -> PhaseSummary {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(ProcessorMsg::Summarize(phase, reply)).is_err() {
            return PhaseSummary::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the thread once it has processed everything (all senders must be dropped).
    pub async fn finish(self) -> std::io::Result<()> {
        drop(self.tx);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("record thread panicked"))?
    }
}
