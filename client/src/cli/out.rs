//! Where lines go. Messages go to standard output and everything else
//! (status lines, errors) to standard error, so `relay sub room > file`
//! keeps only messages. On a terminal both go through rustyline's external
//! printer, which prints above the prompt without garbling the line being
//! typed.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use rustyline::ExternalPrinter;

use client::Event;

use super::args::Format;
use super::format::{self, Style};

enum Sink {
    Streams,
    Printer(Mutex<Box<dyn ExternalPrinter + Send>>),
}

/// The one output of the CLI, shared by the input loop and the event thread.
pub struct Out {
    sink: Sink,
    pub style: Style,
    /// `-q`: no status lines.
    quiet: bool,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.sink {
            Sink::Streams => "Out(stdout, stderr)",
            Sink::Printer(_) => "Out(external printer)",
        })
    }
}

impl Out {
    pub fn streams(style: Style, quiet: bool) -> Out {
        Out {
            sink: Sink::Streams,
            style,
            quiet,
        }
    }

    pub fn printer(printer: Box<dyn ExternalPrinter + Send>, style: Style, quiet: bool) -> Out {
        Out {
            sink: Sink::Printer(Mutex::new(printer)),
            style,
            quiet,
        }
    }

    /// Prints a message line (standard output). Output errors (a closed
    /// pipe) are ignored: there is nobody left to tell.
    pub fn message(&self, text: &str) {
        self.bytes(text.as_bytes());
    }

    /// Prints bytes as they are, and a line break (`--raw` binary content).
    pub fn bytes(&self, bytes: &[u8]) {
        match &self.sink {
            Sink::Streams => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
            Sink::Printer(_) => self.print(&String::from_utf8_lossy(bytes)),
        }
    }

    /// A status line (standard error), unless `-q`.
    pub fn status(&self, text: &str) {
        if !self.quiet {
            self.stderr(&self.style.notice(text));
        }
    }

    /// Plain lines of help or lists (standard error, even with `-q`: they
    /// were asked for).
    pub fn info(&self, text: &str) {
        self.stderr(text);
    }

    /// An error line, `error: ...` (standard error, even with `-q`).
    pub fn error(&self, text: &str) {
        self.stderr(&self.style.error(text));
    }

    /// `disconnected: ...` (standard error, even with `-q`).
    pub fn disconnected(&self, text: &str) {
        self.stderr(&self.style.disconnected(text));
    }

    fn stderr(&self, text: &str) {
        match &self.sink {
            Sink::Streams => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
                let _ = err.flush();
            }
            Sink::Printer(_) => self.print(text),
        }
    }

    fn print(&self, text: &str) {
        if let Sink::Printer(printer) = &self.sink {
            let mut printer = printer.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = printer.print(format!("{text}\n"));
        }
    }
}

/// What [`Out::delivery`] printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A room's message.
    Message,
    /// A gap notice or a direct message.
    Notice,
    /// Nothing: the event is not a delivery.
    Nothing,
}

impl Out {
    /// Prints a delivery (a room message, a gap notice, a direct message)
    /// in `format`, on standard output, so a transcript keeps them in the
    /// order they came: a gap line stands where the messages are missing.
    pub fn delivery(&self, format: Format, event: &Event) -> Shown {
        let message = match event {
            Event::Message(message) => message,
            Event::Gap(gap) => {
                match format {
                    Format::Human => self.message(&self.style.gap(gap)),
                    Format::Json => self.message(&format::json_gap(gap)),
                    Format::Raw => self.error(&format::gap_text(gap)),
                }
                return Shown::Notice;
            }
            Event::Direct(direct) => {
                match format {
                    Format::Human => self.message(&self.style.direct(direct)),
                    Format::Json => self.message(&format::json_direct(direct)),
                    Format::Raw => self.bytes(&format::raw_body(&direct.body)),
                }
                return Shown::Notice;
            }
            _ => return Shown::Nothing,
        };
        match format {
            Format::Human => self.message(&self.style.message(message)),
            Format::Json => self.message(&format::json_message(message)),
            Format::Raw => self.bytes(&format::raw_content(message)),
        }
        Shown::Message
    }
}
