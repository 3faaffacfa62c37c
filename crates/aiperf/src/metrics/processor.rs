//! Record processing, off the request hot path. Finished requests are tokenized and turned
//! into metrics on a small pool of threads (tokenizing long outputs is the costly part), then
//! one aggregator thread appends them to their phase's accumulator and hands them to a
//! [`RecordSink`] (in a run, the `profile_export.jsonl` writer).
//!
//! ```text
//! workers ─round robin─► tokenizer threads ─► aggregator (accumulators, sink)
//! ```
//!
//! A worker's hand-off is a push onto a queue, nothing more: the threads do not sleep on the
//! queues while there is traffic, but poll them every [`BATCH_PAUSE`], so a busy run costs no
//! thread wake-up (a futex call and a context switch) per record; they block only once a
//! queue has been idle for a whole pause.
//!
//! A summary request must see every record sent before it. It passes a marker through every
//! tokenizer thread; once the aggregator has the marker from all of them, each thread's
//! earlier records have arrived (each thread's output is in order).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{
    compute, ErrorDetails, PhaseAccumulator, PhaseKind, PhaseSummary, RequestMetrics, RequestRecord,
};
use crate::tokenizer::Tokenizer;

/// Where the aggregator writes each processed request, in the order it processes them (the
/// JSONL export implements it). Called only from the aggregator thread.
pub trait RecordSink: Send {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()>;
    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()>;
    /// Called whenever the aggregator has caught up, before a summary is answered, and at the
    /// end.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// How long a processing thread lets its queue fill before draining it again.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

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

/// Where workers send finished requests: round robin over the tokenizer threads' queues.
/// Sending never blocks. Cheap to clone.
#[derive(Clone)]
pub struct RecordSender {
    queues: Arc<[std_mpsc::Sender<Work>]>,
    next: Arc<AtomicUsize>,
}

/// The processor has stopped (its threads are gone).
#[derive(Debug)]
pub struct Closed;

impl RecordSender {
    pub fn send(&self, rec: RequestRecord) -> Result<(), Closed> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        self.queues[i]
            .send(Work::Record(Box::new(rec)))
            .map_err(|_| Closed)
    }
}

/// Handle to the processing threads.
pub struct RecordProcessor {
    tx: Option<RecordSender>,
    done_tx: std_mpsc::Sender<Done>,
    next_token: u64,
    threads: Vec<JoinHandle<()>>,
    aggregator: JoinHandle<std::io::Result<()>>,
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn record thread")
}

/// The next message: everything queued is taken at once; an empty queue gets one pause to
/// fill before the thread blocks on it. `None` once every sender is gone.
fn next_batched<T>(rx: &std_mpsc::Receiver<T>, on_idle: &mut impl FnMut()) -> Option<T> {
    match rx.try_recv() {
        Ok(m) => return Some(m),
        Err(std_mpsc::TryRecvError::Disconnected) => return None,
        Err(std_mpsc::TryRecvError::Empty) => {}
    }
    on_idle();
    std::thread::sleep(BATCH_PAUSE);
    match rx.try_recv() {
        Ok(m) => Some(m),
        Err(std_mpsc::TryRecvError::Disconnected) => None,
        Err(std_mpsc::TryRecvError::Empty) => rx.recv().ok(),
    }
}

impl RecordProcessor {
    /// Starts the threads; every processed record goes to `sink`.
    pub fn start(
        tokenizer: Tokenizer,
        use_server_counts: bool,
        sink: impl RecordSink + 'static,
    ) -> Self {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let (done_tx, done_rx) = std_mpsc::channel::<Done>();
        let mut threads = Vec::new();
        let mut queues = Vec::new();
        for i in 0..n {
            let (work_tx, work_rx) = std_mpsc::channel::<Work>();
            queues.push(work_tx);
            let (tokenizer, done_tx) = (tokenizer.clone(), done_tx.clone());
            threads.push(spawn(&format!("aiperf-tokenize-{i}"), move || {
                while let Some(w) = next_batched(&work_rx, &mut || {}) {
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
        let aggregator = spawn("aiperf-aggregate", move || aggregate(done_rx, n, sink));
        Self {
            tx: Some(RecordSender {
                queues: queues.into(),
                next: Arc::new(AtomicUsize::new(0)),
            }),
            done_tx,
            next_token: 0,
            threads,
            aggregator,
        }
    }

    /// Where workers send finished requests.
    pub fn sender(&self) -> RecordSender {
        self.tx.clone().expect("sender taken only by finish")
    }

    /// The phase's summary, after every record queued so far has been processed.
    pub async fn summarize(&mut self, phase: PhaseKind) -> PhaseSummary {
        let Some(tx) = &self.tx else {
            return PhaseSummary::default();
        };
        self.next_token += 1;
        let token = self.next_token;
        let (reply, rx) = oneshot::channel();
        if self
            .done_tx
            .send(Done::Summarize(token, phase, reply))
            .is_err()
        {
            return PhaseSummary::default();
        }
        for q in tx.queues.iter() {
            let _ = q.send(Work::Marker(token));
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the threads once everything is processed (all senders must be dropped).
    pub async fn finish(mut self) -> std::io::Result<()> {
        drop(self.tx.take());
        drop(self.done_tx);
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

/// The aggregator: accumulates per phase, writes to the sink, answers summary requests.
fn aggregate(
    rx: std_mpsc::Receiver<Done>,
    threads: usize,
    mut sink: impl RecordSink,
) -> std::io::Result<()> {
    let mut phases: BTreeMap<PhaseKind, PhaseAccumulator> = BTreeMap::new();
    let mut io_result = Ok(());
    // token -> (markers seen, the request once it arrived)
    let mut pending: HashMap<u64, (usize, Option<SummaryRequest>)> = HashMap::new();
    loop {
        // Caught up: flush, so the file on disk stays current.
        let mut flush = || {
            if let (Err(e), Ok(())) = (sink.flush(), &io_result) {
                io_result = Err(e);
            }
        };
        let Some(msg) = next_batched(&rx, &mut flush) else {
            break;
        };
        let token = match msg {
            Done::Record(rec, m) => {
                let acc = phases.entry(rec.phase).or_default();
                let written = match (&rec.error, m) {
                    (None, Some(m)) => {
                        acc.add_success(&rec, &m);
                        sink.write_success(&rec, &m)
                    }
                    (Some(err), _) => {
                        acc.add_error(&rec, err);
                        sink.write_error(&rec, err)
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
                let _ = sink.flush();
                let _ = reply.send(phases.entry(phase).or_default().summarize());
            }
        }
    }
    io_result.and(sink.flush())
}
