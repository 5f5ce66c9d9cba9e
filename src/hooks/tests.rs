use super::*;
use std::fs;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Default)]
struct Collect(Mutex<Vec<(Stream, String, Instant)>>);

impl HookOutput for Collect {
    fn line(&self, stream: Stream, line: &str) {
        self.0
            .lock()
            .unwrap()
            .push((stream, line.to_owned(), Instant::now()));
    }
}

impl Collect {
    fn lines(&self, stream: Stream) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|l| l.0 == stream)
            .map(|l| l.1.clone())
            .collect()
    }
}

const REV: &str = "my_site.2026112643200Ab";
const PREFIX: &str = "my_site.2026112643200Ab post-sync: ";

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: HookContext,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let revision_path = dir.path().join("my_site/revs/2026112643200Ab");
    fs::create_dir_all(&revision_path).unwrap();
    let ctx = HookContext {
        root: dir.path().to_owned(),
        revision: REV.parse().unwrap(),
        revision_path,
        current: Some("my_site.2026010100000AA".parse().unwrap()),
        previous: None,
        timeout: Some(Duration::from_secs(20)),
    };
    Fixture { _dir: dir, ctx }
}

fn script(ctx: &HookContext, rel: &str, body: &str, mode: u32) {
    let path = ctx.revision_path.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

async fn run_collect(step: Step, ctx: &HookContext) -> (Result<bool, HookError>, Arc<Collect>) {
    let out = Arc::new(Collect::default());
    let r = run(step, ctx, out.clone()).await;
    (r, out)
}

fn strip(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            l.strip_prefix(PREFIX)
                .unwrap_or_else(|| panic!("not annotated: {l}"))
                .to_owned()
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn dead(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z'),
    }
}

#[tokio::test]
async fn absent_hook_is_not_an_error() {
    let f = fixture();
    fs::create_dir(f.ctx.revision_path.join("ftl")).unwrap();
    script(&f.ctx, "pre-jump.sh", "exit 1", 0o644);
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert!(!r.unwrap());
    assert!(out.0.lock().unwrap().is_empty());
    // `ftl` being a file is fine too.
    fs::remove_dir(f.ctx.revision_path.join("ftl")).unwrap();
    fs::write(f.ctx.revision_path.join("ftl"), "").unwrap();
    assert!(!run_collect(Step::PostSync, &f.ctx).await.0.unwrap());
}

#[tokio::test]
async fn env_cwd_and_non_executable_script_under_sh() {
    let mut f = fixture();
    // No previous revision: FTL_PREVIOUS_REVISION must be absent.
    script(
        &f.ctx,
        "post-sync.sh",
        // FTL_TEST_* are the test run's own (FTL_TEST_S3_ENDPOINT in .ci/run).
        "echo \"cwd=$(pwd)\"\nenv | grep '^FTL_' | grep -v '^FTL_TEST_' | sort\n",
        0o644,
    );
    f.ctx.timeout = None;
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert!(r.unwrap());
    let lines = strip(out.lines(Stream::Stdout));
    let rp = f.ctx.revision_path.display().to_string();
    let expected = vec![
        format!("cwd={rp}"),
        "FTL_CURRENT_REVISION=my_site.2026010100000AA".to_owned(),
        "FTL_PACKAGE=my_site".to_owned(),
        format!("FTL_REVISION={REV}"),
        format!("FTL_REVISION_PATH={rp}"),
        format!("FTL_ROOT={}", f.ctx.root.display()),
        "FTL_STEP=post-sync".to_owned(),
    ];
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn executable_script_runs_directly() {
    let f = fixture();
    // Run directly, the kernel hands it to cat; under sh it would echo.
    script(&f.ctx, "ftl/pre-jump", "#!/bin/cat\necho via-sh\n", 0o755);
    let (r, out) = run_collect(Step::PreJump, &f.ctx).await;
    assert!(r.unwrap());
    let lines = out.lines(Stream::Stdout);
    let p = format!("{REV} pre-jump: ");
    assert_eq!(lines, [format!("{p}#!/bin/cat"), format!("{p}echo via-sh")]);
}

#[tokio::test]
async fn executable_without_shebang_still_runs() {
    let f = fixture();
    script(&f.ctx, "post-sync.sh", "echo plain\n", 0o755);
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert!(r.unwrap());
    assert_eq!(strip(out.lines(Stream::Stdout)), ["plain"]);
}

#[tokio::test]
async fn exit_status_is_propagated() {
    let f = fixture();
    script(&f.ctx, "post-sync.sh", "echo before; exit 7\n", 0o644);
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 7);
    assert_eq!(
        e.to_string(),
        format!("the post-sync hook of {REV} failed with exit status 7")
    );
    assert_eq!(strip(out.lines(Stream::Stdout)), ["before"]);
}

#[tokio::test]
async fn killed_by_signal_is_status_1() {
    let f = fixture();
    script(&f.ctx, "post-sync.sh", "kill -9 $$\n", 0o644);
    let e = run_collect(Step::PostSync, &f.ctx).await.0.unwrap_err();
    assert!(
        matches!(
            e,
            HookError::Failed {
                status: 1,
                signal: Some(9),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("killed by signal 9"), "{e}");
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let mut f = fixture();
    script(
        &f.ctx,
        "post-sync.sh",
        "sleep 60 &\necho $! > bg.pid\necho started\nsleep 60\n",
        0o644,
    );
    f.ctx.timeout = Some(Duration::from_millis(500));
    let start = Instant::now();
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    let e = r.unwrap_err();
    assert!(matches!(e, HookError::TimedOut { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(strip(out.lines(Stream::Stdout)), ["started"]);
    let bg = fs::read_to_string(f.ctx.revision_path.join("bg.pid")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dead(bg.trim()) {
        assert!(
            Instant::now() < deadline,
            "background process {bg} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn background_process_holding_output_does_not_hang() {
    let f = fixture();
    script(
        &f.ctx,
        "post-jump.sh",
        "sleep 60 &\necho $! > bg.pid\necho done\n",
        0o644,
    );
    let start = Instant::now();
    let (r, out) = run_collect(Step::PostJump, &f.ctx).await;
    assert!(r.unwrap());
    assert!(start.elapsed() < OUTPUT_GRACE + Duration::from_secs(3));
    assert_eq!(
        out.lines(Stream::Stdout),
        [format!("{REV} post-jump: done")]
    );
    // A daemon started on purpose is left alone; clean up after the test.
    let bg = fs::read_to_string(f.ctx.revision_path.join("bg.pid")).unwrap();
    assert!(!dead(bg.trim()));
    let _ = std::process::Command::new("kill").arg(bg.trim()).status();
}

#[tokio::test]
async fn output_annotated_split_by_stream_and_streamed() {
    let f = fixture();
    script(
        &f.ctx,
        "post-sync.sh",
        "echo out1\necho err1 >&2\nprintf 'crlf\\r\\n'\nprintf '\\377bad\\n'\nsleep 1\necho out2\nprintf 'no newline'\n",
        0o644,
    );
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert!(r.unwrap());
    assert_eq!(
        strip(out.lines(Stream::Stdout)),
        ["out1", "crlf", "\u{FFFD}bad", "out2", "no newline"]
    );
    assert_eq!(strip(out.lines(Stream::Stderr)), ["err1"]);
    // Lines arrive as printed, not at the end.
    let all = out.0.lock().unwrap();
    let at = |s: &str| all.iter().find(|l| l.1.ends_with(s)).unwrap().2;
    assert!(at("out2") - at("out1") >= Duration::from_millis(700));
}

#[tokio::test]
async fn huge_lines_are_split_not_buffered() {
    let f = fixture();
    // 200,000 'a' and a 3-byte character straddling the 64 KiB boundary.
    script(
        &f.ctx,
        "post-sync.sh",
        "head -c 65535 /dev/zero | tr '\\0' a; printf '\\342\\202\\254'; head -c 200000 /dev/zero | tr '\\0' a; echo\n",
        0o644,
    );
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert!(r.unwrap());
    let lines = strip(out.lines(Stream::Stdout));
    assert!(lines.len() >= 4, "{}", lines.len());
    assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
    let joined: String = lines.concat();
    assert_eq!(joined.len(), 65535 + 3 + 200_000);
    assert!(!joined.contains('\u{FFFD}'));
    assert!(lines[1].starts_with('€'));
}

#[tokio::test]
async fn post_spool_is_the_old_name_of_post_sync() {
    let f = fixture();
    script(&f.ctx, "ftl/post-spool", "echo old\n", 0o644);
    let (r, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert!(r.unwrap());
    assert_eq!(strip(out.lines(Stream::Stdout)), ["old"]);
    // With an `ftl/` directory, a top-level `<step>.sh` is not a hook.
    script(&f.ctx, "post-sync.sh", "echo stray\n", 0o644);
    let (_, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert_eq!(strip(out.lines(Stream::Stdout)), ["old"]);
    // `ftl/post-sync` wins over its old name.
    script(&f.ctx, "ftl/post-sync", "echo new\n", 0o644);
    let (_, out) = run_collect(Step::PostSync, &f.ctx).await;
    assert_eq!(strip(out.lines(Stream::Stdout)), ["new"]);
}

#[tokio::test]
async fn an_ftl_directory_hides_top_level_scripts() {
    let f = fixture();
    // An application's own scripts that happen to have hook names.
    script(&f.ctx, "validate.sh", "exit 1\n", 0o755);
    script(&f.ctx, "pre-remove.sh", "exit 1\n", 0o755);
    script(&f.ctx, "ftl/pre-jump", "echo hooked\n", 0o755);
    for step in [Step::Validate, Step::PreRemove, Step::PostJump] {
        let (r, out) = run_collect(step, &f.ctx).await;
        assert!(!r.unwrap(), "{step}: no hook expected");
        assert!(out.lines(Stream::Stdout).is_empty());
    }
    let (r, out) = run_collect(Step::PreJump, &f.ctx).await;
    assert!(r.unwrap());
    assert_eq!(
        out.lines(Stream::Stdout),
        [format!("{REV} pre-jump: hooked")]
    );
    // Without `ftl/`, the top-level names are the hooks.
    fs::remove_dir_all(f.ctx.revision_path.join("ftl")).unwrap();
    let (r, _) = run_collect(Step::Validate, &f.ctx).await;
    assert!(r.is_err(), "validate.sh is the hook now");
}

#[tokio::test]
async fn hooks_must_stay_inside_the_revision() {
    let f = fixture();
    let outside = tempfile::tempdir().unwrap();
    let evil = outside.path().join("evil.sh");
    fs::write(&evil, "echo escaped\n").unwrap();
    std::os::unix::fs::symlink(&evil, f.ctx.revision_path.join("post-sync.sh")).unwrap();
    let e = run_collect(Step::PostSync, &f.ctx).await.0.unwrap_err();
    assert!(e.to_string().contains("points outside the revision"), "{e}");

    // A directory is not a hook; a link within the revision is fine.
    fs::create_dir(f.ctx.revision_path.join("un-jump.sh")).unwrap();
    let e = run_collect(Step::UnJump, &f.ctx).await.0.unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    script(&f.ctx, "scripts/deploy.sh", "echo inside\n", 0o644);
    std::os::unix::fs::symlink("scripts/deploy.sh", f.ctx.revision_path.join("validate.sh"))
        .unwrap();
    let (r, out) = run_collect(Step::Validate, &f.ctx).await;
    assert!(r.unwrap());
    assert_eq!(
        out.lines(Stream::Stdout),
        [format!("{REV} validate: inside")]
    );

    // Through a linked `ftl/` directory as well.
    std::os::unix::fs::symlink(outside.path(), f.ctx.revision_path.join("ftl")).unwrap();
    fs::rename(&evil, outside.path().join("pre-jump")).unwrap();
    let e = run_collect(Step::PreJump, &f.ctx).await.0.unwrap_err();
    assert!(matches!(e, HookError::Refused { .. }), "{e:?}");
}

#[test]
fn steps_display_as_in_the_spec() {
    let names: Vec<String> = Step::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names,
        [
            "post-sync",
            "pre-jump",
            "un-jump",
            "post-jump",
            "pre-remove",
            "validate"
        ]
    );
}
