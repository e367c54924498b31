//! Image reference parsing (`wharf::image::reference`), as every CRI image
//! call does with a name kubelet or crictl sent: it must never panic, and
//! the canonical form it produces must parse back to the same reference.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::image::digest::Digest;
use wharf::image::reference::{looks_like_image_id, Reference, ReferenceError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text, "a digest prints as it parsed");
        assert_eq!(digest.hex().len(), 64);
    }
    let image_id = looks_like_image_id(text);

    match Reference::parse(text) {
        Err(ReferenceError::ImageId(_)) => assert!(image_id.is_some()),
        Err(_) => {}
        Ok(reference) => {
            assert!(image_id.is_none(), "{text:?} is both an ID and a reference");
            check(&reference, text);
            // The canonical form is a fixed point.
            let canonical = reference.to_string();
            let again = Reference::parse(&canonical)
                .unwrap_or_else(|e| panic!("canonical {canonical:?} of {text:?} fails: {e}"));
            assert_eq!(again, reference, "{text:?} -> {canonical:?}");
            // So is the tagged form, and the repo-digest form.
            if let Some(tagged) = reference.tagged() {
                let tagged = Reference::parse(&tagged)
                    .unwrap_or_else(|e| panic!("tagged form {tagged:?} fails: {e}"));
                assert_eq!(tagged.repository(), reference.repository());
                assert_eq!(tagged.tag(), reference.tag());
                assert_eq!(tagged.digest(), None);
            }
            let digest = Digest::of(data);
            let pinned = reference.with_digest(&digest);
            let pinned = Reference::parse(&pinned)
                .unwrap_or_else(|e| panic!("repo digest {pinned:?} fails: {e}"));
            assert_eq!(pinned.repository(), reference.repository());
            assert_eq!(pinned.digest(), Some(&digest));
            assert_eq!(pinned.tag(), None);
        }
    }
});

fn check(reference: &Reference, text: &str) {
    assert!(!reference.domain().is_empty(), "{text:?}: empty domain");
    assert!(!reference.path().is_empty(), "{text:?}: empty path");
    assert!(reference.path().len() <= 255, "{text:?}: path too long");
    assert!(
        reference.tag().is_some() || reference.digest().is_some(),
        "{text:?}: neither tag nor digest"
    );
    assert!(
        !reference.path().bytes().any(|b| b.is_ascii_uppercase()),
        "{text:?}: uppercase path"
    );
    assert_eq!(
        reference.repository(),
        format!("{}/{}", reference.domain(), reference.path())
    );
    let object = reference.object();
    match reference.digest() {
        Some(digest) => assert_eq!(object, digest.to_string()),
        None => assert_eq!(Some(object.as_str()), reference.tag()),
    }
}
