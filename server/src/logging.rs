//! Logs: `tracing` events, filtered RUST_LOG-style, written by a thread of
//! their own so that no client can stall the server or fill its disk
//! through them.
//!
//! Two rules keep a client from driving the log:
//!
//! - **The writer never blocks.** Connection and accept threads hand each
//!   formatted line to a bounded queue ([`QUEUE_LINES`] lines of at most
//!   [`MAX_LINE`] bytes); the `relay-log` thread writes them to stderr. When
//!   stderr is not being read and the queue is full, lines are dropped and
//!   counted ([`lines_dropped`]); the writer says how many once it can write
//!   again.
//! - **What a client can trigger at will is bounded.** Per-event lines a
//!   client controls (room created/deleted, each frame) are at DEBUG. The
//!   per-connection lines kept at INFO/WARN (connected, disconnected, a
//!   fatal ERROR, refusals, authentication failures) go through a
//!   [`Throttle`]: at most [`Throttle::LINES`] per category in
//!   [`Throttle::WINDOW`], then one summary line, "N more like this in the
//!   last 10 s".

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Lines the queue holds while stderr is slow; past it they are dropped.
pub const QUEUE_LINES: usize = 4096;
/// Longest line kept, in bytes; longer ones are cut (a line can quote
/// what a client sent). With [`QUEUE_LINES`], bounds the queue at 16 MiB.
pub const MAX_LINE: usize = 4096;

/// How lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `2026-01-01T00:00:00.000Z INFO  {conn=1 addr=..} message`, for people.
    #[default]
    Human,
    /// One JSON object a line, for log shippers; connection fields under
    /// `span`.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "human" | "text" => Ok(Format::Human),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown log format {text:?}; use human or json")),
        }
    }
}

/// Lines dropped because stderr was not being read, since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The filter in force, replaceable by [`reload_filter`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The queue to the writer thread, for [`LogGuard`]'s flush.
static QUEUE: OnceLock<Sender<Message>> = OnceLock::new();

/// Log lines dropped so far because stderr could not take them.
pub fn lines_dropped() -> u64 {
    DROPPED.load(Relaxed)
}

enum Message {
    Line(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flush(Sender<()>),
}

/// Installs the logger: `filter` in RUST_LOG syntax (`info`,
/// `warn,server=debug`). Returns a guard that flushes on drop; an error
/// names the filter that does not parse.
pub fn init(filter: &str, format: Format) -> Result<LogGuard, String> {
    let filter = parse_filter(filter)?;
    let (filter, handle) = reload::Layer::new(filter);
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_LINES);
    std::thread::Builder::new()
        .name("relay-log".into())
        .spawn(move || write_lines(&rx))
        .map_err(|error| format!("cannot start the log thread: {error}"))?;
    let pipe = Pipe { tx: tx.clone() };
    let output = match format {
        Format::Human => tracing_subscriber::fmt::layer()
            .event_format(Human)
            .with_ansi(false)
            .with_writer(pipe)
            .boxed(),
        Format::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(pipe)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|error| format!("cannot install the logger: {error}"))?;
    let _ = FILTER.set(handle);
    let _ = QUEUE.set(tx);
    Ok(LogGuard { _private: () })
}

/// Replaces the filter in force (for SIGHUP); on error the old one stays
/// and the message names the bad filter.
pub fn reload_filter(filter: &str) -> Result<(), String> {
    let parsed = parse_filter(filter)?;
    FILTER
        .get()
        .ok_or_else(|| "the logger is not installed".to_owned())?
        .reload(parsed)
        .map_err(|error| format!("cannot change the log filter: {error}"))
}

fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|error| format!("bad log filter {filter:?}: {error}; try info, warn or debug"))
}

/// Flushes queued lines when dropped, so the last lines of a normal stop
/// (the final counters) are not lost; waits at most two seconds for a
/// stderr nobody reads.
#[derive(Debug)]
#[must_use = "dropping the guard flushes the log; keep it until exit"]
pub struct LogGuard {
    _private: (),
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush();
    }
}

/// Waits (two seconds at most) until every line logged so far is written;
/// for a stop that skips destructors (`std::process::exit`).
pub fn flush() {
    const GRACE: Duration = Duration::from_secs(2);
    if let Some(queue) = QUEUE.get() {
        let (done, wait) = crossbeam_channel::bounded(1);
        if queue.send_timeout(Message::Flush(done), GRACE).is_ok() {
            let _ = wait.recv_timeout(GRACE);
        }
    }
}

/// What tracing writes through: hands each line to the queue, never
/// waiting.
#[derive(Clone)]
struct Pipe {
    tx: Sender<Message>,
}

impl Write for Pipe {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let kept = if line.len() > MAX_LINE {
            let mut cut = line[..MAX_LINE - 4].to_vec();
            cut.extend_from_slice(b"...\n");
            cut
        } else {
            line.to_vec()
        };
        match self.tx.try_send(Message::Line(kept)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Relaxed);
            }
        }
        // All of it, always: a logger must not make tracing retry.
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Pipe {
    type Writer = Pipe;

    fn make_writer(&'a self) -> Pipe {
        self.clone()
    }
}

/// The `relay-log` thread: writes what is queued, in batches; reports
/// dropped lines once it can write again; wakes each second to write the
/// throttles' summaries.
fn write_lines(rx: &Receiver<Message>) {
    let mut reported = 0;
    let mut batch = Vec::new();
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(message) => message,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Throttle::sweep_all();
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let mut flushes = Vec::new();
        for message in std::iter::once(first).chain(rx.try_iter().take(QUEUE_LINES)) {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Flush(done) => flushes.push(done),
            }
        }
        let dropped = DROPPED.load(Relaxed);
        if dropped > reported {
            let line = format!(
                "{} WARN  {} log lines dropped: stderr was not read fast enough\n",
                utc_now(),
                dropped - reported
            );
            batch.extend_from_slice(line.as_bytes());
            reported = dropped;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(&batch);
        let _ = stderr.flush();
        drop(stderr);
        batch.clear();
        if batch.capacity() > 1 << 20 {
            batch.shrink_to(64 * 1024);
        }
        for done in flushes {
            let _ = done.send(());
        }
        Throttle::sweep_all();
    }
}

/// The human format: the old logger's, plus the connection's fields.
///
/// ```text
/// 2026-01-01T00:00:00.000Z INFO  {conn=3 addr=127.0.0.1:5555 user="ann"} c3: closing: ...
/// ```
struct Human;

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(
            writer,
            "{} {:<5} ",
            utc_now(),
            event.metadata().level().as_str()
        )?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}} ")?;
                }
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A budget of lines for one kind of event a client can cause at will.
#[derive(Debug)]
pub struct Throttle {
    /// Names the kind in the summary line.
    what: &'static str,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Connected, disconnected, TLS established, and fatal ERRORs.
pub(crate) static CONNECTIONS: Throttle = Throttle::new("connection");
/// Connections turned away (full, per-address cap, no thread, socket
/// setup).
pub(crate) static REFUSALS: Throttle = Throttle::new("refused connection");
/// Failed authentications.
pub(crate) static AUTH_FAILURES: Throttle = Throttle::new("authentication failure");
/// Relayed batches dropped or refused between cluster nodes.
pub(crate) static CLUSTER: Throttle = Throttle::new("cluster drop");

impl Throttle {
    /// Lines of one kind logged per window.
    pub const LINES: u32 = 100;
    /// The window, and so how often a summary may appear.
    pub const WINDOW: Duration = Duration::from_secs(10);

    const fn new(what: &'static str) -> Throttle {
        Throttle {
            what,
            state: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// True if one more line may be logged now; otherwise it is counted
    /// for the summary. Call only when the line's level is enabled.
    pub fn admit(&self) -> bool {
        let now = Instant::now();
        let mut window = self.state.lock();
        let owed = Self::roll(&mut window, now);
        let admitted = if window.logged < Self::LINES {
            window.logged += 1;
            true
        } else {
            window.suppressed += 1;
            false
        };
        drop(window);
        self.summarise(owed);
        admitted
    }

    /// Starts a new window if the old one is over; returns the lines the
    /// old one suppressed.
    fn roll(window: &mut Window, now: Instant) -> u64 {
        match window.started {
            Some(started) if now.duration_since(started) < Self::WINDOW => 0,
            _ => {
                window.started = Some(now);
                window.logged = 0;
                std::mem::take(&mut window.suppressed)
            }
        }
    }

    fn summarise(&self, suppressed: u64) {
        if suppressed > 0 {
            // Not under any connection's span: it is about many.
            tracing::warn!(
                parent: None,
                "{suppressed} more {} lines like this in the last {} s were not logged",
                self.what,
                Self::WINDOW.as_secs()
            );
        }
    }

    /// Writes the summary of a window that ended with nothing after it.
    fn sweep(&self) {
        let now = Instant::now();
        let mut window = self.state.lock();
        let owed = match window.started {
            Some(started) if now.duration_since(started) >= Self::WINDOW => {
                Self::roll(&mut window, now)
            }
            _ => 0,
        };
        drop(window);
        self.summarise(owed);
    }

    fn sweep_all() {
        for throttle in [&CONNECTIONS, &REFUSALS, &AUTH_FAILURES] {
            throttle.sweep();
        }
    }
}

/// Logs through a [`Throttle`] at a constant level:
/// `throttled!(CONNECTIONS, INFO, "c{id}: connected from {addr}")`.
macro_rules! throttled {
    ($throttle:expr, $level:ident, $($arg:tt)+) => {
        if tracing::enabled!(tracing::Level::$level) && $throttle.admit() {
            tracing::event!(tracing::Level::$level, $($arg)+);
        }
    };
}
pub(crate) use throttled;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn throttle_admits_its_budget_then_counts() {
        let throttle = super::Throttle::new("test");
        let admitted = (0..super::Throttle::LINES + 50)
            .filter(|_| throttle.admit())
            .count();
        assert_eq!(admitted, super::Throttle::LINES as usize);
        assert_eq!(throttle.state.lock().suppressed, 50);
    }
}
