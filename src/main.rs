use clap::{CommandFactory, FromArgMatches};
use pytest_cloud::cli::{Cli, Command};
use pytest_cloud::cmd;
use pytest_cloud::error::Exit;
use std::io::Write;

fn main() {
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        if let (Command::Probe(a), Some(("probe", sub))) = (&mut cli.command, m.subcommand()) {
            a.node_order = cmd::probe::nodes_in_command_line_order(sub);
        }
        Ok(cli)
    });
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            let code = match e.kind() {
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => Exit::Usage.code(),
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match &cli.command {
        Command::Probe(a) => cmd::probe::run(a, &mut out),
        Command::Plan(a) => cmd::plan::run(a, &mut out),
        Command::Sync(a) => cmd::sync::run(a, &mut out),
        Command::Exec(a) => cmd::exec::run(a, &mut out),
        Command::Release(a) => cmd::release::run(a, &mut out),
        Command::Pytest(a) => cmd::pytest::run(a, &mut out),
        Command::Completions(a) => cmd::completions::run(a, &mut out),
        Command::Options(a) => cmd::options::run(a, &mut out),
        Command::Man(a) => cmd::man::run(a, &mut out),
    };
    let _ = out.flush();
    match result {
        Ok(outcome) => std::process::exit(outcome.code()),
        Err(e) => {
            // A closed stdout (`| head`) is not an error worth a word.
            if e.exit == Exit::Io && e.message.contains("Broken pipe") {
                std::process::exit(0);
            }
            eprintln!("pytest-cloud: error: {}", e.message);
            std::process::exit(e.exit.code());
        }
    }
}
