//! Records which commit the binary was built from, for `ftl --version` and
//! `ftl status --json`: an operator must be able to tell two builds of the
//! same version apart on a node.
//!
//! The commit is `FTL_BUILD_COMMIT` when set (a build from a source tarball,
//! or a packager that knows better), else what `git` says about the checkout,
//! with `-modified` when tracked files differ from it; outside a checkout, or
//! without git, there is none and the version stands alone.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FTL_BUILD_COMMIT");
    // A change to the sources can make the tree modified; a commit or a
    // checkout moves HEAD (its reflog is written on both).
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");

    let commit = match std::env::var("FTL_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => Some(c.trim().to_owned()),
        _ => from_git(),
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    match commit {
        Some(c) => {
            println!("cargo:rustc-env=BUILT_COMMIT={c}");
            println!("cargo:rustc-env=BUILT_VERSION={version} ({c})");
        }
        None => println!("cargo:rustc-env=BUILT_VERSION={version}"),
    }
}

fn from_git() -> Option<String> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from)?;
    let dir = manifest.to_str()?;
    // Only this repository's own checkout counts, not one that happens to
    // contain an unpacked source tarball.
    let top = git(&["-C", dir, "rev-parse", "--show-toplevel"])?;
    if PathBuf::from(&top).canonicalize().ok()? != manifest.canonicalize().ok()? {
        return None;
    }
    if let Some(git_dir) = git(&["-C", dir, "rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/logs/HEAD");
    }
    let hash = git(&["-C", dir, "rev-parse", "--short=12", "HEAD"])?;
    // `status` compares contents where the index's file times are stale (a
    // copied checkout), where `diff-index` alone would say modified.
    let modified = git(&["-C", dir, "status", "--porcelain", "--untracked-files=no"]).is_some();
    Some(if modified {
        format!("{hash}-modified")
    } else {
        hash
    })
}
