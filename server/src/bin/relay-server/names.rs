//! A setting's name as the user gave it: a bad value from the environment
//! names the variable (`RELAY_MAX_FRAME`), not the flag nobody typed.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Names settings after where their values came from.
pub struct Names<'a> {
    pub command: &'a Command,
    pub matches: &'a ArgMatches,
}

impl Names<'_> {
    /// `--max-frame`, or `RELAY_MAX_FRAME` when the value came from there.
    /// `flag` is the long flag without its dashes.
    pub fn of(&self, flag: &str) -> String {
        let id = flag.replace('-', "_");
        // An id clap does not know is not asked about: value_source
        // would panic on it.
        let known = self.matches.try_get_raw(&id).is_ok();
        let from_env = known && self.matches.value_source(&id) == Some(ValueSource::EnvVariable);
        if from_env
            && let Some(var) = self
                .command
                .get_arguments()
                .find(|arg| arg.get_id().as_str() == id)
                .and_then(|arg| arg.get_env())
        {
            return var.to_string_lossy().into_owned();
        }
        format!("--{flag}")
    }
}

/// Rewrites clap's "invalid value 'x' for '--flag <FLAG>'" when the value
/// came from the flag's environment variable (the flag is not on the command
/// line): the message then names the variable.
pub fn env_error(command: &Command, error: &clap::Error, argv: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = invalid.split_whitespace().next()?.strip_prefix("--")?;
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?;
    let var = arg.get_env()?.to_string_lossy().into_owned();
    let typed = argv
        .iter()
        .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if typed || std::env::var_os(&var).is_none() {
        return None;
    }
    let rendered = error.to_string();
    Some(
        rendered
            .replace(
                &format!("'{invalid}'"),
                &format!("{var} (from the environment)"),
            )
            .trim_end()
            .to_owned(),
    )
}
