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

use super::slices::{Slicer, Slicing, TimeSlice};
use super::{
    compute, ErrorDetails, Goodput, PhaseAccumulator, PhaseKind, PhaseSummary, RequestMetrics,
    RequestRecord,
};
use crate::tokenizer::Tokenizer;
use tokio_util::sync::CancellationToken;

/// Where the aggregator writes each processed request, in the order it processes them (the
/// JSONL export implements it). Called only from the aggregator thread.
pub trait RecordSink: Send {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()>;
    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()>;
    /// Called whenever the aggregator has caught up and before a summary is answered.
    fn flush(&mut self) -> std::io::Result<()>;
    /// Called once, after the last record.
    fn finish(&mut self) -> std::io::Result<()> {
        self.flush()
    }
    /// Called when a phase's records are all written, before its summary is answered.
    fn phase_end(&mut self) -> std::io::Result<()> {
        self.flush()
    }
}

/// No sink: records are counted in the summaries and not written (`--export-level summary`).
impl<T: RecordSink> RecordSink for Option<T> {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.write_success(rec, m))
    }

    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.write_error(rec, err))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.flush())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.finish())
    }

    fn phase_end(&mut self) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.phase_end())
    }
}

/// How long a processing thread lets its queue fill before draining it again.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

enum Work {
    Record(Box<RequestRecord>),
    Marker(u64),
}

type SummaryRequest = (PhaseKind, oneshot::Sender<PhaseSummary>);

enum Done {
    Record(Box<RequestRecord>, Option<Box<RequestMetrics>>),
    Marker(u64),
    Summarize(u64, PhaseKind, oneshot::Sender<PhaseSummary>),
    /// The profiling phase's time slices (asked after its summary, so every record is in).
    Slices(oneshot::Sender<Vec<TimeSlice>>),
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
    /// Cancelled at the sink's first write error (the error itself comes from `finish`).
    sink_failed: CancellationToken,
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
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
    /// Starts the threads; every processed record goes to `sink`, and each phase also counts
    /// the requests that meet `goodput`, when given. Fails only when the OS refuses a thread.
    pub fn start(
        tokenizer: Tokenizer,
        use_server_counts: bool,
        goodput: Option<Goodput>,
        sink: impl RecordSink + 'static,
    ) -> std::io::Result<Self> {
        Self::start_sliced(tokenizer, use_server_counts, goodput, sink, None, false)
    }

    /// [`RecordProcessor::start`], also splitting the profiling phase into time slices
    /// (`--slice-duration`) when `slicing` is given, and with `hdr` building each phase's
    /// mergeable histograms ([`PhaseSummary::hdr`], a shard's `_hdr.json`).
    pub fn start_sliced(
        tokenizer: Tokenizer,
        use_server_counts: bool,
        goodput: Option<Goodput>,
        sink: impl RecordSink + 'static,
        slicing: Option<Slicing>,
        hdr: bool,
    ) -> std::io::Result<Self> {
        let goodput = goodput.map(Arc::new);
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
                                .then(|| Box::new(compute(&rec, &tokenizer, use_server_counts)));
                            Done::Record(rec, m)
                        }
                        Work::Marker(t) => Done::Marker(t),
                    };
                    if done_tx.send(out).is_err() {
                        break;
                    }
                }
            })?);
        }
        let sink_failed = CancellationToken::new();
        let failed = sink_failed.clone();
        let aggregator = spawn("aiperf-aggregate", move || {
            aggregate(done_rx, n, sink, failed, goodput, slicing, hdr)
        })?;
        Ok(Self {
            tx: Some(RecordSender {
                queues: queues.into(),
                next: Arc::new(AtomicUsize::new(0)),
            }),
            done_tx,
            next_token: 0,
            threads,
            aggregator,
            sink_failed,
        })
    }

    /// Cancelled when the sink fails to write (a full disk): the run should stop sending.
    pub fn sink_failed(&self) -> CancellationToken {
        self.sink_failed.clone()
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

    /// The profiling phase's time slices (empty without slicing). Ask after
    /// `summarize(PhaseKind::Profiling)` has answered: every profiling record is in by then.
    pub async fn timeslices(&mut self) -> Vec<TimeSlice> {
        if self.tx.is_none() {
            return Vec::new();
        }
        let (reply, rx) = oneshot::channel();
        if self.done_tx.send(Done::Slices(reply)).is_err() {
            return Vec::new();
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
    failed: CancellationToken,
    goodput: Option<Arc<Goodput>>,
    slicing: Option<Slicing>,
    hdr: bool,
) -> std::io::Result<()> {
    let mut phases: BTreeMap<PhaseKind, PhaseAccumulator> = BTreeMap::new();
    // The profiling phase's slices; `None` (nothing done per record) without slicing.
    let mut slicer = slicing.map(|s| Slicer::new(s, goodput.clone()));
    let new_phase = || PhaseAccumulator {
        hdr,
        ..PhaseAccumulator::new(goodput.clone())
    };
    let mut io_result = Ok(());
    // token -> (markers seen, the request once it arrived)
    let mut pending: HashMap<u64, (usize, Option<SummaryRequest>)> = HashMap::new();
    loop {
        // Caught up: flush, so the file on disk stays current.
        let mut flush = || {
            if let (Err(e), Ok(())) = (sink.flush(), &io_result) {
                io_result = Err(e);
                failed.cancel();
            }
        };
        let Some(msg) = next_batched(&rx, &mut flush) else {
            break;
        };
        let token = match msg {
            Done::Record(rec, m) => {
                let acc = phases.entry(rec.phase).or_insert_with(new_phase);
                let slices = slicer
                    .as_mut()
                    .filter(|_| rec.phase == PhaseKind::Profiling);
                let written = match (&rec.error, m) {
                    (None, Some(mut m)) => {
                        m.good = goodput.as_ref().map(|g| g.is_good(&m));
                        acc.add_success(&rec, &m);
                        if let Some(s) = slices {
                            s.add_success(&rec, &m);
                        }
                        sink.write_success(&rec, &m)
                    }
                    (Some(err), _) => {
                        acc.add_error(&rec, err);
                        if let Some(s) = slices {
                            s.add_error(&rec, err);
                        }
                        sink.write_error(&rec, err)
                    }
                    (None, None) => Ok(()),
                };
                if let (Err(e), Ok(())) = (written, &io_result) {
                    io_result = Err(e);
                    failed.cancel();
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
            Done::Slices(reply) => {
                let _ = reply.send(slicer.as_mut().map(Slicer::summarize).unwrap_or_default());
                continue;
            }
        };
        if let Some((seen, Some(_))) = pending.get(&token) {
            if *seen == threads {
                let Some((_, Some((phase, reply)))) = pending.remove(&token) else {
                    continue;
                };
                if let (Err(e), Ok(())) = (sink.phase_end(), &io_result) {
                    io_result = Err(e);
                    failed.cancel();
                }
                let _ = reply.send(phases.entry(phase).or_insert_with(new_phase).summarize());
            }
        }
    }
    io_result.and_then(|()| sink.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::metrics::MetricValue;

    /// What the sink was given, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Seen {
        /// (request index, OSL, TTFT ms)
        Success(u64, u64, Option<f64>),
        /// (request index, error code)
        Error(u64, Option<u16>),
        Flush,
    }

    /// A `Vec`-backed sink shared with the test; `fail_writes` makes every write fail.
    #[derive(Clone, Default)]
    struct VecSink {
        seen: Arc<Mutex<Vec<Seen>>>,
        fail_writes: bool,
    }

    impl VecSink {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        /// The records only (flushes left out).
        fn records(&self) -> Vec<Seen> {
            self.seen()
                .into_iter()
                .filter(|s| *s != Seen::Flush)
                .collect()
        }

        fn push(&self, s: Seen) -> std::io::Result<()> {
            self.seen.lock().unwrap().push(s);
            if self.fail_writes {
                return Err(std::io::Error::other("disk full"));
            }
            Ok(())
        }
    }

    impl RecordSink for VecSink {
        fn write_success(
            &mut self,
            rec: &RequestRecord,
            m: &RequestMetrics,
        ) -> std::io::Result<()> {
            self.push(Seen::Success(rec.request_index, m.osl, m.ttft_ms))
        }

        fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
            self.push(Seen::Error(rec.request_index, err.code))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.seen.lock().unwrap().push(Seen::Flush);
            Ok(())
        }
    }

    fn tokenizer() -> Tokenizer {
        Tokenizer::load("builtin").unwrap()
    }

    /// A streamed success: "hello world" (2 tokens in o200k_base), sent at 1 ms, content
    /// events at `1 + ttft_ms` and 5 ms later.
    fn success(phase: PhaseKind, index: u64, ttft_ms: u64) -> RequestRecord {
        let first = (1 + ttft_ms) * 1_000_000;
        RequestRecord {
            phase,
            request_index: index,
            conversation_index: index as usize,
            turn_index: 0,
            url_index: 0,
            streaming: true,
            start_ns: 1_000_000,
            scheduled_ns: None,
            ack_ns: Some(first),
            end_ns: first + 5_000_100,
            content_ns: vec![first, first + 5_000_000],
            first_output_ns: Some(first),
            output_text: "hello world".into(),
            reasoning_text: String::new(),
            usage: None,
            isl: 10,
            error: None,
            cancelled: false,
            requested_osl: None,
            ids: Default::default(),
            http: Default::default(),
        }
    }

    fn failure(phase: PhaseKind, index: u64, code: u16) -> RequestRecord {
        let mut rec = success(phase, index, 0);
        rec.content_ns.clear();
        rec.first_output_ns = None;
        rec.output_text.clear();
        rec.error = Some(ErrorDetails::new(Some(code), "HTTPError", "boom"));
        rec
    }

    fn avg(summary: &PhaseSummary, tag: &str) -> f64 {
        match summary.get(tag) {
            Some(MetricValue::Avg(v)) => *v,
            other => panic!("{tag}: {other:?}"),
        }
    }

    /// Profiling records land in the slice of their start; warmup is never sliced; the
    /// slices add up to the phase.
    #[tokio::test]
    async fn profiling_records_are_sliced_by_their_start() {
        // 10 ms slices; the run clock's origin is wall 5 ms, so run-clock 0..5 ms is slice 0.
        let slicing = Slicing {
            duration_ns: 10_000_000,
            wall_origin_ns: 5_000_000,
        };
        let mut p = RecordProcessor::start_sliced(
            tokenizer(),
            false,
            None,
            VecSink::default(),
            Some(slicing),
            false,
        )
        .expect("threads start");
        let tx = p.sender();
        tx.send(success(PhaseKind::Warmup, 0, 100)).unwrap();
        let at = |phase, i, start_ms: u64, ttft| {
            let mut r = success(phase, i, ttft);
            let shift = start_ms * 1_000_000 - r.start_ns;
            r.start_ns += shift;
            r.end_ns += shift;
            r.ack_ns = r.ack_ns.map(|t| t + shift);
            r.first_output_ns = r.first_output_ns.map(|t| t + shift);
            r.content_ns.iter_mut().for_each(|t| *t += shift);
            r
        };
        // Slice 0 (wall 0-10 ms): starts at 1 and 4 ms; slice 2 (wall 20-30 ms): 16 ms, and
        // a failure at 24 ms is slice 2 as well (wall 29 ms). Nothing in slice 1.
        tx.send(at(PhaseKind::Profiling, 1, 1, 10)).unwrap();
        tx.send(at(PhaseKind::Profiling, 2, 4, 20)).unwrap();
        tx.send(at(PhaseKind::Profiling, 3, 16, 50)).unwrap();
        let mut f = at(PhaseKind::Profiling, 4, 24, 0);
        f.error = Some(ErrorDetails::new(Some(500), "HTTPError", "boom"));
        f.content_ns.clear();
        f.first_output_ns = None;
        tx.send(f).unwrap();
        let phase = p.summarize(PhaseKind::Profiling).await;
        let slices = p.timeslices().await;
        assert_eq!(slices.len(), 2, "{slices:?}");
        assert_eq!(
            slices
                .iter()
                .map(|s| (s.start_ns, s.end_ns))
                .collect::<Vec<_>>(),
            [(0, 10_000_000), (20_000_000, 30_000_000)]
        );
        let counts: Vec<(u64, u64)> = slices
            .iter()
            .map(|s| (s.summary.success, s.summary.error_count))
            .collect();
        assert_eq!(counts, [(2, 0), (1, 1)]);
        let total: u64 = counts.iter().map(|(a, b)| a + b).sum();
        assert_eq!(total, phase.success + phase.error_count);
        let ttft = |s: &PhaseSummary| match s.get("time_to_first_token") {
            Some(MetricValue::Stats(st)) => st.avg,
            other => panic!("{other:?}"),
        };
        assert_eq!(ttft(&slices[0].summary), 15.0);
        assert_eq!(ttft(&slices[1].summary), 50.0);
        drop(tx);
        p.finish().await.unwrap();

        // Without slicing: no slices, whatever was sent.
        let mut p = RecordProcessor::start(tokenizer(), false, None, VecSink::default()).unwrap();
        p.sender()
            .send(success(PhaseKind::Profiling, 0, 10))
            .unwrap();
        p.summarize(PhaseKind::Profiling).await;
        assert!(p.timeslices().await.is_empty());
        p.finish().await.unwrap();
    }

    #[tokio::test]
    async fn summaries_count_and_measure_each_phase_and_the_sink_gets_every_record() {
        let sink = VecSink::default();
        let mut p =
            RecordProcessor::start(tokenizer(), false, None, sink.clone()).expect("threads start");
        let tx = p.sender();
        for i in 0..3 {
            tx.send(success(PhaseKind::Warmup, i, 100)).unwrap();
        }
        let warmup = p.summarize(PhaseKind::Warmup).await;
        assert_eq!((warmup.success, warmup.error_count), (3, 0));
        // Everything sent before the summary request reached the sink before the answer.
        let mut warmup_seen = sink.records();
        warmup_seen.sort_by_key(|s| match s {
            Seen::Success(i, ..) | Seen::Error(i, _) => *i,
            Seen::Flush => u64::MAX,
        });
        assert_eq!(
            warmup_seen,
            (0..3)
                .map(|i| Seen::Success(i, 2, Some(100.0)))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            sink.seen().last(),
            Some(&Seen::Flush),
            "flushed before answering"
        );

        // TTFTs of 10, 20, 30, 40 ms; two HTTP 500s and a 503.
        for (i, ttft) in [(10, 10), (11, 20), (12, 30), (13, 40)] {
            tx.send(success(PhaseKind::Profiling, i, ttft)).unwrap();
        }
        tx.send(failure(PhaseKind::Profiling, 14, 500)).unwrap();
        tx.send(failure(PhaseKind::Profiling, 15, 503)).unwrap();
        tx.send(failure(PhaseKind::Profiling, 16, 500)).unwrap();
        let s = p.summarize(PhaseKind::Profiling).await;
        assert_eq!((s.success, s.error_count, s.cancelled), (4, 3, 0));
        assert_eq!(avg(&s, "request_count"), 4.0);
        assert_eq!(avg(&s, "error_request_count"), 3.0);
        assert_eq!(avg(&s, "total_output_tokens"), 8.0);
        assert_eq!(avg(&s, "total_input_tokens"), 40.0);
        // Earliest start 1 ms, last content at 1 + 40 + 5 ms: 45 ms.
        assert!((avg(&s, "benchmark_duration") - 0.045).abs() < 1e-12);
        let Some(MetricValue::Stats(ttft)) = s.get("time_to_first_token") else {
            panic!("no TTFT stats")
        };
        assert_eq!(
            (ttft.min, ttft.max, ttft.avg, ttft.count),
            (10.0, 40.0, 25.0, 4)
        );
        let Some(MetricValue::Stats(latency)) = s.get("request_latency") else {
            panic!("no latency stats")
        };
        assert_eq!((latency.min, latency.max), (15.0, 45.0));
        // Errors grouped, most frequent first.
        let errors: Vec<(Option<u16>, u64)> = s.errors.iter().map(|(e, c)| (e.code, *c)).collect();
        assert_eq!(errors, [(Some(500), 2), (Some(503), 1)]);
        // The warmup's records stay in the warmup.
        assert_eq!(p.summarize(PhaseKind::Warmup).await.success, 3);

        drop(tx);
        p.finish().await.unwrap();
        let records = sink.records();
        assert_eq!(records.len(), 3 + 7, "each record written once");
        // The warmup's records all came before the profiling ones.
        let first_profiling = records
            .iter()
            .position(|s| matches!(s, Seen::Success(i, ..) | Seen::Error(i, _) if *i >= 10))
            .unwrap();
        assert_eq!(first_profiling, 3);
        assert!(records.contains(&Seen::Success(13, 2, Some(40.0))));
        assert!(records.contains(&Seen::Error(15, Some(503))));
        assert_eq!(sink.seen().last(), Some(&Seen::Flush), "flushed at finish");
    }

    #[tokio::test]
    async fn records_reach_the_sink_in_the_order_they_were_summarized() {
        let sink = VecSink::default();
        let mut p =
            RecordProcessor::start(tokenizer(), false, None, sink.clone()).expect("threads start");
        let tx = p.sender();
        let mut expected = Vec::new();
        for i in 0..6 {
            if i % 3 == 2 {
                tx.send(failure(PhaseKind::Profiling, i, 500)).unwrap();
                expected.push(Seen::Error(i, Some(500)));
            } else {
                tx.send(success(PhaseKind::Profiling, i, i + 1)).unwrap();
                expected.push(Seen::Success(i, 2, Some((i + 1) as f64)));
            }
            let s = p.summarize(PhaseKind::Profiling).await;
            assert_eq!(s.success + s.error_count, i + 1);
        }
        drop(tx);
        p.finish().await.unwrap();
        assert_eq!(sink.records(), expected);
        assert_eq!(sink.seen().last(), Some(&Seen::Flush));
    }

    #[tokio::test]
    async fn server_counts_are_used_when_asked() {
        let sink = VecSink::default();
        let mut p =
            RecordProcessor::start(tokenizer(), true, None, sink.clone()).expect("threads start");
        let mut rec = success(PhaseKind::Profiling, 0, 10);
        rec.usage = Some(crate::metrics::Usage {
            prompt_tokens: Some(99),
            completion_tokens: Some(7),
            total_tokens: None,
        });
        p.sender().send(rec).unwrap();
        let s = p.summarize(PhaseKind::Profiling).await;
        assert_eq!(avg(&s, "total_output_tokens"), 7.0);
        assert_eq!(avg(&s, "total_input_tokens"), 99.0);
        assert_eq!(
            s.count_mismatches, 1,
            "2 client tokens against 7 from the server"
        );
        p.finish().await.unwrap();
        assert_eq!(sink.records(), [Seen::Success(0, 7, Some(10.0))]);
    }

    #[tokio::test]
    async fn a_failing_sink_fails_finish_but_not_the_summary() {
        let sink = VecSink {
            fail_writes: true,
            ..Default::default()
        };
        let mut p =
            RecordProcessor::start(tokenizer(), false, None, sink.clone()).expect("threads start");
        p.sender()
            .send(success(PhaseKind::Profiling, 0, 10))
            .unwrap();
        p.sender()
            .send(failure(PhaseKind::Profiling, 1, 500))
            .unwrap();
        let s = p.summarize(PhaseKind::Profiling).await;
        assert_eq!((s.success, s.error_count), (1, 1));
        let err = p.finish().await.unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(sink.records().len(), 2, "later records are still offered");
    }

    #[tokio::test]
    async fn a_phase_without_records_has_an_empty_summary() {
        let sink = VecSink::default();
        let mut p =
            RecordProcessor::start(tokenizer(), false, None, sink.clone()).expect("threads start");
        let s = p.summarize(PhaseKind::Warmup).await;
        assert_eq!((s.success, s.error_count), (0, 0));
        assert!(s.get("time_to_first_token").is_none());
        assert!(s.get("benchmark_duration").is_none());
        p.finish().await.unwrap();
        assert!(sink.records().is_empty());
        assert_eq!(sink.seen().last(), Some(&Seen::Flush));
    }
}
