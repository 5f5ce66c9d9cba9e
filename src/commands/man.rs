use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::Error;
use crate::output;

/// ftl(1) on stdout, or with `dir` ftl.1 and one ftl-<command>.1 per command
/// written there; generated from the clap definition, like `--help`.
pub fn run(dir: Option<&Path>) -> Result<(), Error> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => clap_mangen::generate_to(cmd, dir).map_err(|e| {
            Error::Failed(format!("cannot write man pages to {}: {e}", dir.display()))
        }),
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|e| Error::Failed(format!("cannot render the man page: {e}")))?;
            let text = String::from_utf8(buf)
                .map_err(|e| Error::Failed(format!("the man page is not UTF-8: {e}")))?;
            Ok(output::print_text(&text)?)
        }
    }
}
