//! The Relay chat CLI, built on the `client` library.
//!
//! - [`args`]: the command line (clap).
//! - [`command`]: a typed line read into a [`command::Command`].
//! - [`session`]: rooms, the current room, what each command does, and the
//!   thread that prints incoming events.
//! - [`interactive`]: the rustyline front end (prompt, history, completion,
//!   messages printed above the prompt).
//! - [`piped`]: the front end for scripts (standard input not a terminal).
//! - [`format`], [`out`]: how lines look and where they go.
//! - [`complete`], [`history`]: tab completion and the history file.
//! - [`keepalive`]: heartbeats that keep a quiet session under the idle timeout.

pub mod args;
pub mod command;
pub mod complete;
pub mod format;
pub mod history;
pub mod interactive;
pub mod keepalive;
pub mod out;
pub mod piped;
pub mod session;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use client::{Client, Options};

use self::format::Style;
use self::out::Out;
use self::session::{Flow, Session};

/// Connects, says HELLO, runs the front end that fits the terminal, and
/// returns the exit code: 0 after `quit`, Ctrl-D or the end of piped input, 1
/// when the connection was lost. Errors before the session starts are
/// returned for `main` to print.
pub fn run(args: &args::Args) -> Result<ExitCode, String> {
    args.check()?;
    let timeout = args.timeout();
    let endpoint = args.endpoint()?;
    let options = Options {
        connect_timeout: timeout,
        tls: endpoint.tls.then(|| args.tls_options()),
        ..Options::default()
    };
    let client =
        Client::connect_host(&endpoint.host, endpoint.port, &options).map_err(|e| e.to_string())?;
    // With a token the server names the user; only an explicit --name is
    // sent (and must match), never the login name.
    let (name, hello) = match &args.token {
        Some(token) => {
            let name = args.name.clone().filter(|name| !name.trim().is_empty());
            let hello = client.hello_with_token(name.as_deref(), token, args.echo, timeout);
            (name.unwrap_or_else(|| "the token's user".to_owned()), hello)
        }
        None => {
            let name = args.user_name();
            let hello = client.hello_as(Some(&name), args.echo, timeout);
            (name, hello)
        }
    };
    let hello = hello.map_err(|error| format!("{endpoint} refused the login: {error}"))?;
    let client = Arc::new(client);
    let style = Style::detect();
    // The line editor needs a terminal on both sides; `client | tee log`
    // reads its input line by line like a script.
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let rooms = Arc::new(Mutex::new(Vec::new()));

    let mut editor = None;
    let out = if interactive {
        let mut rl = interactive::editor(Arc::clone(&rooms)).map_err(|e| e.to_string())?;
        let printer = rl
            .create_external_printer()
            .map_err(|e| format!("cannot set up the terminal: {e}"))?;
        editor = Some(rl);
        Out::printer(Box::new(printer))
    } else {
        Out::stdout()
    };
    let out = Arc::new(out);
    let (reply_sender, replies) = crossbeam_channel::unbounded();
    let events = session::spawn_events(
        Arc::clone(&client),
        Arc::clone(&out),
        style,
        reply_sender,
        interactive,
    )
    .map_err(|e| format!("cannot start a thread: {e}"))?;
    let mut session = Session {
        client: Arc::clone(&client),
        replies,
        rooms,
        current: None,
        out,
        style,
        timeout,
        history: history::path(),
    };
    let mut greeting = format!(
        "connected to {}:{}{} as {} ({})",
        endpoint.host,
        endpoint.port,
        if endpoint.tls { " (TLS)" } else { "" },
        format::clean(&name),
        hello.connection_id
    );
    if interactive {
        greeting.push_str("; type help for commands");
    }
    session.out.line(&session.style.notice(&greeting));

    let (stop_keepalive, stop) = crossbeam_channel::bounded::<()>(0);
    let keepalive = keepalive::spawn(
        Arc::clone(&client),
        keepalive::interval(hello.idle_timeout_ms),
        stop,
    )
    .map_err(|e| format!("cannot start a thread: {e}"))?;

    let flow = match editor {
        Some(rl) => interactive::run(&mut session, rl),
        None => piped::run(&mut session),
    };
    drop(stop_keepalive);
    let _ = keepalive.join();
    client.shutdown();
    let _ = events.join();
    Ok(match flow {
        Flow::Lost => ExitCode::FAILURE,
        Flow::Continue | Flow::Quit => ExitCode::SUCCESS,
    })
}
