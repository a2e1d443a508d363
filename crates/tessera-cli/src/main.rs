//! `tessera`: the command line of the Tessera loyalty system.
//!
//! A thin layer over the libraries: it parses arguments, calls the terminal
//! and simulator crates, prints human or `--json` output and owns the exit
//! codes (see `README.md`, "Exit codes").

// Standard output or error closed early (`tessera pos history | head -1`)
// is not a failure of the command: what was committed stays committed and
// the exit code is the command's. These shadow the standard macros in every
// module of this binary; a write that fails is dropped (and later output
// too), never a panic.
macro_rules! println {
    () => { $crate::out::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}
#[allow(unused_macros)]
macro_rules! print {
    ($($t:tt)*) => { $crate::out::write_stdout(format_args!($($t)*)) };
}
macro_rules! eprintln {
    () => { $crate::out::write_stderr(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out::write_stderr(format_args!("{}\n", format_args!($($t)*))) };
}

mod args;
mod card;
mod demo;
mod fail;
mod office;
mod office_approve;
mod office_cards;
mod office_dashboard;
mod office_ops;
mod office_report;
mod out;
mod pos;
mod settle;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use fail::Failure;

/// Tessera smart-card loyalty system.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Issue and inspect simulated cards.
    #[command(subcommand)]
    Card(card::CardCmd),
    /// The clerk's point of sale: read, earn, redeem, refund, shift, history, totals, status, readers, settle, sync.
    #[command(subcommand)]
    Pos(pos::PosCmd),
    /// The back office: key ceremony, issuance, ledger, server, reports.
    #[command(subcommand)]
    Office(office::OfficeCmd),
    /// Issue a few cards and run a short day at the till.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  tessera completions bash > ~/.local/share/bash-completion/completions/tessera\n  tessera completions zsh > ~/.zfunc/_tessera"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (tessera.1, tessera-pos.1, tessera-pos-earn.1, …) into a directory.
    #[command(after_help = "Example:\n  tessera man --out /usr/local/share/man/man1")]
    Man {
        /// The directory (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Options shared by commands that print data.
#[derive(Args, Clone, Copy)]
pub struct OutputArgs {
    /// Print versioned JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Where the terminal keeps its state (profile cache, sequence number).
#[derive(Args, Clone)]
pub struct TerminalArgs {
    /// Terminal state directory [default: $TESSERA_TERMINAL_DIR, else
    /// $XDG_DATA_HOME/tessera/terminal, else ~/.local/share/tessera/terminal].
    #[arg(long, value_name = "DIR")]
    pub terminal_dir: Option<PathBuf>,
    /// This terminal's identifier (used when the state directory is new; the
    /// journal remembers it).
    #[arg(long, default_value_t = 1)]
    pub terminal_id: u32,
    /// The store this terminal stands in (recorded in the card's visit history).
    #[arg(long, default_value_t = 1)]
    pub store: u32,
    /// This terminal's keys (a bundle from `tessera office export-terminal`).
    /// Required, unless --test-keys.
    #[arg(long, value_name = "BUNDLE.json", conflicts_with = "test_keys")]
    pub keys: Option<PathBuf>,
    /// Use the published test keys (training and tests only: never for real
    /// cards; a warning is printed on every command).
    #[arg(long)]
    pub test_keys: bool,
    /// The PKCS#11 module (shared library) of the token holding this till's
    /// authentication masters, for a bundle exported with
    /// `office export-terminal --pkcs11-module`. The PIN comes from
    /// --pin-file or $TESSERA_PKCS11_PIN.
    #[arg(long, value_name = "PATH", requires = "keys", conflicts_with = "test_keys")]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's label [default: the one named in the bundle].
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub token_label: Option<String>,
    /// A file whose first line is the token's user PIN [default:
    /// $TESSERA_PKCS11_PIN]. Never give the PIN on the command line.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pin_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Top::Card(c) => card::run(c),
        Top::Pos(c) => pos::run(c),
        Top::Office(c) => office::run(c),
        Top::Demo(a) => demo::run(a),
        Top::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tessera", &mut buf);
            out::write_stdout(format_args!("{}", String::from_utf8_lossy(&buf)));
            Ok(())
        }
        Top::Man { out } => out::man_pages(<Cli as clap::CommandFactory>::command(), &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure {
            code,
            message,
            json,
            printed,
        }) => {
            if printed {
                // The JSON answer already says what happened.
            } else if json {
                println!(
                    "{}",
                    serde_json::json!({"version": 1, "ok": false, "error": message, "exit_code": code})
                );
            } else {
                eprintln!("tessera: {message}");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every command and argument of the CLI is consistent (no flag given
    /// twice, no conflict naming a missing argument): clap checks this only
    /// when a command is run, so check the whole tree at once.
    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
