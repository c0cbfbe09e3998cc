//! Where the line history is kept across runs.

use std::path::PathBuf;

/// `$XDG_DATA_HOME/relay/history`, else `~/.local/share/relay/history`;
/// `None` when neither variable is set.
pub fn path() -> Option<PathBuf> {
    let from_env = |var: &str| {
        std::env::var_os(var)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let data = from_env("XDG_DATA_HOME")
        .or_else(|| from_env("HOME").map(|home| home.join(".local/share")))?;
    Some(data.join("relay").join("history"))
}
