//! `relay`: the Relay CLI (see `cli` for how it is put together).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Args::parse_from(cli::args::with_default_subcommand(std::env::args_os()));
    match cli::run(&args) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("relay: {failure}");
            failure.exit.into()
        }
    }
}
