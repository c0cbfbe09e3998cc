//! Where lines go: standard output, or rustyline's external printer, which
//! prints above the prompt without garbling the line being typed.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use rustyline::ExternalPrinter;

enum Sink {
    Stdout,
    Printer(Mutex<Box<dyn ExternalPrinter + Send>>),
}

/// The one output of the CLI, shared by the input loop and the event thread.
pub struct Out {
    sink: Sink,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.sink {
            Sink::Stdout => "Out(stdout)",
            Sink::Printer(_) => "Out(external printer)",
        })
    }
}

impl Out {
    pub fn stdout() -> Out {
        Out { sink: Sink::Stdout }
    }

    pub fn printer(printer: Box<dyn ExternalPrinter + Send>) -> Out {
        Out {
            sink: Sink::Printer(Mutex::new(printer)),
        }
    }

    /// Prints one line. Output errors (a closed pipe) are ignored: there is
    /// nobody left to tell.
    pub fn line(&self, text: &str) {
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Sink::Printer(printer) => {
                let mut printer = printer.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = printer.print(format!("{text}\n"));
            }
        }
    }
}
