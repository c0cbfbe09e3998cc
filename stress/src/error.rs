//! One error type for every scenario: a message that says what the tool was
//! doing, for the person reading the report.

use std::fmt;
use std::io;

/// A scenario could not run (as opposed to a scenario that ran and failed its
/// verdict, which is a [`crate::report::Report`] with `passed == false`).
#[derive(Debug)]
pub struct Error(pub String);

/// Results of the setup steps of a scenario.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Error {
        Error(error.to_string())
    }
}

/// Adds what was being done to an error, ripgrep-style: `doing: cause`.
pub trait Context<T> {
    fn context(self, doing: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, doing: impl fmt::Display) -> Result<T> {
        self.map_err(|error| Error(format!("{doing}: {error}")))
    }
}
