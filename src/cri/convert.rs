//! Pure conversions between domain types and CRI messages.

use super::proto;
use crate::image::metadata::ImageRecord;
use crate::image::FsUsage;

/// The CRI view of an image. The config's `User` gives a numeric uid
/// (`1234`, `1234:5678`) or a user name, as kubelet expects.
pub fn image(record: &ImageRecord) -> proto::Image {
    let user = record.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(proto::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    proto::Image {
        id: record.id.to_string(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(proto::ImageSpec {
            image: record.id.to_string(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

pub fn filesystem_usage(usage: FsUsage, mountpoint: &std::path::Path) -> proto::FilesystemUsage {
    proto::FilesystemUsage {
        timestamp: now_nanos(),
        fs_id: Some(proto::FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(proto::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(proto::UInt64Value {
            value: usage.inodes_used,
        }),
    }
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Digest;

    fn record(user: &str) -> ImageRecord {
        ImageRecord {
            id: Digest::of(b"config"),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            repo_digests: vec![],
            manifest: Digest::of(b"manifest"),
            blobs: vec![],
            layers: vec![],
            size: 42,
            user: user.into(),
            pinned: false,
        }
    }

    #[test]
    fn image_user_becomes_uid_or_username() {
        let numeric = image(&record("1234:5678"));
        assert_eq!(numeric.uid, Some(proto::Int64Value { value: 1234 }));
        assert_eq!(numeric.username, "");
        let named = image(&record("www-data:1004"));
        assert_eq!(named.uid, None);
        assert_eq!(named.username, "www-data");
        let none = image(&record(""));
        assert_eq!((none.uid, none.username.as_str()), (None, ""));
        assert_eq!(none.spec.unwrap().image, Digest::of(b"config").to_string());
    }
}
