use std::process::ExitCode;

fn main() -> ExitCode {
    // A bug must still end in one line naming it, not a backtrace (unless asked
    // for with RUST_BACKTRACE), and with the documented failure status.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("ftl: error: internal error (a bug, please report it): {info}");
            std::process::exit(i32::from(ftl::error::EXIT_FAILURE));
        }));
    }
    let cli = match ftl::cli::parse_from(std::env::args_os().collect()) {
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
    let (global, command) = match cli.into_parts() {
        Ok(parts) => parts,
        Err(usage) => {
            eprintln!("ftl: error: {usage}");
            return ExitCode::from(ftl::error::EXIT_USAGE);
        }
    };
    // Before any thread starts (parsing starts none).
    if command.tunes_allocator() {
        ftl::memory::tune_allocator();
    }
    ftl::logging::init(&global);
    let local = command.is_local();
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
    match runtime.block_on(ftl::commands::run(&global, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for message in e.messages() {
                ftl::logging::report_error(&message, e.exit_code());
            }
            ExitCode::from(e.exit_code())
        }
    }
}
