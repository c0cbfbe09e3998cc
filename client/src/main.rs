//! `relay`: the Relay chat CLI (see `cli` for how it is put together).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Args::parse();
    match cli::run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("relay: {error}");
            ExitCode::FAILURE
        }
    }
}
