//! Formats and stored file names, from the extension.

use super::*;

#[test]
fn formats_by_extension() {
    let table = [
        ("tar", Format::Tar),
        ("tgz", Format::TarGz),
        ("tar.gz", Format::TarGz),
        ("TAR.GZ", Format::TarGz),
        ("1.2.tar.gz", Format::TarGz),
        ("tar.zst", Format::TarZst),
        ("tzst", Format::TarZst),
        ("tar.xz", Format::TarXz),
        ("txz", Format::TarXz),
        ("tar.bz2", Format::TarBz2),
        ("tbz2", Format::TarBz2),
        ("gz", Format::Gz),
        ("jar.gz", Format::Gz),
        ("txt.zst", Format::Zst),
        ("xz", Format::Xz),
        ("bz2", Format::Bz2),
        ("jar", Format::Plain),
        ("zip", Format::Plain),
        ("", Format::Plain),
    ];
    for (ext, format) in table {
        assert_eq!(format_for(ext), format, "{ext}");
    }
}

#[test]
fn stored_file_names() {
    assert_eq!(stored_file_name("app", "jar.gz"), "app.jar");
    assert_eq!(stored_file_name("app", "gz"), "app");
    assert_eq!(stored_file_name("app", "jar"), "app.jar");
    assert_eq!(stored_file_name("app", "bin.zst"), "app.bin");
    assert_eq!(stored_file_name("app", ""), "app");
}

#[tokio::test]
async fn a_bad_stored_file_name_is_refused() {
    let s = Scene::new();
    let err = unpack(
        body(b"x".to_vec()),
        "app",
        "x/../../y",
        &s.dest,
        &Expected::Nothing,
        &Limits::default(),
    )
    .await
    .expect_err("bad name");
    assert!(matches!(err, UnpackError::BadFileName { .. }), "{err}");
}
