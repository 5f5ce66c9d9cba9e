use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::Error;
use crate::output;

/// The script for `shell`, generated from the same definition that parses the
/// command line, so it never goes stale.
pub fn run(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ftl", &mut buf);
    let text = String::from_utf8(buf)
        .map_err(|e| Error::Failed(format!("the {shell} completion script is not UTF-8: {e}")))?;
    Ok(output::print_text(&text)?)
}
