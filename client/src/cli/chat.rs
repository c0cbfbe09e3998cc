//! `relay` / `relay chat`: the interactive client, and the same commands read
//! line by line from a script.

use std::io::IsTerminal;
use std::sync::Arc;

use super::args::Args;
use super::connect::Dial;
use super::exit::{Exit, Failure};
use super::format::{self, Style};
use super::link::{self, Link, State};
use super::out::Out;
use super::session::{self, Flow, Session, Shared};
use super::{history, interactive, piped};

/// Connects, says HELLO, and runs the front end that fits the terminal.
/// Exit: 0 after `/quit`, Ctrl-D or the end of piped input (1 if a script's
/// command failed), 5 when the connection was lost.
pub fn run(args: &Args) -> Result<Exit, Failure> {
    let dial = Dial::from_args(args)?;
    let login = dial.login()?;
    let timeout = dial.timeout;
    let style = Style::detect();
    // The line editor needs a terminal on both sides; `relay | tee log`
    // reads its input line by line like a script.
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let rooms_for_completion = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut editor = None;
    let out = if interactive {
        let mut rl = interactive::editor(Arc::clone(&rooms_for_completion))
            .map_err(|e| Failure::new(Exit::Failed, e))?;
        let printer = rl
            .create_external_printer()
            .map_err(|e| Failure::new(Exit::Failed, format!("cannot set up the terminal: {e}")))?;
        editor = Some(rl);
        Out::printer(Box::new(printer), style, args.global.quiet)
    } else {
        Out::streams(style, args.global.quiet)
    };
    let out = Arc::new(out);
    let mut link = Link::new(dial, args.global.reconnect, Arc::clone(&out), Vec::new());
    // Completion sees the link's list of rooms.
    link.rooms = rooms_for_completion;
    link.press_enter = interactive;
    let link = Arc::new(link);

    let mut greeting = format!(
        "connected to {} as {} ({})",
        link.dial.endpoint,
        format::clean(&login.name),
        login.hello.connection_id
    );
    if interactive {
        greeting.push_str("; type /help for commands");
    }
    out.status(&greeting);

    let (reply_sender, replies) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::default());
    let interval = link::keepalive_interval(login.hello.idle_timeout_ms);
    let (stop_threads, stop) = crossbeam_channel::bounded::<()>(0);
    let events = link::spawn(
        Arc::clone(&link),
        login,
        stop.clone(),
        session::handler(
            Arc::clone(&out),
            args.format(),
            Arc::clone(&shared),
            reply_sender,
        ),
    )
    .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a thread: {e}")))?;
    let keepalive = link::spawn_keepalive(Arc::clone(&link), interval, stop)
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a thread: {e}")))?;

    let mut session = Session {
        link: Arc::clone(&link),
        replies,
        shared: Arc::clone(&shared),
        current: None,
        out: Arc::clone(&out),
        timeout,
        history: history::path(),
        hinted: false,
    };
    let flow = match editor {
        Some(rl) => interactive::run(&mut session, rl),
        None => piped::run(&mut session),
    };
    let unsent = link.unsent();
    link.stop();
    drop(stop_threads);
    let _ = keepalive.join();
    let _ = events.join();
    if unsent > 0 {
        out.error(&format!(
            "{unsent} line(s) typed while disconnected were not sent"
        ));
    }
    Ok(match flow {
        Flow::Lost => link.gone_with(),
        _ if unsent > 0 => Exit::Lost,
        _ if !interactive && shared.failed.load(std::sync::atomic::Ordering::SeqCst) => {
            Exit::Failed
        }
        Flow::Continue | Flow::Quit => match link.state() {
            State::Connected | State::Gone => Exit::Ok,
            State::Reconnecting => Exit::Lost,
        },
    })
}
