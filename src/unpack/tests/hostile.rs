//! Hostile archives are refused, and nothing is written outside the staging directory.

use super::*;

#[tokio::test]
async fn hostile_archives_are_refused() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let long_evil = format!("{}/../../../evil", "x/".repeat(60));
        // (label, archive entries built for a scene, the entry the error must name)
        type Case = (&'static str, Box<dyn Fn(&Scene) -> Vec<E>>, String);
        let cases: Vec<Case> = vec![
            (
                "dot-dot",
                Box::new(|_| vec![file("../evil", b"!", 0o644)]),
                "../evil".into(),
            ),
            (
                "inner dot-dot",
                Box::new(|_| vec![file("a/../../evil", b"!", 0o644)]),
                "a/../../evil".into(),
            ),
            (
                "dot-dot dir",
                Box::new(|_| vec![dir("../evildir/")]),
                "../evildir/".into(),
            ),
            (
                "absolute",
                Box::new(|s| {
                    let p = format!("{}/evil", s.parent.path().display());
                    vec![file(&p, b"!", 0o644)]
                }),
                "<abs>".into(),
            ),
            (
                "symlink to /etc",
                Box::new(|_| vec![symlink("l", "/etc")]),
                "l".into(),
            ),
            (
                "symlink to ../..",
                Box::new(|_| vec![symlink("l", "../..")]),
                "l".into(),
            ),
            (
                "symlink to ..",
                Box::new(|_| vec![symlink("l", "..")]),
                "l".into(),
            ),
            (
                "deep symlink climbing out",
                Box::new(|_| vec![symlink("d/l", "../../evil")]),
                "d/l".into(),
            ),
            (
                "symlink with inner dot-dot",
                Box::new(|_| vec![dir("sub/"), symlink("s", "sub/../..")]),
                "s".into(),
            ),
            (
                "write through symlink to a dir",
                Box::new(|_| vec![dir("sub/"), symlink("l", "sub"), file("l/x", b"!", 0o644)]),
                "l/x".into(),
            ),
            (
                "write through symlink to .",
                Box::new(|_| vec![symlink("l", "."), file("l/x", b"!", 0o644)]),
                "l/x".into(),
            ),
            (
                "mkdir through symlink",
                Box::new(|_| vec![dir("sub/"), symlink("l", "sub"), dir("l/inner/")]),
                "l/inner/".into(),
            ),
            (
                "link through symlink",
                Box::new(|_| vec![dir("sub/"), symlink("l", "sub"), symlink("l/s", "x")]),
                "l/s".into(),
            ),
            (
                "hard link to /etc/passwd",
                Box::new(|_| vec![hardlink("h", "/etc/passwd")]),
                "h".into(),
            ),
            (
                "hard link to ../victim",
                Box::new(|_| vec![hardlink("h", "../victim")]),
                "h".into(),
            ),
            (
                "hard link to nothing extracted",
                Box::new(|_| vec![hardlink("h", "missing")]),
                "h".into(),
            ),
            (
                "hard link to a symlink",
                Box::new(|_| vec![symlink("s", "../victim"), hardlink("h", "s")]),
                "s".into(),
            ),
            (
                "hard link to an inner symlink",
                Box::new(|_| {
                    vec![
                        file("f", b"f", 0o644),
                        symlink("s", "f"),
                        hardlink("h", "s"),
                    ]
                }),
                "h".into(),
            ),
            (
                "hard link via a symlinked dir",
                Box::new(|_| {
                    vec![
                        dir("sub/"),
                        file("sub/f", b"f", 0o644),
                        symlink("l", "sub"),
                        hardlink("h", "l/f"),
                    ]
                }),
                "h".into(),
            ),
            (
                "char device",
                Box::new(|_| vec![special("null", b'3')]),
                "null".into(),
            ),
            (
                "block device",
                Box::new(|_| vec![special("sda", b'4')]),
                "sda".into(),
            ),
            (
                "fifo",
                Box::new(|_| vec![special("pipe", b'6')]),
                "pipe".into(),
            ),
            (
                "pax path with dot-dot",
                Box::new(|_| vec![pax(b'x', "path", "../evil"), file("harmless", b"!", 0o644)]),
                "../evil".into(),
            ),
            (
                "pax linkpath climbing out",
                Box::new(|_| vec![pax(b'x', "linkpath", "../../x"), symlink("l", "ok")]),
                "l".into(),
            ),
            (
                "gnu longname with dot-dot",
                Box::new({
                    let long_evil = long_evil.clone();
                    move |_| vec![gnu_longname(&long_evil), file("placeholder", b"!", 0o644)]
                }),
                long_evil.clone(),
            ),
        ];
        for (label, build, entry) in cases {
            let s = Scene::new();
            fs::write(s.parent.path().join("victim"), b"victim").expect("victim");
            let entry = if entry == "<abs>" {
                format!("{}/evil", s.parent.path().display())
            } else {
                entry
            };
            let data = compress(Format::TarGz, &tar(&build(&s))).await;
            let err = s
                .unpack(data, "tgz", &Expected::Nothing, &Limits::default())
                .await
                .expect_err(label);
            match &err {
                UnpackError::Unsafe { entry: got, .. } => assert_eq!(got, &entry, "{label}"),
                other => panic!("{label}: expected Unsafe, got {other}"),
            }
            assert!(err.to_string().contains(&entry), "{label}: {err}");
            assert_eq!(s.outside(), vec!["victim".to_owned()], "{label}");
            assert_eq!(
                fs::read(s.parent.path().join("victim")).expect("victim"),
                b"victim",
                "{label}"
            );
        }
    }
}

#[tokio::test]
async fn a_symlinked_dir_is_not_written_through_even_when_inside() {
    let s = Scene::new();
    let data = tar(&[dir("sub/"), symlink("l", "sub"), file("l/x", b"!", 0o644)]);
    let err = s
        .unpack(data, "tar", &Expected::Nothing, &Limits::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
    assert!(!s.path("sub/x").exists());
}
