//! Tab completion: command names after a leading `/`, and the rooms joined
//! after `/join` and `/leave`.

use std::sync::{Arc, Mutex, PoisonError};

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::NAMES;

/// The rustyline helper; sees the joined rooms through a shared list that the
/// session keeps up to date.
#[derive(Debug)]
pub struct RelayHelper {
    pub rooms: Arc<Mutex<Vec<String>>>,
}

impl RelayHelper {
    /// Candidates for `line` up to the cursor: where the completed word starts
    /// and the full words it could become.
    pub fn candidates(&self, line: &str) -> (usize, Vec<String>) {
        let lead = line.len() - line.trim_start().len();
        let body = &line[lead..];
        // Only commands are completed; a message is the user's own text.
        let Some(body) = body.strip_prefix('/') else {
            return (line.len(), Vec::new());
        };
        let slash = 1;
        match body.split_once(' ') {
            None => {
                let words = NAMES
                    .iter()
                    .filter(|name| name.starts_with(body))
                    .map(|name| format!("{name} "))
                    .collect();
                (lead + slash, words)
            }
            Some(("join" | "leave", rest)) => {
                let typed = rest.trim_start();
                let start = line.len() - typed.len();
                let rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
                let words = rooms
                    .iter()
                    .filter(|room| room.starts_with(typed))
                    .cloned()
                    .collect();
                (start, words)
            }
            Some(_) => (line.len(), Vec::new()),
        }
    }
}

impl Completer for RelayHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.candidates(line.get(..pos).unwrap_or(line)))
    }
}

impl Hinter for RelayHelper {
    type Hint = String;
}

impl Highlighter for RelayHelper {}

impl Validator for RelayHelper {}

impl Helper for RelayHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(rooms: &[&str]) -> RelayHelper {
        RelayHelper {
            rooms: Arc::new(Mutex::new(rooms.iter().map(|r| r.to_string()).collect())),
        }
    }

    #[test]
    fn completes_command_names() {
        let h = helper(&[]);
        assert_eq!(h.candidates("/jo"), (1, vec!["join ".to_string()]));
        assert_eq!(h.candidates("/he"), (1, vec!["help ".to_string()]));
        assert_eq!(h.candidates("  /q"), (3, vec!["quit ".to_string()]));
        assert_eq!(h.candidates("/x").1, Vec::<String>::new());
        // A message is not completed.
        assert_eq!(h.candidates("jo").1, Vec::<String>::new());
    }

    #[test]
    fn completes_joined_rooms_after_join_and_leave() {
        let h = helper(&["physics", "philosophy", "chemistry"]);
        assert_eq!(
            h.candidates("/join ph"),
            (6, vec!["physics".to_string(), "philosophy".to_string()])
        );
        assert_eq!(
            h.candidates("/leave  ch"),
            (8, vec!["chemistry".to_string()])
        );
        assert_eq!(h.candidates("/send ph").1, Vec::<String>::new());
    }
}
