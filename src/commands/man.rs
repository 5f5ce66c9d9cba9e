use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{EXIT_FAILURE, EXIT_NOT_IN_STEP, EXIT_USAGE, Error};
use crate::hooks::Step;
use crate::output;

/// ftl(1) on stdout, or with `dir` ftl.1 and one ftl-<command>.1 per command
/// written there (the directory is created if need be); generated from the
/// clap definition, like `--help`. ftl(1) also carries the reference a node
/// with only the binary needs: hooks, environment, exit status.
pub fn run(dir: Option<&Path>) -> Result<(), Error> {
    // `ftl help` is clap's, not a command with a page of its own.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let top = render(&cmd, true)
        .map_err(|e| Error::Failed(format!("cannot render the man page: {e}")))?;
    let Some(dir) = dir else {
        return Ok(output::print_text(&top)?);
    };
    let failed = |e: std::io::Error| {
        Error::Failed(format!("cannot write man pages to {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    write(&dir.join("ftl.1"), &top).map_err(failed)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = render(sub, false).map_err(failed)?;
        let name = sub.get_display_name().unwrap_or(sub.get_name());
        write(&dir.join(format!("{name}.1")), &page).map_err(failed)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// One page; the top one with the reference sections.
fn render(cmd: &clap::Command, top: bool) -> std::io::Result<String> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        man.render_extra_section(&mut buf)?;
    }
    let mut text = String::from_utf8(buf)
        .map_err(|e| std::io::Error::other(format!("the man page is not UTF-8: {e}")))?;
    if top {
        text.push_str(&hooks_section());
        text.push_str(&environment_section(cmd));
        text.push_str(&exit_status_section());
    } else {
        text.push_str(".SH SEE ALSO\nftl(1): hooks, environment, exit status\n");
    }
    if cmd.get_version().is_some() {
        let mut buf = Vec::new();
        man.render_version_section(&mut buf)?;
        text.push_str(&String::from_utf8_lossy(&buf));
    }
    Ok(text)
}

/// Text as roff: backslashes and dashes escaped, no line taken for a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `.TP` entry: the tag in bold, then its text.
fn entry(out: &mut String, tag: &str, text: &str) {
    out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(tag), roff(text)));
}

fn paragraph(out: &mut String, text: &str) {
    out.push_str(&format!(".PP\n{}\n", roff(text)));
}

/// When each hook runs and what its failure does (docs/hooks.md, "The steps").
fn step_text(step: Step) -> &'static str {
    match step {
        Step::PostSync => {
            "The new revision's, after it is downloaded, verified and unpacked, before it \
             counts as installed. If it fails: the revision is removed again and sync fails; \
             the revision is tried again after a back-off (1 min, doubling up to 1 h), at \
             once when its object changes or with ftl sync --retry-failed."
        }
        Step::PreJump => {
            "The revision becoming current, first in a jump. If it fails: the jump does not happen."
        }
        Step::UnJump => {
            "The revision that stops being current, after pre-jump, before the switch. If it \
             fails: the jump does not happen (unless --ignore-unjump-failure)."
        }
        Step::PostJump => {
            "The new current revision, right after the switch. If it fails: the switch \
             stands, the command fails, validate does not run."
        }
        Step::Validate => {
            "The new current revision, after a successful post-jump. If it fails: ftl jumps \
             back to the revision that was current before (its hooks run, validate does not), \
             restores previous, and the command fails with the validate hook's status."
        }
        Step::PreRemove => {
            "The revision to delete, before its directory is deleted (ftl remove, ftl clean, \
             or sync deleting a purged revision). If it fails: the revision is kept, the \
             command fails."
        }
    }
}

/// The variables a hook gets besides ftl's own environment (docs/hooks.md).
const HOOK_VARIABLES: [(&str, &str); 7] = [
    ("FTL_ROOT", "the root, absolute"),
    ("FTL_PACKAGE", "the package name"),
    (
        "FTL_REVISION",
        "the revision whose hook this is, <package>.<id>",
    ),
    (
        "FTL_REVISION_PATH",
        "its directory, $FTL_ROOT/<package>/revs/<id> (also the working directory)",
    ),
    ("FTL_STEP", "the step, e.g. post-jump"),
    (
        "FTL_CURRENT_REVISION",
        "the revision current points at when the hook runs; unset when there is none",
    ),
    (
        "FTL_PREVIOUS_REVISION",
        "the revision previous points at when the hook runs; unset when there is none",
    ),
];

fn hooks_section() -> String {
    let mut out = String::from(".SH HOOKS\n");
    paragraph(
        &mut out,
        "Scripts shipped inside a package run on each node at fixed steps. A revision with \
         an ftl/ directory at its top takes its hooks from there only: ftl/STEP (and for \
         post-sync also ftl/post-spool, the name ftl 0.2.x used). A revision without one \
         uses STEP.sh at its top. A revision without a hook for a step has none; a hook \
         name that is not a regular file inside the revision makes the step fail. A hook \
         without its execute bit runs under /bin/sh.",
    );
    paragraph(
        &mut out,
        "A jump (ftl jump, ftl jump-back, ftl sync) runs pre-jump (new revision), un-jump \
         (old), switches current (and previous to the old one), then post-jump (new) and \
         validate (new). A jump to the revision already current runs nothing.",
    );
    for step in Step::ALL {
        entry(&mut out, step.as_str(), step_text(step));
    }
    paragraph(
        &mut out,
        "A hook runs in the revision directory, standard input from /dev/null, in its own \
         process group, with ftl's environment and:",
    );
    for (var, meaning) in HOOK_VARIABLES {
        entry(&mut out, var, meaning);
    }
    paragraph(
        &mut out,
        "Its standard output and standard error are re-emitted line by line on ftl's, \
         each line prefixed with \"<revision> <step>: \"; -q does not hide them.",
    );
    paragraph(
        &mut out,
        "Exit status: a failed hook makes ftl exit with the hook's own status (1 when it \
         was killed by a signal, timed out, or could not be started); when several steps \
         fail in one command, the first failure's. The failure is reported once, as \
         \"ftl: error: <revision>: the <step> hook of <revision> failed with exit status \
         N\". --hook-timeout SECS (FTL_HOOK_TIMEOUT, default 600, 0: no limit) kills a hook \
         that runs longer, with its process group.",
    );
    out
}

fn environment_section(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH ENVIRONMENT\n");
    paragraph(
        &mut out,
        "ftl has no configuration file. Each FTL_* variable below can also be given as its \
         flag, and the flag wins; a bad value is reported against the variable.",
    );
    // The variables flags read, from the definition that parses them.
    let mut seen = std::collections::BTreeSet::new();
    for arg in std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
    {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let env = env.to_string_lossy().into_owned();
        if !seen.insert(env.clone()) {
            continue;
        }
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect::<Vec<_>>()
            .join(",");
        let default = if default.is_empty() {
            String::new()
        } else {
            format!(" (default {default})")
        };
        entry(&mut out, &env, &format!("--{long}: {help}{default}"));
    }
    entry(
        &mut out,
        "FTL_LOG",
        "A tracing filter for debugging, e.g. FTL_LOG=debug or FTL_LOG=aws_smithy_runtime=trace.",
    );
    entry(
        &mut out,
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE",
        "The AWS SDK's default credential chain (also SSO, instance and container roles), unchanged.",
    );
    entry(
        &mut out,
        "AWS_REGION, AWS_DEFAULT_REGION",
        "The bucket's region (AWS_REGION first; default us-east-1).",
    );
    entry(
        &mut out,
        "AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3",
        "An S3-compatible server, addressed path-style.",
    );
    entry(
        &mut out,
        "JOURNAL_STREAM",
        "Set by systemd: when it names ftl's standard error, log lines carry no time (the \
         journal keeps it). Otherwise, when standard error is not a terminal, each text \
         log line starts with the time, UTC, as 2026-12-06T13:45:01Z.",
    );
    paragraph(
        &mut out,
        "Hooks also get FTL_PACKAGE, FTL_REVISION, FTL_REVISION_PATH, FTL_STEP, \
         FTL_CURRENT_REVISION and FTL_PREVIOUS_REVISION (see HOOKS).",
    );
    out
}

fn exit_status_section() -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    entry(&mut out, "0", "Success (status: every package in step).");
    entry(
        &mut out,
        &EXIT_FAILURE.to_string(),
        "Any failure not listed below: network, bucket, disk, lock timeout, verification; \
         status: a package could not be read, or there is no package directory to check.",
    );
    entry(
        &mut out,
        &EXIT_USAGE.to_string(),
        "Usage error: unknown flag, bad or missing variable, invalid package or revision name.",
    );
    entry(
        &mut out,
        &EXIT_NOT_IN_STEP.to_string(),
        "ftl status: a package is not in step with the bucket (status runs no hooks, \
         so this is never a hook's); ftl fleet: a fresh report is not in step; \
         jump --master --wait: the wait timed out.",
    );
    entry(
        &mut out,
        "N",
        "A hook failed with status N (1 when it was killed or timed out); after an \
         automatic rollback, the validate hook's status.",
    );
    paragraph(
        &mut out,
        "Each failure is reported once on standard error, as \"ftl: error: ...\" (one line \
         per failure; a revision's failure starts with the revision's name).",
    );
    out
}
