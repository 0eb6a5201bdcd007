//! Where log lines go: a buffer per thread, written to stderr by a background thread ten
//! times a second while there is traffic (sooner when a buffer fills up), and less and less
//! often, down to once a second, while there is none.
//!
//! Writing each line to stderr from the request's thread would let a slow log consumer stall
//! requests; handing each line to a writer thread would wake that thread once per request.
//! Here a line costs a copy into the thread's own buffer (its lock is only ever taken by that
//! thread and, briefly, by the flusher), and lines that would overflow a full buffer are
//! dropped and counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How often buffered lines are written out while lines keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The longest pause between looks at the buffers when nothing is logged: an idle proxy
/// should not wake a CPU ten times a second for nothing.
const IDLE_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Buffers: threads share one when there are more threads than this.
const SHARDS: usize = 16;
/// Most bytes one buffer holds before it drops lines.
const SHARD_CAPACITY: usize = 256 * 1024;
/// A buffer this full wakes the flusher early.
const WAKE_AT: usize = SHARD_CAPACITY / 4;

/// A `MakeWriter` for `tracing_subscriber`, and where the access lines go: cheap to clone,
/// every clone feeds the same flusher. Keep the [`FlushGuard`] alive until exit.
#[derive(Clone)]
pub(crate) struct LogSink {
    shared: Arc<Shared>,
}

struct Shared {
    shards: Vec<Mutex<Vec<u8>>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

/// Stops the flusher and writes what is left when dropped.
#[must_use = "dropping the guard stops logging"]
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    /// A sink writing to `out` (stderr in the binary), and the guard that flushes it at exit.
    pub(crate) fn new(out: impl Write + Send + 'static) -> std::io::Result<(LogSink, FlushGuard)> {
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("entra-proxy-log".into())
                .spawn(move || flush_loop(&shared, out))?
        };
        Ok((
            LogSink {
                shared: shared.clone(),
            },
            FlushGuard {
                shared,
                flusher: Some(flusher),
            },
        ))
    }

    /// Appends one whole line (or drops it when this thread's buffer is full).
    pub(super) fn push(&self, line: &[u8]) {
        let shard = &self.shared.shards[shard_of_this_thread()];
        let len = {
            let mut buf = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if buf.len() + line.len() > SHARD_CAPACITY {
                drop(buf);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            buf.extend_from_slice(line);
            buf.len()
        };
        if len >= WAKE_AT && len - line.len() < WAKE_AT {
            self.shared.wake.notify_one();
        }
    }
}

/// Each thread writes to its own buffer (threads are numbered on first use).
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

fn flush_loop(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    let mut pause = FLUSH_EVERY;
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        let mut wrote = false;
        for shard in &shared.shards {
            {
                let mut buf = shard.lock().unwrap_or_else(PoisonError::into_inner);
                if buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *buf, &mut spare);
            }
            // A failing stderr has nowhere to report to: the lines are lost either way.
            let _ = out.write_all(&spare);
            spare.clear();
            wrote = true;
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "entra-proxy: {dropped} log lines dropped: the log consumer reads stderr too slowly"
            );
            wrote = true;
        }
        if wrote {
            let _ = out.flush();
        }
        if stopping {
            return;
        }
        pause = next_pause(pause, wrote);
        let idle = shared
            .wake_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !shared.stop.load(Ordering::Acquire) {
            let _ = shared.wake.wait_timeout(idle, pause);
        }
    }
}

/// The wait before the next look at the buffers: [`FLUSH_EVERY`] after writing something,
/// doubling up to [`IDLE_FLUSH_EVERY`] while there is nothing to write.
fn next_pause(pause: Duration, wrote: bool) -> Duration {
    if wrote {
        FLUSH_EVERY
    } else {
        (pause * 2).min(IDLE_FLUSH_EVERY)
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        {
            let _idle = self
                .shared
                .wake_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.stop.store(true, Ordering::Release);
        }
        self.shared.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// The writer `tracing_subscriber` gets per event; it writes the event in one call.
pub(crate) struct LineWriter<'a>(&'a LogSink);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A `Write` into shared memory, to read what was written.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        /// A `tracing_subscriber` builder writing into this capture, without colour.
        pub(crate) fn subscriber(
            &self,
        ) -> tracing_subscriber::fmt::SubscriberBuilder<
            tracing_subscriber::fmt::format::DefaultFields,
            tracing_subscriber::fmt::format::Format,
            tracing_subscriber::filter::LevelFilter,
            impl Fn() -> Captured + Send + Sync + 'static,
        > {
            let w = self.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || w.clone())
        }
    }

    #[test]
    fn lines_from_every_thread_are_written_whole_by_exit() {
        let out = Captured::default();
        let (sink, guard) = LogSink::new(out.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let sink = sink.clone();
                s.spawn(move || {
                    for i in 0..100 {
                        LineWriter(&sink)
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 400, "{text}");
        for t in 0..4 {
            // Lines of one thread keep their order.
            let mine: Vec<_> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<_> = (0..100).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn the_flusher_slows_down_while_idle_and_speeds_up_on_traffic() {
        let mut pause = FLUSH_EVERY;
        let mut seen = vec![];
        for _ in 0..8 {
            pause = next_pause(pause, false);
            seen.push(pause.as_millis());
        }
        assert_eq!(seen, [200, 400, 800, 1000, 1000, 1000, 1000, 1000]);
        assert_eq!(next_pause(IDLE_FLUSH_EVERY, true), FLUSH_EVERY);
    }

    #[test]
    fn lines_are_written_without_waiting_for_exit() {
        let out = Captured::default();
        let (sink, _guard) = LogSink::new(out.clone()).unwrap();
        LineWriter(&sink).write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "hello\n");
    }

    /// A consumer that never reads: lines beyond the buffer are dropped and counted, and the
    /// writing thread never blocks.
    #[test]
    fn a_stalled_consumer_costs_lines_not_waiting() {
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Captured::default();
        let (sink, guard) = LogSink::new(Stalled(gate.clone(), out.clone())).unwrap();
        let line = [b'x'; 1023];
        let mut line = line.to_vec();
        line.push(b'\n');
        // Far more than the buffers hold while the consumer is stuck.
        for _ in 0..2_000 {
            LineWriter(&sink).write_all(&line).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = out.text();
        let written = text.lines().filter(|l| l.starts_with('x')).count();
        assert!(written < 2_000, "nothing was dropped");
        let report = text
            .lines()
            .find(|l| l.contains("log lines dropped"))
            .expect("the loss is reported");
        let dropped: usize = report
            .trim_start_matches("entra-proxy: ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(written + dropped, 2_000, "{report}");
    }
}
