//! Record processing, off the request hot path. Finished requests are tokenized and turned
//! into metrics on a small pool of threads (tokenizing long outputs is the costly part), then
//! one aggregator thread appends them to their phase's accumulator and streams them to
//! `profile_export.jsonl`.
//!
//! ```text
//! workers ─► dispatcher ─round robin─► tokenizer threads ─► aggregator (accumulators, JSONL)
//! ```
//!
//! A summary request must see every record sent before it. The dispatcher passes a marker
//! through every tokenizer thread; once the aggregator has the marker from all of them, each
//! thread's earlier records have arrived (each thread's output is in order).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{compute, PhaseAccumulator, PhaseKind, PhaseSummary, RequestMetrics, RequestRecord};
use crate::export::jsonl::JsonlWriter;
use crate::tokenizer::Tokenizer;

/// Messages to the processor. One queue, so a summary request sent after a phase's workers
/// finished is answered only after all their records.
pub enum ProcessorMsg {
    Record(Box<RequestRecord>),
    Summarize(PhaseKind, oneshot::Sender<PhaseSummary>),
}

pub type RecordSender = mpsc::UnboundedSender<ProcessorMsg>;

enum Work {
    Record(Box<RequestRecord>),
    Marker(u64),
}

type SummaryRequest = (PhaseKind, oneshot::Sender<PhaseSummary>);

enum Done {
    Record(Box<RequestRecord>, Option<RequestMetrics>),
    Marker(u64),
    Summarize(u64, PhaseKind, oneshot::Sender<PhaseSummary>),
}

/// Handle to the processing threads.
pub struct RecordProcessor {
    tx: RecordSender,
    threads: Vec<JoinHandle<()>>,
    aggregator: JoinHandle<std::io::Result<()>>,
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn record thread")
}

impl RecordProcessor {
    pub fn start(tokenizer: Tokenizer, use_server_counts: bool, jsonl: JsonlWriter) -> Self {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let (tx, mut rx) = mpsc::unbounded_channel::<ProcessorMsg>();
        let (done_tx, done_rx) = std_mpsc::channel::<Done>();
        let mut threads = Vec::new();
        let mut work_txs = Vec::new();
        for i in 0..n {
            let (work_tx, work_rx) = std_mpsc::channel::<Work>();
            work_txs.push(work_tx);
            let (tokenizer, done_tx) = (tokenizer.clone(), done_tx.clone());
            threads.push(spawn(&format!("aiperf-tokenize-{i}"), move || {
                for w in work_rx {
                    let out = match w {
                        Work::Record(rec) => {
                            let m = rec
                                .error
                                .is_none()
                                .then(|| compute(&rec, &tokenizer, use_server_counts));
                            Done::Record(rec, m)
                        }
                        Work::Marker(t) => Done::Marker(t),
                    };
                    if done_tx.send(out).is_err() {
                        break;
                    }
                }
            }));
        }
        let dispatch_done = done_tx;
        threads.push(spawn("aiperf-records", move || {
            let mut next = 0usize;
            let mut token = 0u64;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    ProcessorMsg::Record(rec) => {
                        let _ = work_txs[next % n].send(Work::Record(rec));
                        next += 1;
                    }
                    ProcessorMsg::Summarize(phase, reply) => {
                        token += 1;
                        let _ = dispatch_done.send(Done::Summarize(token, phase, reply));
                        for w in &work_txs {
                            let _ = w.send(Work::Marker(token));
                        }
                    }
                }
            }
        }));
        let aggregator = spawn("aiperf-aggregate", move || aggregate(done_rx, n, jsonl));
        Self {
            tx,
            threads,
            aggregator,
        }
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

    /// Stops the threads once everything is processed (all senders must be dropped).
    pub async fn finish(self) -> std::io::Result<()> {
        drop(self.tx);
        let (threads, aggregator) = (self.threads, self.aggregator);
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            aggregator.join()
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(|_| std::io::Error::other("record thread panicked"))?
    }
}

/// The aggregator: accumulates per phase, writes the JSONL, answers summary requests.
fn aggregate(
    rx: std_mpsc::Receiver<Done>,
    threads: usize,
    mut jsonl: JsonlWriter,
) -> std::io::Result<()> {
    let mut phases: BTreeMap<PhaseKind, PhaseAccumulator> = BTreeMap::new();
    let mut io_result = Ok(());
    // token -> (markers seen, the request once it arrived)
    let mut pending: HashMap<u64, (usize, Option<SummaryRequest>)> = HashMap::new();
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(std_mpsc::TryRecvError::Empty) => {
                // Caught up: flush, so the file on disk stays current.
                if let (Err(e), Ok(())) = (jsonl.flush(), &io_result) {
                    io_result = Err(e);
                }
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(std_mpsc::TryRecvError::Disconnected) => break,
        };
        let token = match msg {
            Done::Record(rec, m) => {
                let acc = phases.entry(rec.phase).or_default();
                let written = match (&rec.error, m) {
                    (None, Some(m)) => {
                        acc.add_success(&rec, &m);
                        jsonl.write_success(&rec, &m)
                    }
                    (Some(err), _) => {
                        acc.add_error(&rec, err);
                        jsonl.write_error(&rec, err)
                    }
                    (None, None) => Ok(()),
                };
                if let (Err(e), Ok(())) = (written, &io_result) {
                    io_result = Err(e);
                }
                continue;
            }
            Done::Marker(t) => {
                pending.entry(t).or_default().0 += 1;
                t
            }
            Done::Summarize(t, phase, reply) => {
                pending.entry(t).or_default().1 = Some((phase, reply));
                t
            }
        };
        if let Some((seen, Some(_))) = pending.get(&token) {
            if *seen == threads {
                let (_, req) = pending.remove(&token).expect("present");
                let (phase, reply) = req.expect("checked");
                let _ = jsonl.flush();
                let _ = reply.send(phases.entry(phase).or_default().summarize());
            }
        }
    }
    io_result.and(jsonl.flush())
}
