//! The log thread: every log line goes to stderr through a bounded queue that a thread of its
//! own drains, so a slow or blocked stderr (a full pipe, a stalled log shipper) never stalls a
//! request. When the queue is full, lines are dropped rather than waited for.
//!
//! The thread sleeps on the queue only while nothing is logged: the first line after a quiet
//! spell wakes it and is written at once. Once busy, it writes what has queued, then lets
//! lines gather for [`LINGER`] before it looks again, without being woken for each. Under load
//! that is a hundred wake-ups a second instead of one for every few lines (the sender's
//! `futex` call and two context switches each), and one write(2) carries many lines.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

/// Lines the queue holds; more are dropped until the thread catches up.
const QUEUE_LINES: usize = 128_000;
/// What the thread gathers before one write to its output.
const BUFFER_BYTES: usize = 64 * 1024;
/// How long the busy thread lets lines gather between two looks at the queue: the most a line
/// waits while others are being logged.
const LINGER: Duration = Duration::from_millis(10);
/// How long dropping the [`LogGuard`] waits for the thread to write what is queued.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

enum Message {
    Line(Vec<u8>),
    Shutdown,
}

/// Queues log lines for the log thread; cheap to clone. As a `MakeWriter`, each write is one
/// line (tracing-subscriber writes a formatted event with one `write_all`).
#[derive(Debug, Clone)]
pub struct LogWriter {
    queue: SyncSender<Message>,
}

impl Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.queue.try_send(Message::Line(buf.to_vec())) {
            // Full: stderr is not keeping up; the line is dropped rather than waited for.
            // Disconnected: the log thread has ended, at exit.
            Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Held until exit: dropping it writes out what is still queued (waiting at most a second).
#[derive(Debug)]
pub struct LogGuard {
    queue: SyncSender<Message>,
    finished: Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut message = Message::Shutdown;
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = self
            .finished
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Starts the log thread writing to `out`.
///
/// # Errors
///
/// When the thread cannot be started.
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogWriter, LogGuard)> {
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    let (done, finished) = mpsc::channel();
    thread::Builder::new()
        .name("certgate-log".to_owned())
        .spawn(move || {
            drain(&lines, &mut io::BufWriter::with_capacity(BUFFER_BYTES, out));
            let _ = done.send(());
        })?;
    Ok((
        LogWriter {
            queue: queue.clone(),
        },
        LogGuard { queue, finished },
    ))
}

/// The log thread: writes lines until told to stop. A write error drops the line; the thread
/// goes on draining, so the queue never fills up behind an output that has gone away.
fn drain<W: Write>(lines: &Receiver<Message>, out: &mut W) {
    // Quiet: wait to be woken by the next line.
    while let Ok(mut message) = lines.recv() {
        // Busy: write what has queued, flush, and look again after `LINGER`.
        loop {
            loop {
                match message {
                    Message::Line(line) => {
                        let _ = out.write_all(&line);
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

    use std::sync::{Arc, Condvar, Mutex};

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
        let sent = 2 * QUEUE_LINES;
        for i in 0..sent {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        output.unblock();
        drop(guard);
        let (text, _) = output.written();
        assert!(text.starts_with("line 0\n"), "{text:.40}");
        let written = text.lines().count();
        assert!(
            written > 1000 && written < sent,
            "{written} of {sent} lines written"
        );
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
        // After the thread has ended, a line is dropped without an error.
        (&writer).write_all(b"late\n").unwrap();
    }
}
