//! The log thread: every log line goes to stderr through a bounded queue that a thread of its
//! own drains, so a slow or blocked stderr (a full pipe, a stalled log shipper) never stalls a
//! request. When the queue is full, lines are dropped rather than waited for.
//!
//! The thread sleeps on the queue only while nothing is logged: the first line after a quiet
//! spell wakes it and is written at once. Once busy, it writes what has queued, then lets
//! lines gather for [`LINGER`] before it looks again, without being woken for each. Under load
//! that is a hundred wake-ups a second instead of one for every few lines (the sender's
//! `futex` call and two context switches each), and one write(2) carries many lines.
//!
//! A worker thread that asks for it ([`batch_this_thread`]) gathers its access lines in a
//! buffer of its own and queues them together: when the buffer is full, when the worker runs
//! out of work ([`LogWriter::flush_this_thread`]), [`BATCH_WAIT`] after the batch's first line
//! at the latest ([`batch_due`]), and before any other line it logs, so its lines keep their
//! order. A line then costs a copy, not an allocation and a trip through the
//! queue.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use tokio::sync::Notify;

/// Bytes the queue holds (about 100,000 access lines); more lines are dropped until the thread
/// catches up.
const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// What the queue counts for each message besides its bytes, so that many tiny lines are
/// bounded too.
const MESSAGE_OVERHEAD: usize = 64;
/// A worker's batch of lines is queued once it holds this much.
const BATCH_BYTES: usize = 16 * 1024;
/// ... or this long after its first line, however busy the worker is.
const BATCH_WAIT: Duration = Duration::from_millis(10);
/// What the thread gathers before one write to its output.
const BUFFER_BYTES: usize = 64 * 1024;
/// How long the busy thread lets lines gather between two looks at the queue: the most a line
/// waits while others are being logged.
const LINGER: Duration = Duration::from_millis(10);
/// How long dropping the [`LogGuard`] waits for the thread to write what is queued.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The lines dropped by the process's log thread (the first one started), for
/// `certgate_log_lines_dropped_total`.
static PROCESS_DROPPED: OnceLock<Arc<AtomicU64>> = OnceLock::new();

/// Log lines the process's log thread has dropped so far because its output did not keep up.
pub(crate) fn dropped_lines() -> u64 {
    PROCESS_DROPPED
        .get()
        .map_or(0, |dropped| dropped.load(Ordering::Relaxed))
}

thread_local! {
    /// Whether this thread batches its lines.
    static BATCHING: Cell<bool> = const { Cell::new(false) };
    /// The lines this thread has not queued yet.
    static BATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Told when this thread's batch gets its first line.
    static BATCH_STARTED: Arc<Notify> = Arc::new(Notify::new());
}

/// Makes this thread gather its [`LogWriter::write_batched`] lines; it must then call
/// [`LogWriter::flush_this_thread`] whenever it runs out of work, once [`batch_due`] resolves,
/// and before it ends.
pub(crate) fn batch_this_thread() {
    BATCHING.set(true);
}

/// Resolves [`BATCH_WAIT`] after this thread's batch got its first line (or at once, if it has
/// been that long). Polled on the batching thread, by a task of its own.
pub(crate) async fn batch_due() {
    let started = BATCH_STARTED.with(Arc::clone);
    started.notified().await;
    tokio::time::sleep(BATCH_WAIT).await;
}

enum Message {
    Lines(Vec<u8>),
    Shutdown,
}

/// Queues log lines for the log thread; cheap to clone. As a `MakeWriter`, each write is one
/// line (tracing-subscriber writes a formatted event with one `write_all`).
#[derive(Debug, Clone)]
pub struct LogWriter {
    queue: Sender<Message>,
    /// Bytes queued and not yet written, with [`MESSAGE_OVERHEAD`] for each message.
    queued: Arc<AtomicUsize>,
    /// Lines dropped because the queue was full or the thread had ended.
    dropped: Arc<AtomicU64>,
}

impl LogWriter {
    /// Queues `lines`, or drops them when the queue is full (stderr is not keeping up) or the
    /// log thread has ended (at exit).
    fn queue(&self, lines: Vec<u8>) {
        let cost = lines.len() + MESSAGE_OVERHEAD;
        if self.queued.fetch_add(cost, Ordering::Relaxed) + cost > QUEUE_BYTES {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            self.count_dropped(&lines);
            return;
        }
        if let Err(mpsc::SendError(Message::Lines(lines))) = self.queue.send(Message::Lines(lines))
        {
            self.count_dropped(&lines);
        }
    }

    fn count_dropped(&self, lines: &[u8]) {
        let count = lines.iter().filter(|byte| **byte == b'\n').count().max(1);
        self.dropped
            .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Lines this writer has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes one line: into this thread's batch when it batches, else straight to the queue.
    pub(crate) fn write_batched(&self, line: &[u8]) {
        if !BATCHING.get() {
            self.queue(line.to_vec());
            return;
        }
        let (first, full) = BATCH.with_borrow_mut(|batch| {
            if batch.capacity() == 0 {
                batch.reserve(BATCH_BYTES + 1024);
            }
            let first = batch.is_empty();
            batch.extend_from_slice(line);
            (first, batch.len() >= BATCH_BYTES)
        });
        if first {
            BATCH_STARTED.with(|started| started.notify_one());
        }
        if full {
            self.flush_this_thread();
        }
    }

    /// Queues this thread's batched lines.
    pub(crate) fn flush_this_thread(&self) {
        if !BATCHING.get() {
            return;
        }
        if let Some(lines) =
            BATCH.with_borrow_mut(|batch| (!batch.is_empty()).then(|| std::mem::take(batch)))
        {
            self.queue(lines);
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.queue(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        // This thread's batched lines go first: its lines stay in the order it logged them.
        self.flush_this_thread();
        self
    }
}

/// Held until exit: dropping it writes out what is still queued (waiting at most a second).
#[derive(Debug)]
pub struct LogGuard {
    queue: Sender<Message>,
    finished: Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if self.queue.send(Message::Shutdown).is_ok() {
            let _ = self.finished.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

/// Starts the log thread writing to `out`.
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogWriter, LogGuard)> {
    let (queue, lines) = mpsc::channel();
    let (done, finished) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let written = queued.clone();
    let dropped = Arc::new(AtomicU64::new(0));
    let _ = PROCESS_DROPPED.set(dropped.clone());
    thread::Builder::new()
        .name("certgate-log".to_owned())
        .spawn(move || {
            let mut out = io::BufWriter::with_capacity(BUFFER_BYTES, out);
            drain(&lines, &mut out, &written);
            // Closed before the guard hears of the end: a line sent after it is refused, and
            // so counted as dropped, instead of queued where nothing reads it.
            drop(lines);
            let _ = done.send(());
        })?;
    Ok((
        LogWriter {
            queue: queue.clone(),
            queued,
            dropped,
        },
        LogGuard { queue, finished },
    ))
}

/// The log thread: writes lines until told to stop. A write error drops the lines; the thread
/// goes on draining, so the queue never fills up behind an output that has gone away.
fn drain<W: Write>(lines: &Receiver<Message>, out: &mut W, queued: &AtomicUsize) {
    // Quiet: wait to be woken by the next line.
    while let Ok(mut message) = lines.recv() {
        // Busy: write what has queued, flush, and look again after `LINGER`.
        loop {
            loop {
                match message {
                    Message::Lines(bytes) => {
                        let _ = out.write_all(&bytes);
                        queued.fetch_sub(bytes.len() + MESSAGE_OVERHEAD, Ordering::Relaxed);
                    }
                    Message::Shutdown => {
                        let _ = out.flush();
                        return;
                    }
                }
                message = match lines.try_recv() {
                    Ok(next) => next,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => Message::Shutdown,
                };
            }
            let _ = out.flush();
            thread::sleep(LINGER);
            message = match lines.try_recv() {
                Ok(next) => next,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    use tracing_subscriber::fmt::MakeWriter as _;

    use super::*;

    /// What an [`Output`] was given, and whether its writes wait.
    #[derive(Default)]
    struct Written {
        bytes: Vec<u8>,
        writes: usize,
        blocked: bool,
    }

    /// An output that keeps what is written and counts the writes; while blocked, a write
    /// waits, as on a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Output {
        state: Arc<(Mutex<Written>, Condvar)>,
    }

    impl Output {
        fn blocked() -> Self {
            let output = Self::default();
            output.state.0.lock().unwrap().blocked = true;
            output
        }

        fn unblock(&self) {
            self.state.0.lock().unwrap().blocked = false;
            self.state.1.notify_all();
        }

        fn written(&self) -> (String, usize) {
            let state = self.state.0.lock().unwrap();
            (
                String::from_utf8(state.bytes.clone()).unwrap(),
                state.writes,
            )
        }

        /// Waits until `lines` lines were written.
        fn wait_for(&self, lines: usize) -> String {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (text, _) = self.written();
                if text.lines().count() >= lines {
                    return text;
                }
                assert!(Instant::now() < deadline, "only this was written: {text:?}");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl Write for Output {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, unblocked) = &*self.state;
            let mut state = unblocked
                .wait_while(lock.lock().unwrap(), |state| state.blocked)
                .unwrap();
            state.bytes.extend_from_slice(buf);
            state.writes += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_first_line_after_a_quiet_spell_is_written_at_once() {
        let output = Output::default();
        let (writer, _guard) = spawn(output.clone()).unwrap();
        for round in 0..3 {
            (&writer)
                .write_all(format!("line {round}\n").as_bytes())
                .unwrap();
            // Written without another line coming after it.
            output.wait_for(round + 1);
            // Longer than the linger: the thread is back to waiting for the next line.
            thread::sleep(LINGER * 3);
        }
    }

    #[test]
    fn lines_logged_while_busy_are_written_together_and_in_order() {
        let output = Output::default();
        let (writer, _guard) = spawn(output.clone()).unwrap();
        (&writer).write_all(b"first\n").unwrap();
        output.wait_for(1);
        // These queue while the thread lingers after the first line.
        for i in 0..500 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let text = output.wait_for(501);
        let expected: Vec<String> = std::iter::once("first".to_owned())
            .chain((0..500).map(|i| format!("line {i}")))
            .collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        let (_, writes) = output.written();
        assert!(writes < 10, "{writes} writes for 501 lines");
    }

    #[test]
    fn a_blocked_output_drops_lines_instead_of_stalling_the_writer() {
        let output = Output::blocked();
        let (writer, guard) = spawn(output.clone()).unwrap();
        // Returns although nothing is written: a blocking writer would hang here.
        let line = format!("{}\n", "x".repeat(1000));
        let sent = 2 * QUEUE_BYTES / line.len();
        for i in 0..sent {
            (&writer)
                .write_all(format!("{i:08} {line}").as_bytes())
                .unwrap();
        }
        output.unblock();
        drop(guard);
        let (text, _) = output.written();
        assert!(text.starts_with("00000000 x"), "{text:.40}");
        let written = text.lines().count();
        assert!(
            written > 1000 && written < sent,
            "{written} of {sent} lines written"
        );
        assert_eq!(
            writer.dropped(),
            u64::try_from(sent - written).unwrap(),
            "every line not written is counted as dropped"
        );
    }

    #[test]
    fn a_batching_thread_queues_its_lines_together_and_in_order() {
        let output = Output::default();
        let (writer, _guard) = spawn(output.clone()).unwrap();
        let (worker, seen) = (writer.clone(), output.clone());
        thread::spawn(move || {
            batch_this_thread();
            worker.write_batched(b"access 1\n");
            worker.write_batched(b"access 2\n");
            // Another line of the same thread: the batch goes first.
            worker.make_writer().write_all(b"warning\n").unwrap();
            worker.write_batched(b"access 3\n");
            // Held until the thread runs out of work.
            thread::sleep(LINGER * 5);
            assert_eq!(seen.written().0, "access 1\naccess 2\nwarning\n");
            worker.flush_this_thread();
            seen.wait_for(4);
            // A full batch is queued without waiting for the thread to run out of work.
            let line = format!("{}\n", "y".repeat(99));
            let lines = BATCH_BYTES.div_ceil(line.len());
            for _ in 0..lines {
                worker.write_batched(line.as_bytes());
            }
            seen.wait_for(4 + lines);
        })
        .join()
        .unwrap();
        // Other threads do not batch.
        writer.write_batched(b"elsewhere\n");
        let text = output.wait_for(4 + BATCH_BYTES.div_ceil(100) + 1);
        assert!(text.ends_with("elsewhere\n"), "{text}");
    }

    /// Waits for [`batch_due`], which must take exactly [`BATCH_WAIT`] (time is paused).
    async fn assert_due_after_the_wait() {
        let started = tokio::time::Instant::now();
        tokio::time::timeout(BATCH_WAIT * 10, batch_due())
            .await
            .expect("the batch never came due");
        assert_eq!(started.elapsed(), BATCH_WAIT);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_busy_thread_queues_its_first_line_after_the_batch_wait() {
        let output = Output::default();
        let (writer, _guard) = spawn(output.clone()).unwrap();
        batch_this_thread();
        writer.write_batched(b"access 1\n");
        writer.write_batched(b"access 2\n");
        // Nothing runs out of work here: only the wait queues the batch.
        assert_due_after_the_wait().await;
        writer.flush_this_thread();
        assert_eq!(output.wait_for(2), "access 1\naccess 2\n");
        // The next batch starts the wait again.
        writer.write_batched(b"access 3\n");
        assert_due_after_the_wait().await;
    }

    #[test]
    fn dropping_the_guard_writes_out_what_is_queued() {
        let output = Output::default();
        let (writer, guard) = spawn(output.clone()).unwrap();
        for i in 0..1000 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let (text, _) = output.written();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("line 999"));
        // After the thread has ended, a line is dropped without an error, and counted.
        (&writer).write_all(b"late\n").unwrap();
        assert_eq!(writer.dropped(), 1);
    }
}
