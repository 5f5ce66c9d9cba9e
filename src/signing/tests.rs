use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{HashAlg, PrivateKey};

use super::allowed::{pattern_list_matches, timestamp};
use super::*;

fn key(seed: u8) -> PrivateKey {
    let pair = Ed25519Keypair::from_seed(&[seed; 32]);
    PrivateKey::new(KeypairData::Ed25519(pair), "test").unwrap()
}

fn line(principals: &str, options: &str, k: &PrivateKey) -> String {
    let public = k.public_key().to_openssh().unwrap();
    format!("{principals} {options} {public}\n")
}

fn revision() -> RevisionManifest {
    RevisionManifest {
        revision: "site.2026120600001Ab".parse().unwrap(),
        object: "site.2026120600001Ab.tgz".into(),
        size: 42,
        sha256: [7; 32],
        delta_index: None,
        time: "2026-12-06T00:00:01Z".into(),
    }
}

fn signed(k: &PrivateKey, namespace: &str, manifest: &str) -> Signed {
    let sig = k
        .sign(namespace, HashAlg::Sha512, manifest.as_bytes())
        .unwrap();
    let doc = Signed {
        manifest: manifest.to_owned(),
        signatures: vec![sig],
    };
    // Through its text, as a node reads it.
    Signed::parse(&doc.text().unwrap()).unwrap()
}

const NOW: u64 = 1_796_515_200; // 2026-12-06

#[test]
fn manifests_round_trip_and_only_their_canonical_form_parses() {
    let m = revision();
    assert_eq!(RevisionManifest::parse(&m.text()).unwrap(), m);
    let b = BlessManifest {
        package: "site".parse().unwrap(),
        blessed: "site.2".parse().unwrap(),
        previous: None,
        sequence: 9,
        time: "t".into(),
    };
    assert_eq!(BlessManifest::parse(&b.text()).unwrap(), b);
    for bad in [
        m.text().replace("size: 42", "size: 042"),
        m.text().replace("package: site", "package: other"),
        m.text().trim_end().to_owned(),
        format!("{}extra: 1\n", m.text()),
        b.text(),
    ] {
        assert!(RevisionManifest::parse(&bad).is_err(), "{bad}");
    }
    assert!(BlessManifest::parse(&m.text()).is_err());
}

#[test]
fn a_signature_verifies_for_an_allowed_key_in_its_namespace_only() {
    let (good, other) = (key(1), key(2));
    let allowed =
        AllowedSigners::parse(&line("deploy@example.com", "", &good).replace("  ", " ")).unwrap();
    let text = revision().text();
    let doc = signed(&good, REVISION_NAMESPACE, &text);
    let signers = allowed.verify(REVISION_NAMESPACE, &doc, NOW).unwrap();
    assert_eq!(signers[0].principals, "deploy@example.com");
    assert!(signers[0].fingerprint.starts_with("SHA256:"));

    assert!(matches!(
        allowed.verify(BLESS_NAMESPACE, &doc, NOW),
        Err(Refusal::WrongNamespace { .. })
    ));
    let stranger = signed(&other, REVISION_NAMESPACE, &text);
    assert!(matches!(
        allowed.verify(REVISION_NAMESPACE, &stranger, NOW),
        Err(Refusal::UnknownKey(_))
    ));
    let mut tampered = doc.clone();
    tampered.manifest = text.replace("size: 42", "size: 43");
    assert!(matches!(
        allowed.verify(REVISION_NAMESPACE, &tampered, NOW),
        Err(Refusal::BadSignature(_))
    ));
}

#[test]
fn namespaces_and_validity_options_are_enforced() {
    let k = key(3);
    let file = line(
        "a@x",
        "namespaces=\"ftl-bless@ftl.invalid\",valid-after=\"20260101Z\",valid-before=\"20261201Z\"",
        &k,
    );
    let allowed = AllowedSigners::parse(&file).unwrap();
    let doc = signed(&k, REVISION_NAMESPACE, &revision().text());
    assert!(matches!(
        allowed.verify(REVISION_NAMESPACE, &doc, NOW),
        Err(Refusal::NamespaceNotAllowed { .. })
    ));
    let bless = signed(&k, BLESS_NAMESPACE, &revision().text());
    let err = allowed.verify(BLESS_NAMESPACE, &bless, NOW).unwrap_err();
    assert!(
        err.to_string()
            .contains("valid before 2026-12-01T00:00:00Z"),
        "{err}"
    );
    // Within its dates, it verifies.
    assert!(
        allowed
            .verify(BLESS_NAMESPACE, &bless, NOW - 10 * 86_400)
            .is_ok()
    );
    assert!(matches!(
        allowed.verify(BLESS_NAMESPACE, &bless, 1_700_000_000),
        Err(Refusal::OutsideValidity { .. })
    ));
}

#[test]
fn the_file_format_is_openssh_s() {
    let k = key(4);
    let text = format!(
        "# comment\n\n{}\"quoted@x\" {}",
        line("a@x,b@y", "", &k),
        k.public_key().to_openssh().unwrap()
    );
    let allowed = AllowedSigners::parse(&text).unwrap();
    assert!(!allowed.is_empty());
    let (n, why) = AllowedSigners::parse(&line("ca@x", "cert-authority", &k)).unwrap_err();
    assert_eq!(n, 1);
    assert!(why.contains("cert-authority"), "{why}");
    assert!(AllowedSigners::parse("a@x ssh-ed25519 AAAAnotakey\n").is_err());
    assert!(AllowedSigners::parse(&line("a@x", "bogus=1", &k)).is_err());
}

#[test]
fn times_and_patterns() {
    assert_eq!(timestamp("20261206Z").unwrap(), NOW);
    assert_eq!(timestamp("202612060001Z").unwrap(), NOW + 60);
    assert_eq!(timestamp("20261206000001Z").unwrap(), NOW + 1);
    assert!(timestamp("2026120").is_err());
    assert!(timestamp("20261306Z").is_err());
    assert!(pattern_list_matches("ftl-*@ftl.invalid", BLESS_NAMESPACE));
    assert!(pattern_list_matches(
        "git,ftl-revision@ftl.invalid",
        REVISION_NAMESPACE
    ));
    assert!(!pattern_list_matches("ftl-*,!ftl-bless*", BLESS_NAMESPACE));
    assert!(!pattern_list_matches("git", BLESS_NAMESPACE));
}

#[test]
fn garbage_and_huge_documents_are_refused_unparsed() {
    for text in [
        "",
        "hello",
        "ftl-revision 1\n-----BEGIN SSH SIGNATURE-----\nAAAA\n",
    ] {
        assert!(
            matches!(Signed::parse(text), Err(Refusal::Garbage(_))),
            "{text}"
        );
    }
    let huge = "x".repeat(MAX_DOCUMENT as usize + 1);
    assert!(matches!(Signed::parse(&huge), Err(Refusal::TooLarge(_))));
}

#[test]
fn a_key_file_signs_what_the_allowed_signers_verify() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(5);
    let path = dir.path().join("id");
    std::fs::write(
        &path,
        k.to_openssh(ssh_key::LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let signing = SigningKey::load(&path, None).unwrap();
    let text = revision().text();
    let doc = Signed {
        manifest: text.clone(),
        signatures: vec![signing.sign(REVISION_NAMESPACE, text.as_bytes()).unwrap()],
    };
    let allowed = AllowedSigners::parse(&line("k@x", "", &k)).unwrap();
    assert!(allowed.verify(REVISION_NAMESPACE, &doc, NOW).is_ok());
    // A public key file needs the agent.
    let public = dir.path().join("id.pub");
    std::fs::write(&public, k.public_key().to_openssh().unwrap()).unwrap();
    assert!(matches!(
        SigningKey::load(&public, None),
        Err(KeyError::NoAgent(_))
    ));
}

#[test]
fn manifest_times_read_back() {
    for secs in [0, 1_796_169_600, 1_796_169_600 + 3_661] {
        assert_eq!(
            crate::names::parse_utc(&crate::names::utc(secs)),
            Some(secs)
        );
    }
    for bad in [
        "",
        "2026-12-06 12:00:00Z",
        "2026-12-06T12:00:00",
        "2026-13-06T12:00:00Z",
    ] {
        assert_eq!(crate::names::parse_utc(bad), None, "{bad}");
    }
}

#[test]
fn a_revision_manifest_may_name_a_delta_index() {
    let plain = revision();
    assert!(!plain.text().contains("delta-index"));
    assert_eq!(RevisionManifest::parse(&plain.text()).unwrap(), plain);
    let delta = RevisionManifest {
        delta_index: Some([9; 32]),
        ..revision()
    };
    let text = delta.text();
    assert!(
        text.contains(&format!(
            "sha256: {}\ndelta-index: {}\ntime: ",
            "07".repeat(32),
            "09".repeat(32)
        )),
        "{text}"
    );
    assert_eq!(RevisionManifest::parse(&text).unwrap(), delta);
    // Only in its place, only once.
    let moved = text.replace(&format!("delta-index: {}\n", "09".repeat(32)), "")
        + &format!("delta-index: {}\n", "09".repeat(32));
    assert!(RevisionManifest::parse(&moved).is_err());
    let twice = text.replace(
        "time: ",
        &format!("delta-index: {}\ntime: ", "09".repeat(32)),
    );
    assert!(RevisionManifest::parse(&twice).is_err());
}
