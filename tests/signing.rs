//! Signed revisions and blesses. The hostile part: an attacker with full
//! write access to the bucket and no allowed key. In every case the node
//! downloads nothing beyond the manifest, runs no hook of what it refuses,
//! keeps `current` where it was, exits 1 and names the revision and the
//! reason. Plus the `ssh-keygen` interoperability both ways, and a fleet
//! without `FTL_ALLOWED_SIGNERS` that behaves as before.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, Fault, World, current, in_process, legacy, output_within, stderr, stdout};

fn ssh_keygen() -> Command {
    assert!(
        common::has_tool("ssh-keygen"),
        "ssh-keygen (Debian: openssh-client) is needed by these tests"
    );
    Command::new("ssh-keygen")
}

/// A fresh key pair without passphrase: the private key's path (`.pub` beside).
fn keygen(w: &World, name: &str, kind: &str) -> PathBuf {
    let path = w.path(name);
    let out = ssh_keygen()
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(format!("{}.pub", key.display()))
        .unwrap()
        .trim()
        .to_owned()
}

/// An allowed_signers file of `(principals, options, key)` lines.
fn allowed(w: &World, name: &str, lines: &[(&str, &str, &Path)]) -> PathBuf {
    let text: String = lines
        .iter()
        .map(|(p, o, k)| format!("{p} {o} {}\n", public(k)))
        .collect();
    let path = w.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

const LIMIT: std::time::Duration = common::RUN_LIMIT;

/// A deploy box with `key`, and a node trusting `allowed`.
struct Fleet {
    w: World,
    alice: PathBuf,
    mallory: PathBuf,
    allowed: PathBuf,
    node: PathBuf,
    hooks: PathBuf,
}

impl Fleet {
    fn new(backend: Backend) -> Fleet {
        let w = World::new(backend);
        let alice = keygen(&w, "alice", "ed25519");
        let mallory = keygen(&w, "mallory", "ed25519");
        let allowed = allowed(&w, "allowed_signers", &[("alice@example.com", "", &alice)]);
        // `other` is spooled to the bucket, never served on this node.
        let node = w.node("node", &["site"]);
        let hooks = w.path("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        Fleet {
            w,
            alice,
            mallory,
            allowed,
            node,
            hooks,
        }
    }

    /// A package whose post-sync and pre-jump hooks leave a trace.
    fn package(&self, name: &str, v: &str) -> PathBuf {
        let hook = format!(
            "#!/bin/sh\ntouch {}/$FTL_STEP-$FTL_REVISION\n",
            self.hooks.display()
        );
        let file = format!("{name}.tgz");
        common::package(
            self.w.tmp.path(),
            &file,
            &[
                ("v", v, 0o644),
                ("post-sync.sh", &hook, 0o755),
                ("pre-jump.sh", &hook, 0o755),
            ],
        )
    }

    fn box_cmd(&self, key: Option<&Path>, args: &[&str]) -> std::process::Output {
        let mut cmd = self.w.ftl(self.w.tmp.path());
        if let Some(k) = key {
            cmd.env("FTL_SIGNING_KEY", k);
        }
        output_within(cmd.args(args), LIMIT)
    }

    /// `ftl spool` on the deploy box, signed with `key`.
    fn spool(&self, key: Option<&Path>, name: &str, v: &str) -> String {
        let out = self.box_cmd(key, &["spool", self.package(name, v).to_str().unwrap()]);
        assert!(out.status.success(), "spool: {}", stderr(&out));
        let rev = stdout(&out).trim().to_owned();
        // Ids have one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        rev
    }

    fn bless(&self, key: Option<&Path>, rev: &str) {
        let out = self.box_cmd(key, &["jump", "--master", rev]);
        assert!(out.status.success(), "bless: {}", stderr(&out));
    }

    fn node_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.w.ftl(&self.node);
        cmd.env("FTL_ALLOWED_SIGNERS", &self.allowed).args(args);
        cmd
    }

    fn sync(&self) -> std::process::Output {
        output_within(&mut self.node_cmd(&["sync"]), LIMIT)
    }

    fn hooked(&self, rev: &str) -> bool {
        std::fs::read_dir(&self.hooks)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(rev))
    }

    /// v1 signed, blessed signed, synced: the node runs it.
    fn deployed(backend: Backend) -> (Fleet, String) {
        let f = Fleet::new(backend);
        let v1 = f.spool(Some(&f.alice), "site", "1");
        f.bless(Some(&f.alice), &v1);
        let out = f.sync();
        assert!(out.status.success(), "first sync: {}", stderr(&out));
        assert_eq!(
            current(&f.node, "site").as_deref(),
            Some(common::id_of(&v1).as_str())
        );
        assert!(f.hooked(&v1), "the signed revision's hooks ran");
        (f, v1)
    }

    /// Runs a sync that must refuse: exit 1, `reason` and `named` in its
    /// one error line (and nowhere else), `current` still `kept`, no hook of `attacked` run, and
    /// no GET of its object (each is answered 503 and counted).
    fn refused(&self, attacked: &str, kept: &str, named: &str, reason: &str) {
        let server = in_process(&self.w);
        server.set_fault(Fault::SlowDownGet(format!(
            "{}.tgz",
            common::id_of(attacked)
        )));
        let before = server.slowed_gets();
        let out = self.sync();
        server.set_fault(Fault::None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        // One failure, one line: the error line, last, names it; no log
        // line said it before.
        let line = common::error_line(&out);
        assert!(
            line.contains(named) && line.contains("refused") && line.contains(reason),
            "the error line names {named} and {reason:?}: {err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains(reason)).count(),
            1,
            "{reason:?} said once: {err}"
        );
        assert_eq!(
            server.slowed_gets(),
            before,
            "the object of {attacked} was requested: {err}"
        );
        assert_eq!(
            current(&self.node, "site").as_deref(),
            Some(common::id_of(kept).as_str()),
            "current moved: {err}"
        );
        assert!(!self.hooked(attacked), "a hook of {attacked} ran: {err}");
        assert!(
            !common::revs(&self.node, "site").contains(&common::id_of(attacked)),
            "{attacked} was installed"
        );
    }
}

/// The attacker's write, with the package's change marker touched too (it
/// has full write access: it wants the nodes to look).
fn put(w: &World, key: &str, body: &[u8]) {
    legacy::put(w, key, body, "application/octet-stream");
    let package = key.split('.').next().unwrap();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    legacy::put(
        w,
        &format!("{package}.changed"),
        format!("attacker {n}").as_bytes(),
        "text/plain",
    );
}

fn get(w: &World, key: &str) -> Vec<u8> {
    legacy::get(w, key).unwrap_or_else(|| panic!("{key} is missing"))
}

fn sig_key(rev: &str) -> String {
    let (p, id) = rev.split_once('.').unwrap();
    format!("{p}.sig-{id}")
}

#[test]
fn unsigned_revision_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    // The attacker spools and blesses without a key (as ftl 0.2.6 would).
    let v2 = f.spool(None, "site", "evil");
    legacy::bless(&f.w, "site", &v2);
    f.refused(&v2, &v1, &v2, "not signed");
    // The signed bless is still followed, with a warning about the pointers.
    let err = stderr(&f.sync());
    assert!(err.contains("following the signed bless"), "{err}");
}

#[test]
fn revision_signed_by_an_unknown_key_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(Some(&f.mallory), "site", "evil");
    f.refused(&v2, &v1, &v2, "not in the allowed signers");
    // Nor does mallory's bless of it move anything.
    f.bless(Some(&f.mallory), &v2);
    f.refused(
        &v2,
        &v1,
        &format!("{v2}: bless refused"),
        "not in the allowed signers",
    );
}

#[test]
fn valid_signature_over_another_digest_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(None, "site", "evil");
    // Alice's valid signature of v1, copied beside v2.
    put(&f.w, &sig_key(&v2), &get(&f.w, &sig_key(&v1)));
    f.refused(&v2, &v1, &v2, &format!("is for {v1}, not {v2}"));
}

#[test]
fn object_replaced_after_signing_is_refused_before_install() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    f.bless(Some(&f.alice), &v2);
    // Same size, other bytes: only the digest in the signed manifest tells.
    let key = format!("{v2}.tgz");
    let mut bytes = get(&f.w, &key);
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    put(&f.w, &key, &bytes);
    let out = f.sync();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&v2) && err.contains("digest mismatch"),
        "{err}"
    );
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
    assert!(!f.hooked(&v2), "{err}");
}

#[test]
fn revision_signature_replayed_as_a_bless_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    std::thread::sleep(std::time::Duration::from_millis(100));
    // v2 is signed but not blessed: the attacker presents its signature as
    // the bless.
    put(&f.w, "site.bless", &get(&f.w, &sig_key(&v2)));
    legacy::bless(&f.w, "site", &v2);
    f.refused(
        &v2,
        &v1,
        &format!("{v2}: bless refused"),
        "namespace \"ftl-revision@ftl.invalid\"",
    );
}

#[test]
fn old_valid_bless_replayed_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    f.bless(Some(&f.alice), &v2);
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v2)));
    let bless_of_v2 = get(&f.w, "site.bless");
    // A legitimate rollback is a new, higher bless: followed.
    let out = f.box_cmd(Some(&f.alice), &["jump-back", "--master", "site"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
    // The attacker brings v2 back with its old, validly signed bless.
    put(&f.w, "site.bless", &bless_of_v2);
    legacy::bless(&f.w, "site", &v2);
    let out = f.sync();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        common::error_line(&out).starts_with(&format!(
            "ftl: error: {v2}: bless refused: its bless goes backwards"
        )),
        "{err}"
    );
    assert!(err.contains("goes backwards"), "{err}");
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
}

#[test]
fn bless_of_another_packages_revision_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let o1 = f.spool(Some(&f.alice), "other", "o");
    f.bless(Some(&f.alice), &o1);
    put(&f.w, "site.bless", &get(&f.w, "other.bless"));
    f.refused(&o1, &v1, &format!("{v1}: bless refused"), "not site");
}

#[test]
fn revision_signed_for_another_package_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let o1 = f.spool(Some(&f.alice), "other", "o");
    // The same object and signature, under package site.
    let site_rev = format!("site.{}", common::id_of(&o1));
    put(
        &f.w,
        &format!("{site_rev}.tgz"),
        &get(&f.w, &format!("{o1}.tgz")),
    );
    put(&f.w, &sig_key(&site_rev), &get(&f.w, &sig_key(&o1)));
    f.refused(&site_rev, &v1, &site_rev, &format!("is for {o1}"));
}

#[test]
fn signer_outside_valid_before_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    f.bless(Some(&f.alice), &v2);
    // Alice's key was revoked: valid before 2020.
    allowed(
        &f.w,
        "allowed_signers",
        &[("alice@example.com", "valid-before=\"20200101Z\"", &f.alice)],
    );
    f.refused(
        &v2,
        &v1,
        &format!("{v2}: bless refused"),
        "valid before 2020-01-01T00:00:00Z",
    );
}

#[test]
fn one_signer_when_two_are_required_is_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    f.bless(Some(&f.alice), &v2);
    let server = in_process(&f.w);
    server.set_fault(Fault::SlowDownGet(format!("{}.tgz", common::id_of(&v2))));
    let out = output_within(f.node_cmd(&["sync"]).env("FTL_REQUIRE_SIGNERS", "2"), LIMIT);
    server.set_fault(Fault::None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        common::error_line(&out).starts_with(&format!(
            "ftl: error: {v2}: bless refused: signed by 1 of the 2"
        )),
        "{err}"
    );
    assert_eq!(server.slowed_gets(), 0, "{err}");
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
    assert!(!f.hooked(&v2));
    // Status shows the bless as pending; a second allowed signer cosigns it,
    // and the nodes follow.
    let bob = keygen(&f.w, "bob", "ecdsa");
    allowed(
        &f.w,
        "allowed_signers",
        &[
            ("alice@example.com", "", &f.alice),
            ("bob@example.com", "", &bob),
        ],
    );
    let status = |f: &Fleet| {
        output_within(
            f.node_cmd(&["status", "--json"])
                .env("FTL_REQUIRE_SIGNERS", "2"),
            LIMIT,
        )
    };
    let out = status(&f);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let pending = v["packages"][0]["bless_pending"]
        .as_str()
        .unwrap_or_default();
    assert!(pending.contains("signed by 1 of the 2"), "{v}");
    let out = f.box_cmd(Some(&bob), &["jump", "--master", "--cosign", &v2]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = output_within(f.node_cmd(&["sync"]).env("FTL_REQUIRE_SIGNERS", "2"), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v2)));
    let out = status(&f);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["packages"][0]["bless"]["signers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn garbage_or_huge_signature_files_are_refused() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(None, "site", "evil");
    put(&f.w, &sig_key(&v2), b"\x00\x01 not a signature at all");
    f.refused(&v2, &v1, &v2, "not a signed ftl manifest");
    put(&f.w, &sig_key(&v2), &vec![b'A'; 10 << 20]);
    f.refused(&v2, &v1, &v2, "larger than 65536 bytes");
    put(
        &f.w,
        "site.bless",
        b"-----BEGIN SSH SIGNATURE-----\ngarbage\n",
    );
    f.refused(&v2, &v1, "bless refused", "not a signed ftl manifest");
}

#[test]
fn local_jump_checks_the_recorded_signature() {
    let (f, v1) = Fleet::deployed(Backend::Dir);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    // Installed, verified: a manual jump is allowed...
    let out = output_within(&mut f.node_cmd(&["jump", &v2]), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = output_within(&mut f.node_cmd(&["jump", &v1]), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    // ...until the key is revoked: no hook of it runs then.
    std::fs::remove_dir_all(&f.hooks).unwrap();
    std::fs::create_dir_all(&f.hooks).unwrap();
    allowed(
        &f.w,
        "allowed_signers",
        &[("alice@example.com", "valid-before=\"20200101Z\"", &f.alice)],
    );
    let out = output_within(&mut f.node_cmd(&["jump", &v2]), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(common::error_line(&out).contains(&format!("{v2}: refused")));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
    assert!(!f.hooked(&v2));
}

#[test]
fn without_allowed_signers_nothing_changes() {
    // Unsigned, as before this feature: installed and jumped to.
    let f = Fleet::new(Backend::Dir);
    let v1 = f.spool(None, "site", "1");
    f.bless(None, &v1);
    let out = output_within(f.w.ftl(&f.node).arg("sync"), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
    // And signed revisions are not a problem for a node that does not verify.
    let v2 = f.spool(Some(&f.mallory), "site", "2");
    f.bless(Some(&f.mallory), &v2);
    let out = output_within(f.w.ftl(&f.node).arg("sync"), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v2)));
    // The same node with FTL_ALLOWED_SIGNERS refuses both.
    let out = f.sync();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn signed_deploy_shows_signers_in_list_and_status() {
    let (f, v1) = Fleet::deployed(Backend::Dir);
    let out = output_within(&mut f.node_cmd(&["list", "--master", "site"]), LIMIT);
    assert_eq!(
        stdout(&out),
        format!(
            "{v1}\t(active)\tsigned-by=alice@example.com\tblessed-by=alice@example.com\tbless-sequence={}\n",
            bless_sequence(&f.w)
        )
    );
    let out = output_within(&mut f.node_cmd(&["status", "--json"]), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let site = &v["packages"][0];
    assert_eq!(site["name"], "site");
    assert_eq!(site["bless"]["blessed"], v1.as_str());
    assert_eq!(
        site["bless"]["signers"][0]["principals"],
        "alice@example.com"
    );
    assert_eq!(site["verified"][0]["name"], v1.as_str());
    assert_eq!(site["refused"], serde_json::json!([]));
    // Without allowed signers, list shows the key's fingerprint.
    let out = output_within(f.w.ftl(&f.node).args(["list", "--master", "site"]), LIMIT);
    assert!(
        stdout(&out).contains("\tsigned-by=SHA256:"),
        "{}",
        stdout(&out)
    );
}

/// A bless made without a key over a signed one: the nodes that check
/// signatures keep following the signed bless, and `list --master` shows its
/// signer beside the revision it names, not beside the pointers' one.
#[test]
fn an_unsigned_bless_does_not_borrow_the_signed_blesss_signer() {
    let (f, v1) = Fleet::deployed(Backend::Dir);
    let v2 = f.spool(None, "site", "2");
    f.bless(None, &v2);
    let out = output_within(&mut f.node_cmd(&["list", "--master", "site"]), LIMIT);
    assert_eq!(
        stdout(&out),
        format!(
            "{v1}\tsigned-by=alice@example.com\tblessed-by=alice@example.com\tbless-sequence={}\n{v2}\t(active)\n",
            bless_sequence(&f.w)
        )
    );
}

fn bless_sequence(w: &World) -> u64 {
    let text = String::from_utf8(get(w, "site.bless")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sequence: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// The manifest and signatures as `list --master --json` shows them.
fn shown(f: &Fleet, rev: &str) -> (String, String) {
    let out = output_within(
        f.w.ftl(&f.node)
            .args(["list", "--master", "site", "--json"]),
        LIMIT,
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let r = v["packages"][0]["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rev)
        .unwrap()
        .clone();
    (
        r["signature"]["manifest"].as_str().unwrap().to_owned(),
        r["signature"]["signatures"][0].as_str().unwrap().to_owned(),
    )
}

#[test]
fn ftl_signatures_verify_with_ssh_keygen() {
    let f = Fleet::new(Backend::Dir);
    let ecdsa = keygen(&f.w, "ecdsa", "ecdsa");
    for key in [&f.alice, &ecdsa] {
        let rev = f.spool(Some(key), "site", "1");
        let (manifest, signature) = shown(&f, &rev);
        let sig = f.w.path("manifest.sig");
        std::fs::write(&sig, signature).unwrap();
        let signers = allowed(&f.w, "ssh_allowed", &[("deploy@example.com", "", key)]);
        let mut child = ssh_keygen()
            .args(["-Y", "verify", "-n", "ftl-revision@ftl.invalid", "-I"])
            .arg("deploy@example.com")
            .arg("-f")
            .arg(&signers)
            .arg("-s")
            .arg(&sig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen -Y verify: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains("Good \"ftl-revision@ftl.invalid\" signature"));
    }
}

#[test]
fn ssh_keygen_signatures_are_accepted() {
    let f = Fleet::new(Backend::Dir);
    // Spooled unsigned; signed by hand with ssh-keygen over the manifest a
    // signed spool would write.
    let v1 = f.spool(None, "site", "1");
    let bytes = get(&f.w, &format!("{v1}.tgz"));
    let sha = sha256_hex(&f.w, &bytes);
    let manifest = format!(
        "ftl-revision 1\npackage: site\nrevision: {v1}\nobject: {v1}.tgz\nsize: {}\nsha256: {sha}\ntime: 2026-12-06T00:00:00Z\n",
        bytes.len()
    );
    let signature = ssh_sign(&f, &f.alice, "ftl-revision@ftl.invalid", &manifest);
    put(
        &f.w,
        &sig_key(&v1),
        format!("{manifest}{signature}").as_bytes(),
    );
    let bless = format!(
        "ftl-bless 1\npackage: site\nblessed: {v1}\nprevious: -\nsequence: 5\ntime: 2026-12-06T00:00:00Z\n"
    );
    let signature = ssh_sign(&f, &f.alice, "ftl-bless@ftl.invalid", &bless);
    put(&f.w, "site.bless", format!("{bless}{signature}").as_bytes());
    legacy::bless(&f.w, "site", &v1);
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
}

fn ssh_sign(f: &Fleet, key: &Path, namespace: &str, text: &str) -> String {
    let file = f.w.path(&format!("to-sign-{namespace}"));
    std::fs::write(&file, text).unwrap();
    let out = ssh_keygen()
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(format!("{}.sig", file.display())).unwrap()
}

fn sha256_hex(w: &World, bytes: &[u8]) -> String {
    let path = w.path("hash-me");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_owned()
}

#[test]
fn signing_through_ssh_agent_and_passphrase_errors() {
    let f = Fleet::new(Backend::Dir);
    // A passphrase-protected key, and no terminal to ask: a clear error.
    let locked = f.w.path("locked");
    let out = ssh_keygen()
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&locked)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = f.box_cmd(
        Some(&locked),
        &["spool", f.package("site", "1").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let line = common::error_line(&out);
    assert!(
        line.contains("passphrase") && line.contains("ssh-agent"),
        "{line}"
    );
    // The same key through ssh-agent: given as its public key.
    assert!(
        common::has_tool("ssh-agent"),
        "ssh-agent (openssh-client) is needed"
    );
    let sock = f.w.path("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let add = Command::new("ssh-add")
        .arg(&f.alice)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", stderr(&add));
    let pubkey = PathBuf::from(format!("{}.pub", f.alice.display()));
    let mut cmd = f.w.ftl(f.w.tmp.path());
    cmd.env("FTL_SIGNING_KEY", &pubkey)
        .env("SSH_AUTH_SOCK", &sock)
        .args(["spool", f.package("site", "1").to_str().unwrap()]);
    let out = output_within(&mut cmd, LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    let v1 = stdout(&out).trim().to_owned();
    f.bless(Some(&f.alice), &v1);
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
}

#[test]
fn ftl_sign_signs_a_revision_spooled_unsigned() {
    let (f, v1) = Fleet::deployed(Backend::S3);
    let v2 = f.spool(None, "site", "2");
    f.bless(Some(&f.alice), &v2);
    f.refused(&v2, &v1, &v2, "not signed");
    let out = f.box_cmd(Some(&f.alice), &["sign", &v2]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Signing changed its signature object: tried again at once, whatever the back-off.
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v2)));
    assert!(f.hooked(&v2));
    // The metrics count what was refused.
    let metrics = f.w.path("metrics.prom");
    let out = output_within(
        f.node_cmd(&["status"]).env("FTL_METRICS_FILE", &metrics),
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("ftl_package_signature_refusals{package=\"site\"} 0"),
        "{text}"
    );
}

#[test]
fn refusals_are_counted_in_the_metrics() {
    let (f, v1) = Fleet::deployed(Backend::Dir);
    let v2 = f.spool(None, "site", "2");
    let metrics = f.w.path("metrics.prom");
    let out = output_within(
        f.node_cmd(&["sync"]).env("FTL_METRICS_FILE", &metrics),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("ftl_package_signature_refusals{package=\"site\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("\nftl_signature_refusals_total 1\n"),
        "{text}"
    );
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));
    let _ = v2;
}

/// `ssh-keygen -l`'s fingerprint of `key`, `SHA256:…`.
fn fingerprint(key: &Path) -> String {
    let out = ssh_keygen().arg("-lf").arg(key).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn the_history_names_the_key_that_signed_each_bless() {
    let (f, v1) = Fleet::deployed(Backend::Dir);
    let v2 = f.spool(Some(&f.alice), "site", "2");
    f.bless(Some(&f.alice), &v2);
    let bob = keygen(&f.w, "bob", "ed25519");
    let out = f.box_cmd(Some(&bob), &["jump", "--master", "--cosign", &v2]);
    assert!(out.status.success(), "cosign: {}", stderr(&out));
    // An unsigned jump-back: no signer.
    let out = f.box_cmd(None, &["jump-back", "--master", "site"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f.box_cmd(Some(&bob), &["jump-back", "--master", "site"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (alice, bob) = (fingerprint(&f.alice), fingerprint(&bob));
    let out = f.box_cmd(None, &["log", "--master", "site", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let seen: Vec<(&str, &str, Option<&str>)> = log["packages"][0]["blesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["action"].as_str().unwrap(),
                b["revision"].as_str().unwrap(),
                b["signer"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("jump-back", v2.as_str(), Some(bob.as_str())),
            ("jump-back", v1.as_str(), None),
            ("cosign", v2.as_str(), Some(bob.as_str())),
            ("bless", v2.as_str(), Some(alice.as_str())),
            ("bless", v1.as_str(), Some(alice.as_str())),
        ],
        "{log}"
    );
    // The text form: `signer=` on the signed lines only.
    let out = f.box_cmd(None, &["log", "--master", "site"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].ends_with(&format!(" signer={bob}")), "{text}");
    assert!(!lines[1].contains("signer="), "{text}");
    assert!(lines[4].ends_with(&format!(" signer={alice}")), "{text}");
}

/// Issue 15, item 4: a frozen view is noticed. An attacker (or a stuck
/// mirror) keeps serving an old, validly signed bless: with
/// FTL_MAX_BLESS_AGE the node's status says so (exit 3, text, JSON,
/// metrics); `ftl jump --master --refresh` from the CI makes it fresh again.
#[test]
fn an_old_bless_is_stale_until_refreshed() {
    let (f, v1) = Fleet::deployed(Backend::Dir);
    // A valid bless of what is deployed, signed long ago (its sequence still
    // above what the node accepted).
    let bless = format!(
        "ftl-bless 1\npackage: site\nblessed: {v1}\nprevious: -\nsequence: 9000000000\ntime: 2020-01-01T00:00:00Z\n"
    );
    let signature = ssh_sign(&f, &f.alice, "ftl-bless@ftl.invalid", &bless);
    put(&f.w, "site.bless", format!("{bless}{signature}").as_bytes());
    let metrics = f.w.path("ftl.prom");
    let status = |json: bool| {
        let mut cmd = f.node_cmd(&["status"]);
        cmd.env("FTL_MAX_BLESS_AGE", "86400")
            .env("FTL_METRICS_FILE", &metrics);
        if json {
            cmd.arg("--json");
        }
        output_within(&mut cmd, LIMIT)
    };

    // Without the setting, the old bless is simply followed.
    let out = output_within(&mut f.node_cmd(&["status"]), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = status(false);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("ftl: error"), "a result, not an error: {err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("FTL_MAX_BLESS_AGE"))
            .count(),
        1,
        "said once: {err}"
    );
    let line = stdout(&out);
    assert!(
        line.starts_with("site: out-of-step ") && line.contains(" bless-stale="),
        "{line}"
    );
    let out = status(true);
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let site = &doc["packages"][0];
    assert_eq!(site["bless_stale"], serde_json::json!(true), "{doc}");
    assert!(site["bless_age"].as_u64().unwrap() > 86400 * 300, "{doc}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.lines()
            .any(|l| l.starts_with("ftl_package_bless_age_seconds{package=\"site\"} ")),
        "{prom}"
    );
    assert!(
        prom.contains("ftl_package_in_step{package=\"site\"} 0"),
        "{prom}"
    );
    // A sync follows it all the same (it is valid), with a warning.
    let out = output_within(
        f.node_cmd(&["sync"]).env("FTL_MAX_BLESS_AGE", "86400"),
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("may be frozen"), "{}", stderr(&out));

    // The refresh needs the allowed signers, to verify what it signs again.
    let out = f.box_cmd(Some(&f.alice), &["jump", "--master", "--refresh", "site"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FTL_ALLOWED_SIGNERS"),
        "{}",
        stderr(&out)
    );
    let refresh = |key: &Path, what: &str| {
        let mut cmd = f.w.ftl(f.w.tmp.path());
        cmd.env("FTL_SIGNING_KEY", key)
            .env("FTL_ALLOWED_SIGNERS", &f.allowed)
            .args(["jump", "--master", "--refresh", what]);
        output_within(&mut cmd, LIMIT)
    };
    let before = get(&f.w, "site.bless");
    let out = refresh(&f.alice, &v1);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(get(&f.w, "site.bless"), before);
    let out = status(true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let site = &doc["packages"][0];
    assert_eq!(site["bless_stale"], serde_json::json!(false), "{doc}");
    assert!(site["bless_age"].as_u64().unwrap() < 86400, "{doc}");
    assert!(
        site["bless"]["sequence"].as_u64().unwrap() > 9_000_000_000,
        "{doc}"
    );
    // The nodes follow the refreshed bless.
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v1)));

    // Never a bless that does not verify, nor one the pointers disagree with.
    let v2 = f.spool(Some(&f.alice), "site", "2");
    legacy::bless(&f.w, "site", &v2);
    let out = refresh(&f.alice, "site");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        common::error_line(&out).contains("the pointers name"),
        "{}",
        stderr(&out)
    );
    legacy::bless(&f.w, "site", &v1);
    let forged = format!(
        "ftl-bless 1\npackage: site\nblessed: {v1}\nprevious: -\nsequence: 9900000000\ntime: 2020-01-01T00:00:00Z\n"
    );
    let signature = ssh_sign(&f, &f.mallory, "ftl-bless@ftl.invalid", &forged);
    put(
        &f.w,
        "site.bless",
        format!("{forged}{signature}").as_bytes(),
    );
    let out = refresh(&f.alice, "site");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        common::error_line(&out).contains("does not verify"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        get(&f.w, "site.bless"),
        format!("{forged}{signature}").into_bytes()
    );
}

// A delta-ready revision's manifest covers its index (`delta-index:`),
// whether signed at spool or later by `ftl sign`; a verifying node installs
// it as a delta, from the signed revision it holds.
#[test]
fn delta_ready_revisions_are_signed_with_their_index_and_installed_as_deltas() {
    let f = Fleet::new(Backend::S3);
    let spool = |v: &str, key: Option<&Path>| {
        let file = f.package("site", v);
        let out = f.box_cmd(key, &["spool", "--delta", file.to_str().unwrap()]);
        assert!(out.status.success(), "spool: {}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        stdout(&out).trim().to_owned()
    };
    let v1 = spool("1", Some(&f.alice));
    f.bless(Some(&f.alice), &v1);
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    let v2 = spool("2", Some(&f.alice));
    let doc = String::from_utf8(get(&f.w, &sig_key(&v2))).unwrap();
    assert!(doc.contains("\ndelta-index: "), "{doc}");
    f.bless(Some(&f.alice), &v2);
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(": delta from "), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v2)));
    assert!(f.hooked(&v2));

    let v3 = spool("3", None);
    let out = f.box_cmd(Some(&f.alice), &["sign", &v3]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = String::from_utf8(get(&f.w, &sig_key(&v3))).unwrap();
    assert!(doc.contains("\ndelta-index: "), "{doc}");
    f.bless(Some(&f.alice), &v3);
    let out = f.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(": delta from "), "{}", stderr(&out));
    assert_eq!(current(&f.node, "site"), Some(common::id_of(&v3)));
}
