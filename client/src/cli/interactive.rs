//! The rustyline front end: prompt with the current room, history across
//! runs, tab completion, incoming lines printed above the prompt.

use std::sync::{Arc, Mutex};

use rustyline::Editor;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;

use super::complete::RelayHelper;
use super::link::State;
use super::session::{Flow, Session};

pub type RelayEditor = Editor<RelayHelper, DefaultHistory>;

/// A line editor with the Relay helper and history settings.
pub fn editor(rooms: Arc<Mutex<Vec<String>>>) -> Result<RelayEditor, String> {
    let config = Config::builder()
        .max_history_size(1000)
        .and_then(|b| b.history_ignore_dups(true))
        .map_err(|e| format!("cannot configure the line editor: {e}"))?
        .history_ignore_space(true)
        .completion_type(CompletionType::List)
        .build();
    let mut rl =
        RelayEditor::with_config(config).map_err(|e| format!("cannot set up the terminal: {e}"))?;
    rl.set_helper(Some(RelayHelper { rooms }));
    Ok(rl)
}

pub fn run(session: &mut Session, mut rl: RelayEditor) -> Flow {
    let history = session.history.clone();
    if let Some(path) = &history
        && let Err(error) = rl.load_history(path)
        && !matches!(&error, ReadlineError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        session.out.error(&format!(
            "cannot read the history file {}: {error}",
            path.display()
        ));
    }
    // Whether the last key was a Ctrl-C: a second one in a row quits.
    let mut interrupted = false;
    let flow = loop {
        match rl.readline(&session.prompt()) {
            Ok(line) => {
                interrupted = false;
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                }
                if session.link.state() == State::Gone {
                    if !line.trim().is_empty() {
                        session
                            .out
                            .error("not sent: the connection is gone (see above)");
                    }
                    break Flow::Lost;
                }
                match session.execute(&line) {
                    Flow::Continue => {}
                    other => break other,
                }
            }
            // Ctrl-C: the line is dropped; a second one in a row quits.
            Err(ReadlineError::Interrupted) => {
                if interrupted {
                    break Flow::Quit;
                }
                interrupted = true;
                session
                    .out
                    .info("(press Ctrl-C again to quit, or type /quit; Ctrl-D quits too)");
            }
            // Ctrl-D on an empty line.
            Err(ReadlineError::Eof) => break Flow::Quit,
            Err(error) => {
                session
                    .out
                    .error(&format!("cannot read the terminal: {error}"));
                break Flow::Quit;
            }
        }
    };
    // Append (merging under a file lock) rather than overwrite, so two CLIs
    // running at once both keep their lines.
    if let Some(path) = &history {
        let saved = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(ReadlineError::Io)
            .and_then(|()| rl.append_history(path));
        if let Err(error) = saved {
            session.out.error(&format!(
                "cannot save the history to {}: {error}",
                path.display()
            ));
        }
    }
    flow
}
