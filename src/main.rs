use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match ftl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                ftl::error::EXIT_USAGE
            } else {
                0
            });
        }
    };
    ftl::logging::init(&cli.global);
    // Commands that only touch the local root do a few file-system calls in
    // sequence: one thread, no worker pool to start, no hand-over between threads.
    let local = match &cli.command {
        ftl::cli::Command::List { master, .. }
        | ftl::cli::Command::Jump { master, .. }
        | ftl::cli::Command::JumpBack { master, .. } => !master,
        ftl::cli::Command::Remove { .. } | ftl::cli::Command::Clean { .. } => true,
        _ => false,
    };
    let mut builder = if local {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ftl: error: cannot start the async runtime: {e}");
            return ExitCode::from(ftl::error::EXIT_FAILURE);
        }
    };
    match runtime.block_on(ftl::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
