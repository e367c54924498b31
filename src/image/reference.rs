//! Image references ("busybox", "ghcr.io/org/app:v1@sha256:…") normalised
//! exactly as kubelet, containerd and docker do it: docker/distribution's
//! `ParseNormalizedNamed` followed by `TagNameOnly` (distribution/reference
//! v0.6.0 semantics), written as a small hand-rolled parser.
//!
//! Grammar (from distribution/reference):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path
//! domain     := host [ ":" port ]        host := dns-name | "[" ipv6 "]"
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [\w][\w.-]{0,127}
//! ```
//!
//! Deliberate differences from distribution: only sha256 digests are accepted
//! (like [`Digest`]); a first component that contains '.' or ':' but is not a
//! valid host (e.g. `foo_bar.com/x`) is rejected, where distribution would
//! return a reference with an empty domain that no registry client can use;
//! and `sha256:<hex>` on its own is an image ID, not `docker.io/library/sha256`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Classify, Kind};
use crate::image::digest::{Digest, DigestError};

/// The registry used when a reference names none ("busybox").
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's historical name, canonicalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Docker Hub's namespace for official images ("busybox" → "library/busybox").
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Always a domain, even without '.' or ':'.
const LOCALHOST: &str = "localhost";
const DEFAULT_TAG: &str = "latest";
/// Distribution limits the repository path (not the domain) to 255 bytes.
const MAX_PATH_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully qualified image reference: `domain/path[:tag][@digest]`.
///
/// Invariant: at least one of tag and digest is present, because parsing adds
/// the tag "latest" when neither is given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("{0:?} is an image ID, not an image reference")]
    ImageId(String),
    #[error("invalid image reference {reference:?}: {problem}")]
    Invalid { reference: String, problem: Problem },
    #[error("invalid digest in image reference {reference:?}: {source}")]
    Digest {
        reference: String,
        #[source]
        source: DigestError,
    },
}

/// Which part of a reference is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error("missing repository name")]
    MissingName,
    #[error("invalid registry host {0:?}")]
    Domain(String),
    #[error("repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("invalid repository name component {0:?}")]
    PathComponent(String),
    #[error("repository name is {0} characters long, more than {MAX_PATH_LEN}")]
    PathTooLong(usize),
    #[error("invalid tag {0:?}")]
    Tag(String),
}

impl Classify for ReferenceError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// Recognises an image ID, `sha256:<64 hex>` or bare `<64 hex>`. Callers check
/// this before [`Reference::parse`], which rejects such strings: a bare 64-hex
/// string would otherwise be a valid (and misleading) Docker Hub name.
pub fn looks_like_image_id(s: &str) -> Option<Digest> {
    Digest::parse_lenient(s).ok()
}

impl Reference {
    /// Parses and normalises a reference the way kubelet and containerd do:
    /// "busybox" → `docker.io/library/busybox:latest`,
    /// "localhost:5000/a/b@sha256:…" keeps its registry and has no tag, and
    /// "name:tag@digest" keeps both. Adds the tag "latest" when neither a tag
    /// nor a digest is given.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if looks_like_image_id(s).is_some() {
            return Err(ReferenceError::ImageId(s.to_string()));
        }
        let invalid = |problem| ReferenceError::Invalid {
            reference: s.to_string(),
            problem,
        };

        // Neither names nor tags may contain '@', so the first one starts the digest.
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((before, digest)) => {
                let digest = digest
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest {
                        reference: s.to_string(),
                        source,
                    })?;
                (before, Some(digest))
            }
            None => (s, None),
        };

        // Path components cannot contain ':', so a ':' in the last component
        // starts the tag; an earlier one can only be the registry's port.
        let last_component = name_and_tag.rfind('/').map_or(0, |slash| slash + 1);
        let (name, tag) = match name_and_tag[last_component..].find(':') {
            Some(offset) => {
                let colon = last_component + offset;
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(invalid(Problem::MissingName));
        }
        if let Some(tag) = tag.filter(|tag| !is_valid_tag(tag)) {
            return Err(invalid(Problem::Tag(tag.to_string())));
        }

        let (domain, path) = split_domain(name);
        if !is_valid_domain(domain) {
            return Err(invalid(Problem::Domain(domain.to_string())));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(Problem::Uppercase(path)));
        }
        if let Some(bad) = path.split('/').find(|c| !is_valid_path_component(c)) {
            return Err(invalid(Problem::PathComponent(bad.to_string())));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(invalid(Problem::PathTooLong(path.len())));
        }

        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Reference {
            domain: domain.to_string(),
            path,
            tag,
            digest,
        })
    }

    /// The registry host, with port if any: "docker.io", "localhost:5000".
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry: "library/busybox".
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// "docker.io/library/busybox".
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// "docker.io/library/busybox:latest", when there is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.repository()))
    }

    /// The repo-digest form, "docker.io/library/busybox@sha256:…".
    pub fn with_digest(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// What to ask the registry for: the digest if present (it pins the
    /// content even when a tag is also given), else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            // Unreachable by construction; "latest" is what parsing would add.
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    /// The canonical full form, `domain/path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

/// Splits `name` (without tag or digest) into registry and repository path,
/// as distribution's `splitDockerDomain` does.
fn split_domain(name: &str) -> (&str, String) {
    let (domain, path) = match name.split_once('/') {
        // A single component is always a Docker Hub name, even "localhost".
        None => (DEFAULT_DOMAIN, name),
        Some((LEGACY_DEFAULT_DOMAIN, rest)) => (DEFAULT_DOMAIN, rest),
        Some((first, rest))
            if first == LOCALHOST
                || first.contains(['.', ':'])
                // Repository paths are lowercase, so uppercase means a host.
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        Some(_) => (DEFAULT_DOMAIN, name),
    };
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        (domain, format!("{OFFICIAL_REPO_PREFIX}{path}"))
    } else {
        (domain, path.to_string())
    }
}

/// `host[:port]` where host is a DNS name (any case) or a bracketed IPv6
/// literal without zone. Like distribution, the port is any run of digits.
fn is_valid_domain(domain: &str) -> bool {
    let (host_is_valid, port) = match domain.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, port)) => (
                !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                port,
            ),
            None => return false,
        },
        None => {
            let host_end = domain.find(':').unwrap_or(domain.len());
            let (host, port) = domain.split_at(host_end);
            (host.split('.').all(is_valid_dns_label), port)
        }
    };
    let port_is_valid = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    host_is_valid && port_is_valid
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_valid_dns_label(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Runs of `[a-z0-9]` joined by exactly one separator: ".", "_", "__", or
/// any number of "-".
fn is_valid_path_component(component: &str) -> bool {
    let is_alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !is_alphanumeric(first) || !is_alphanumeric(last) {
        return false;
    }
    // The first and last bytes are alphanumeric, so splitting on them leaves
    // exactly the separators (plus empty strings between adjacent letters).
    component
        .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        .all(|separator| {
            matches!(separator, "" | "." | "_" | "__") || separator.bytes().all(|b| b == b'-')
        })
}

/// `[\w][\w.-]{0,127}`, where `\w` is `[A-Za-z0-9_]`.
fn is_valid_tag(tag: &str) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(is_word)
        && tag.bytes().all(|b| is_word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    const IMAGE_ID: &str = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";

    /// Input and its canonical form (cases from distribution's
    /// normalize_test.go, reference_test.go and regexp_test.go).
    #[test]
    fn normalises_valid_references() {
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:latest", "docker.io/library/busybox:latest"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/debian", "docker.io/library/debian:latest"),
            ("index.docker.io/docker/docker", "docker.io/docker/docker:latest"),
            ("docker/docker", "docker.io/docker/docker:latest"),
            ("dmcgowan/myapp:v1", "docker.io/dmcgowan/myapp:v1"),
            ("library/foo/bar", "docker.io/library/foo/bar:latest"),
            ("docker.io/library/foo/bar", "docker.io/library/foo/bar:latest"),
            ("store/foo/bar", "docker.io/store/foo/bar:latest"),
            ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
            ("localhost/fooo/bar", "localhost/fooo/bar:latest"),
            ("localhost/debian", "localhost/debian:latest"),
            ("LOCALDOMAIN/debian", "LOCALDOMAIN/debian:latest"),
            ("Foo/bar", "Foo/bar:latest"),
            ("Asdf.com/foo/bar", "Asdf.com/foo/bar:latest"),
            ("test_com/foo", "docker.io/test_com/foo:latest"),
            ("test.com:8080/foo", "test.com:8080/foo:latest"),
            ("test-com:8080/foo", "test-com:8080/foo:latest"),
            ("test:5000/repo:tag", "test:5000/repo:tag"),
            ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"),
            ("127.0.0.1:5000/library/debian", "127.0.0.1:5000/library/debian:latest"),
            ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),
            ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
            ("test.com:5000", "docker.io/library/test.com:5000"),
            ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
            ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
            ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker:latest"),
            ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest"),
            ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo:tag"),
            ("[::1]:5000/repo", "[::1]:5000/repo:latest"),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
            ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io/test.example.com/my-app:test.example.com"),
            ("registry.io/foo/project--id.module--name.ver---sion--name", "registry.io/foo/project--id.module--name.ver---sion--name:latest"),
            ("docker---rules/docker", "docker.io/docker---rules/docker:latest"),
            ("dock__er/docker", "docker.io/dock__er/docker:latest"),
            ("d/docker", "docker.io/d/docker:latest"),
            ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase"),
            ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest"),
            (&format!("docker.io/{IMAGE_ID}"), &format!("docker.io/library/{IMAGE_ID}:latest")),
            (&IMAGE_ID[..63], &format!("docker.io/library/{}:latest", &IMAGE_ID[..63])),
            (&format!("busybox@sha256:{HEX}"), &format!("docker.io/library/busybox@sha256:{HEX}")),
            (&format!("localhost@sha256:{HEX}"), &format!("docker.io/library/localhost@sha256:{HEX}")),
            (&format!("busybox:latest@sha256:{HEX}"), &format!("docker.io/library/busybox:latest@sha256:{HEX}")),
            (&format!("test:5000/repo@sha256:{HEX}"), &format!("test:5000/repo@sha256:{HEX}")),
            (&format!("[2001:db8::1]:5000/repo:tag@sha256:{HEX}"), &format!("[2001:db8::1]:5000/repo:tag@sha256:{HEX}")),
            (&format!("example.com/{}:tag", "a".repeat(255)), &format!("example.com/{}:tag", "a".repeat(255))),
            // The 255 limit is on the path alone (distribution v0.6.0).
            (&format!("{}a:t", "a/".repeat(127)), &format!("docker.io/{}a:t", "a/".repeat(127))),
            (&format!("busybox:{}", "t".repeat(128)), &format!("docker.io/library/busybox:{}", "t".repeat(128))),
        ];
        for (input, canonical) in cases {
            let reference = Reference::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(&reference.to_string(), canonical, "input {input:?}");
            // The canonical form is a fixed point.
            assert_eq!(
                &Reference::parse(canonical).unwrap(),
                &reference,
                "reparse {canonical:?}"
            );
        }
    }

    #[test]
    fn rejects_invalid_references() {
        let cases: &[&str] = &[
            "",
            " ",
            "busy box",
            "busybox ",
            "busybox:",
            ":justtag",
            "https://github.com/docker/docker",
            "docker/Docker",
            "Uppercase:tag",
            "test:5000/Uppercase/lowercase:tag",
            "-docker",
            "-docker/docker",
            "docker-/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker///docker",
            "docker/",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "dock___er/docker",
            "example.com/__underscore/myimage",
            "example.com/.dots/myimage",
            "aa/asdf$$^/aa",
            "a/a/a/a/",
            "foo.com/",
            "foo.com:http/bar",
            "foo_bar.com:8080/app",
            "do__cker:8080/docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "[2001:db8::1]:tag",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "[fd00:1:2::3]75050/repo",
            "registry.com:8080/myapp:invalid~tag",
            "registry.com:8080/myapp@sha256:badbadbadbad",
            "registry.com:8080/myapp@bad",
            "busybox@",
            "busybox:-tag",
            &format!("@sha256:{HEX}"),
            &format!("repo@sha512:{HEX}{HEX}"),
            &format!("validname@invaliddigest:{HEX}"),
            &format!("busybox:{}", "t".repeat(129)),
            &format!("domain/{}:tag", "a".repeat(256)),
            &"a".repeat(250), // "library/" pushes it over 255
            IMAGE_ID,
            &format!("sha256:{IMAGE_ID}"),
        ];
        for input in cases {
            assert!(
                Reference::parse(input).is_err(),
                "{input:?} should be rejected"
            );
        }
    }

    #[test]
    fn reports_what_is_wrong() {
        let problem = |s: &str| match Reference::parse(s) {
            Err(ReferenceError::Invalid { problem, .. }) => problem,
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert_eq!(
            Reference::parse(&format!("sha256:{IMAGE_ID}")),
            Err(ReferenceError::ImageId(format!("sha256:{IMAGE_ID}")))
        );
        assert_eq!(
            problem("docker/Docker"),
            Problem::Uppercase("docker/Docker".into())
        );
        assert_eq!(
            problem("foo_bar.com/x"),
            Problem::Domain("foo_bar.com".into())
        );
        assert_eq!(problem("a/b..c"), Problem::PathComponent("b..c".into()));
        assert_eq!(problem("a:b:c"), Problem::Tag("b:c".into()));
        assert_eq!(problem(":tag"), Problem::MissingName);
        assert_eq!(problem(&"a".repeat(250)), Problem::PathTooLong(258));
        assert!(matches!(
            Reference::parse(&format!("busybox@md5:{HEX}")),
            Err(ReferenceError::Digest {
                source: DigestError::UnsupportedAlgorithm(_),
                ..
            })
        ));
        let error = Reference::parse("UPPER").unwrap_err();
        assert_eq!(error.kind(), Kind::InvalidArgument);
        assert!(error.to_string().contains("\"UPPER\""), "{error}");
    }

    #[test]
    fn accessors_and_derived_forms() {
        let digest: Digest = format!("sha256:{HEX}").parse().unwrap();

        let plain = Reference::parse("busybox").unwrap();
        assert_eq!(plain.domain(), "docker.io");
        assert_eq!(plain.path(), "library/busybox");
        assert_eq!(plain.tag(), Some("latest"));
        assert_eq!(plain.digest(), None);
        assert_eq!(plain.repository(), "docker.io/library/busybox");
        assert_eq!(
            plain.tagged().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(plain.object(), "latest");
        assert_eq!(
            plain.with_digest(&digest),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );

        let pinned = Reference::parse(&format!("localhost:5000/a/b@sha256:{HEX}")).unwrap();
        assert_eq!(pinned.domain(), "localhost:5000");
        assert_eq!(pinned.path(), "a/b");
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.tagged(), None);
        assert_eq!(pinned.digest(), Some(&digest));
        assert_eq!(pinned.object(), digest.to_string());

        let both: Reference = format!("quay.io/x/y:v2@sha256:{HEX}").parse().unwrap();
        assert_eq!(both.tag(), Some("v2"));
        assert_eq!(both.tagged().as_deref(), Some("quay.io/x/y:v2"));
        assert_eq!(
            both.object(),
            digest.to_string(),
            "the digest pins the content"
        );
    }

    #[test]
    fn recognises_image_ids() {
        let digest: Digest = format!("sha256:{IMAGE_ID}").parse().unwrap();
        assert_eq!(looks_like_image_id(IMAGE_ID), Some(digest.clone()));
        assert_eq!(
            looks_like_image_id(&format!("sha256:{IMAGE_ID}")),
            Some(digest)
        );
        for not_an_id in [
            "busybox",
            &IMAGE_ID[..63],
            &IMAGE_ID.to_uppercase(),
            &format!("sha512:{IMAGE_ID}"),
            &format!("docker.io/{IMAGE_ID}"),
        ] {
            assert_eq!(looks_like_image_id(not_an_id), None, "{not_an_id:?}");
        }
    }
}
