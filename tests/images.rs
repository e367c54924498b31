//! The image service through the unix socket, with the independent
//! `k8s-cri` client, against a real registry.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::Duration;

use common::fake_registry::{FakeRegistry, LayerFault};
use common::{
    auth_registry, image_spec, poll_until, pull_request, registry, Daemon, AUTH_PASSWORD, AUTH_USER,
};
use k8s_cri::v1::{
    AuthConfig, CheckpointContainerRequest, ImageFilter, ImageFsInfoRequest, ImageStatusRequest,
    ListImagesRequest, RemoveImageRequest, RuntimeConfigRequest, StatusRequest, VersionRequest,
};
use tonic::Code;

async fn list_ids(daemon: &Daemon) -> Vec<String> {
    let mut client = daemon.images().await;
    let response = client
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap();
    response
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect()
}

async fn status(daemon: &Daemon, name: &str) -> Option<k8s_cri::v1::Image> {
    let mut client = daemon.images().await;
    let request = ImageStatusRequest {
        image: Some(image_spec(name)),
        verbose: false,
    };
    client
        .image_status(request)
        .await
        .unwrap()
        .into_inner()
        .image
}

#[tokio::test]
async fn version_status_and_runtime_config() {
    let daemon = Daemon::start("").await;
    let mut runtime = daemon.runtime().await;
    let version = runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "wharf");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    let status = runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(
        !network.status,
        "no CNI config exists in the test's conf dir"
    );
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(status.info["config"].contains("wharf.sock"));
    // containerd's keys, and the handlers as probed.
    assert_eq!(status.info["lastCNILoadStatus"], network.message);
    let cni: serde_json::Value = serde_json::from_str(&status.info["cniconfig"]).unwrap();
    assert_eq!(
        cni["PluginConfDir"].as_str().map(std::path::PathBuf::from),
        Some(daemon.cni_dir())
    );
    let handlers: serde_json::Value =
        serde_json::from_str(&status.info["runtimeHandlers"]).unwrap();
    let names: Vec<&str> = handlers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&""), "{handlers}");
    for handler in handlers.as_array().unwrap() {
        assert!(handler["features"]["recursiveReadOnlyMounts"].is_boolean());
        assert!(handler["root"].as_str().is_some_and(|r| !r.is_empty()));
    }

    let loopback = r#"{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}"#;
    std::fs::write(daemon.cni_dir().join("10-test.conflist"), loopback).unwrap();
    let status = runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .find(|c| c.r#type == "NetworkReady")
            .unwrap()
            .status
    );

    let config = runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.unwrap().cgroup_driver,
        k8s_cri::v1::CgroupDriver::Cgroupfs as i32
    );

    // An RPC Wharf does not serve names itself.
    let err = runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn pull_by_tag_and_digest_and_look_up_every_way() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    let latest = registry.image("wharf-test/busybox:latest");
    let id = registry.digest("wharf-test/busybox:latest#config");
    let manifest = registry.digest("wharf-test/busybox:latest");

    let pulled = client
        .pull_image(pull_request(&latest, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, id);
    // The same image under a second tag, then by digest: one image, all names.
    client
        .pull_image(pull_request(&registry.image("wharf-test/busybox:v2"), None))
        .await
        .unwrap();
    let by_digest = format!("{}/wharf-test/busybox@{manifest}", registry.addr);
    assert_eq!(
        client
            .pull_image(pull_request(&by_digest, None))
            .await
            .unwrap()
            .into_inner()
            .image_ref,
        id
    );

    assert_eq!(list_ids(&daemon).await, vec![id.clone()]);
    let image = status(&daemon, &latest).await.expect("image by tag");
    assert_eq!(image.id, id);
    let mut tags = image.repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        vec![latest.clone(), registry.image("wharf-test/busybox:v2")]
    );
    assert_eq!(image.repo_digests, vec![by_digest.clone()]);
    assert!(
        image.size > 500_000,
        "busybox layers are counted: {}",
        image.size
    );
    assert_eq!(image.spec.unwrap().image, id);

    for name in [
        id.as_str(),
        &id[7..],
        &id[7..19],
        &by_digest,
        &registry.image("wharf-test/busybox:v2"),
    ] {
        assert_eq!(
            status(&daemon, name).await.map(|i| i.id),
            Some(id.clone()),
            "lookup by {name}"
        );
    }
    assert!(
        status(&daemon, &registry.image("wharf-test/busybox:missing"))
            .await
            .is_none()
    );

    let filtered = client
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(image_spec(&latest)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.images.len(), 1);

    let verbose = client
        .image_status(ImageStatusRequest {
            image: Some(image_spec(&latest)),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(
        info["imageSpec"]["config"]["Labels"]["wharf.test"],
        "busybox"
    );
    assert_eq!(info["layers"].as_array().unwrap().len(), 3);

    let fs = client
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().unwrap().value > 1_000_000);
    assert!(usage.inodes_used.as_ref().unwrap().value > 10);
    assert_eq!(
        usage.fs_id.as_ref().unwrap().mountpoint,
        daemon.root().join("image").display().to_string()
    );
}

#[tokio::test]
async fn user_from_image_config() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    for (tag, uid, username) in [
        ("wharf-test/user:latest", None, "wharfuser"),
        ("wharf-test/user:uid", Some(1234), ""),
    ] {
        client
            .pull_image(pull_request(&registry.image(tag), None))
            .await
            .unwrap();
        let image = status(&daemon, &registry.image(tag)).await.unwrap();
        assert_eq!(image.uid.map(|u| u.value), uid, "{tag}");
        assert_eq!(image.username, username, "{tag}");
    }
}

/// Mounts the image's layers as overlayfs, as containers will see them.
fn mount_overlay(daemon: &Daemon, layers: &[String], target: &std::path::Path) {
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|d| {
            daemon
                .layers_dir()
                .join(d.replace(':', "-"))
                .join("fs")
                .display()
                .to_string()
        })
        .collect();
    std::fs::create_dir_all(target).unwrap();
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lower.join(":")).as_str()),
    )
    .expect("mounting the image's layers");
}

#[tokio::test]
async fn layers_keep_metadata_and_whiteouts_work_in_overlayfs() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    let image = registry.image("wharf-test/busybox:latest");
    client.pull_image(pull_request(&image, None)).await.unwrap();
    let verbose = client
        .image_status(ImageStatusRequest {
            image: Some(image_spec(&image)),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let layers: Vec<String> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();

    // The top layer holds the whiteouts in overlayfs form.
    let top = daemon
        .layers_dir()
        .join(layers[2].replace(':', "-"))
        .join("fs");
    let gone = std::fs::symlink_metadata(top.join("data/gone")).unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    let opaque = xattr_value(&top.join("data/opaque"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    let mountpoint = daemon.dir.path().join("rootfs");
    mount_overlay(&daemon, &layers, &mountpoint);
    let checks = std::panic::catch_unwind(|| {
        assert!(mountpoint.join("data/keep").exists());
        assert!(
            !mountpoint.join("data/gone").exists(),
            "whited-out file is hidden"
        );
        assert!(
            !mountpoint.join("data/opaque/old").exists(),
            "opaque dir hides the lower content"
        );
        assert!(mountpoint.join("data/opaque/new").exists());
        let busybox = std::fs::metadata(mountpoint.join("bin/busybox")).unwrap();
        let sh = std::fs::metadata(mountpoint.join("bin/sh")).unwrap();
        assert_eq!(busybox.ino(), sh.ino(), "applets are hard links");
        assert_eq!(
            std::fs::read_link(mountpoint.join("data/link"))
                .unwrap()
                .to_str(),
            Some("keep")
        );
        let tmp = std::fs::metadata(mountpoint.join("tmp")).unwrap();
        assert_eq!(tmp.mode() & 0o7777, 0o1777);
        let passwd = std::fs::read_to_string(mountpoint.join("etc/passwd")).unwrap();
        assert!(passwd.contains("wharfuser:x:1234:1234"));
    });
    nix::mount::umount(&mountpoint).unwrap();
    checks.unwrap();
}

fn xattr_value(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let output = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .ok()?;
    output.status.success().then_some(output.stdout)
}

#[tokio::test]
async fn oci_zstd_uncompressed_and_multi_platform_images() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    for repo_tag in ["wharf-test/oci:latest", "wharf-test/zstd:latest"] {
        let pulled = client
            .pull_image(pull_request(&registry.image(repo_tag), None))
            .await
            .unwrap();
        assert_eq!(
            pulled.into_inner().image_ref,
            registry.digest(&format!("{repo_tag}#config"))
        );
    }
    for repo_tag in [
        "wharf-test/multiarch:latest",
        "wharf-test/multiarch-docker:latest",
    ] {
        let pulled = client
            .pull_image(pull_request(&registry.image(repo_tag), None))
            .await
            .unwrap();
        let amd64 = registry.digest(&format!("{repo_tag}#linux/amd64#config"));
        assert_eq!(
            pulled.into_inner().image_ref,
            amd64,
            "the amd64 entry of {repo_tag} is chosen"
        );
        let image = status(&daemon, &registry.image(repo_tag)).await.unwrap();
        // The repo digest is the index's, as kubelet reports it.
        assert!(image.repo_digests.contains(&format!(
            "{}/{}@{}",
            registry.addr,
            repo_tag.split(':').next().unwrap(),
            registry.digest(repo_tag)
        )));
    }
}

#[tokio::test]
async fn concurrent_pulls_fetch_each_blob_once() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let image = registry.image("wharf-test/plain:latest");
    let manifest: serde_json::Value = {
        let url = format!(
            "http://{}/v2/wharf-test/plain/manifests/latest",
            registry.addr
        );
        let body = std::process::Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                &url,
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&body.stdout).unwrap()
    };
    let layer_digests: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let before: Vec<usize> = layer_digests
        .iter()
        .map(|d| registry.blob_fetches(d))
        .collect();

    let pulls = (0..8).map(|_| {
        let image = image.clone();
        let channel = daemon.channel();
        async move {
            let mut client =
                k8s_cri::v1::image_service_client::ImageServiceClient::new(channel.await);
            client
                .pull_image(pull_request(&image, None))
                .await
                .map(|r| r.into_inner().image_ref)
        }
    });
    let results = futures_util::future::join_all(pulls).await;
    let expected = registry.digest("wharf-test/plain:latest#config");
    for result in results {
        assert_eq!(result.unwrap(), expected);
    }
    // The registry writes its access log asynchronously: wait until every
    // layer's fetch is logged, then check that none was fetched twice.
    poll_until(
        "the registry logs the layer fetches",
        Duration::from_secs(10),
        || {
            let logged = layer_digests
                .iter()
                .zip(&before)
                .all(|(digest, before)| registry.blob_fetches(digest) > *before);
            logged.then_some(())
        },
    )
    .await;
    for (digest, before) in layer_digests.iter().zip(before) {
        assert_eq!(
            registry.blob_fetches(digest) - before,
            1,
            "layer {digest} fetched once"
        );
    }
    assert_eq!(list_ids(&daemon).await, vec![expected]);
}

#[tokio::test]
async fn remove_by_tag_id_and_digest_and_collect_layers() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    let latest = registry.image("wharf-test/busybox:latest");
    let v2 = registry.image("wharf-test/busybox:v2");
    let id = registry.digest("wharf-test/busybox:latest#config");
    client
        .pull_image(pull_request(&latest, None))
        .await
        .unwrap();
    client.pull_image(pull_request(&v2, None)).await.unwrap();
    // An unrelated image with a layer of its own.
    let other = FakeRegistry::start(LayerFault::None, 64 << 10).await;
    client
        .pull_image(pull_request(&other.image(), None))
        .await
        .unwrap();
    let layers_with_both = daemon.layer_entries().len();

    // One tag of two: the image stays.
    client
        .remove_image(RemoveImageRequest {
            image: Some(image_spec(&latest)),
        })
        .await
        .unwrap();
    let image = status(&daemon, &v2)
        .await
        .expect("image kept under its other tag");
    assert_eq!(image.repo_tags, vec![v2.clone()]);
    assert!(status(&daemon, &latest).await.is_none());

    // By ID: gone, with the layers only it used.
    client
        .remove_image(RemoveImageRequest {
            image: Some(image_spec(&id)),
        })
        .await
        .unwrap();
    assert!(status(&daemon, &v2).await.is_none());
    assert_eq!(list_ids(&daemon).await, vec![other.config_digest.clone()]);
    let remaining = daemon.layer_entries();
    assert_eq!(
        remaining.len(),
        1,
        "only the other image's layer is left: {remaining:?}"
    );
    assert!(layers_with_both > 1);

    // Removing what is not there succeeds.
    client
        .remove_image(RemoveImageRequest {
            image: Some(image_spec(&id)),
        })
        .await
        .unwrap();
    client
        .remove_image(RemoveImageRequest {
            image: Some(image_spec("never/pulled:tag")),
        })
        .await
        .unwrap();

    // By repo digest, then re-pull.
    let oci = registry.image("wharf-test/oci:latest");
    client.pull_image(pull_request(&oci, None)).await.unwrap();
    client
        .remove_image(RemoveImageRequest {
            image: Some(image_spec(&other.image())),
        })
        .await
        .unwrap();
    let oci_digest = format!(
        "{}/wharf-test/oci@{}",
        registry.addr,
        registry.digest("wharf-test/oci:latest")
    );
    client
        .remove_image(RemoveImageRequest {
            image: Some(image_spec(&oci_digest)),
        })
        .await
        .unwrap();
    assert!(list_ids(&daemon).await.is_empty());
    assert!(
        daemon.layer_entries().is_empty(),
        "no layer left: {:?}",
        daemon.layer_entries()
    );
    client.pull_image(pull_request(&oci, None)).await.unwrap();
    assert_eq!(list_ids(&daemon).await.len(), 1);
}

#[tokio::test]
async fn pull_through_a_mirror_for_another_host() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    daemon.write_hosts_toml(
        "mirror.wharf.invalid",
        &format!(
            "server = \"https://mirror.wharf.invalid\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.addr
        ),
    );
    let mut client = daemon.images().await;
    let name = "mirror.wharf.invalid/wharf-test/busybox:latest";
    let pulled = client
        .pull_image(pull_request(name, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pulled.image_ref,
        registry.digest("wharf-test/busybox:latest#config")
    );
    let image = status(&daemon, name).await.unwrap();
    assert_eq!(image.repo_tags, vec![name.to_string()]);
}

#[tokio::test]
async fn basic_auth_credentials() {
    let registry = auth_registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    let image = registry.image("wharf-test/busybox:latest");

    let anonymous = client
        .pull_image(pull_request(&image, None))
        .await
        .unwrap_err();
    assert_ne!(anonymous.code(), Code::Ok);
    let wrong = AuthConfig {
        username: AUTH_USER.into(),
        password: "nope".into(),
        ..Default::default()
    };
    assert!(client
        .pull_image(pull_request(&image, Some(wrong)))
        .await
        .is_err());
    assert!(list_ids(&daemon).await.is_empty());

    let right = AuthConfig {
        username: AUTH_USER.into(),
        password: AUTH_PASSWORD.into(),
        ..Default::default()
    };
    client
        .pull_image(pull_request(&image, Some(right)))
        .await
        .unwrap();
    let encoded = base64_encode(format!("{AUTH_USER}:{AUTH_PASSWORD}").as_bytes());
    let by_auth_field = AuthConfig {
        auth: encoded,
        ..Default::default()
    };
    let user_image = registry.image("wharf-test/user:latest");
    client
        .pull_image(pull_request(&user_image, Some(by_auth_field)))
        .await
        .unwrap();
    assert!(status(&daemon, &image).await.is_some());
    assert!(status(&daemon, &user_image).await.is_some());
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn bad_requests_get_clear_codes_and_change_nothing() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    let cases = [
        ("", Code::InvalidArgument),
        ("   ", Code::InvalidArgument),
        ("library/BusyBox:tag", Code::InvalidArgument),
        ("busybox:bad tag", Code::InvalidArgument),
        ("busybox@sha256:1234", Code::InvalidArgument),
        (
            "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",
            Code::InvalidArgument,
        ),
    ];
    for (name, code) in cases {
        let err = client
            .pull_image(pull_request(name, None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "pull {name:?}: {}", err.message());
    }
    let missing = client
        .pull_image(pull_request(
            &registry.image("wharf-test/nope:latest"),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{}", missing.message());
    let no_spec = k8s_cri::v1::PullImageRequest {
        image: None,
        auth: None,
        sandbox_config: None,
    };
    assert_eq!(
        client.pull_image(no_spec).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let no_status = client
        .image_status(ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(no_status.code(), Code::InvalidArgument);
    assert!(list_ids(&daemon).await.is_empty());
}

#[tokio::test]
async fn hostile_layers_are_rejected_and_leave_nothing() {
    let registry = registry();
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    for kind in ["dotdot", "absolute", "symlink", "hardlink", "device"] {
        let image = registry.image(&format!("wharf-test/evil-{kind}:latest"));
        let err = client
            .pull_image(pull_request(&image, None))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{kind}: {}",
            err.message()
        );
    }
    assert!(list_ids(&daemon).await.is_empty());
    assert!(
        daemon.layer_entries().is_empty(),
        "nothing stored: {:?}",
        daemon.layer_entries()
    );
    assert!(
        !std::path::Path::new("/etc/evil").exists() && !daemon.dir.path().join("escape").exists()
    );
}

#[tokio::test]
async fn corrupt_or_truncated_blobs_are_rejected() {
    let daemon = Daemon::start("").await;
    let mut client = daemon.images().await;
    for fault in [LayerFault::WrongContent, LayerFault::Truncated] {
        let fake = FakeRegistry::start(fault, 256 << 10).await;
        let err = client
            .pull_image(pull_request(&fake.image(), None))
            .await
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok, "{fault:?}");
        if fault == LayerFault::WrongContent {
            // Corrupt at the source: not worth a retry.
            assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
        }
        assert!(list_ids(&daemon).await.is_empty(), "{fault:?}");
        assert!(
            daemon.layer_entries().is_empty(),
            "{fault:?}: {:?}",
            daemon.layer_entries()
        );
    }
    let good = FakeRegistry::start(LayerFault::None, 256 << 10).await;
    let pulled = client
        .pull_image(pull_request(&good.image(), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, good.config_digest);
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_and_leaves_nothing() {
    let daemon =
        Daemon::start("[image]\nmax_unpack_ratio = 10\nunpack_ratio_allowance_bytes = 1048576\n")
            .await;
    // 256 MiB of zeros in a layer of about 256 KiB.
    let (layer, diff_id) = common::fake_registry::zeros_layer(256);
    assert!(layer.len() < 1 << 20, "{} bytes", layer.len());
    let fake = FakeRegistry::serve_layer(LayerFault::None, layer, diff_id).await;
    let mut client = daemon.images().await;
    let err = client
        .pull_image(pull_request(&fake.image(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    for expected in [fake.layer_digest.as_str(), "[image] max_unpack_ratio"] {
        assert!(err.message().contains(expected), "{}", err.message());
    }
    assert!(list_ids(&daemon).await.is_empty());
    assert!(
        daemon.layer_entries().is_empty(),
        "no layer and no temporary directory: {:?}",
        daemon.layer_entries()
    );
    // The daemon still answers, and pulls what fits.
    let good = FakeRegistry::start(LayerFault::None, 256 << 10).await;
    let pulled = client
        .pull_image(pull_request(&good.image(), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, good.config_digest);
}

#[tokio::test]
async fn a_cancelled_pull_stops_unpacking_and_leaves_nothing() {
    let daemon = Daemon::start("").await;
    let slow = FakeRegistry::start(
        LayerFault::Slow {
            bytes_per_second: 1 << 20,
        },
        8 << 20,
    )
    .await;
    let pull = {
        let channel = daemon.channel().await;
        let image = slow.image();
        tokio::spawn(async move {
            let mut client = k8s_cri::v1::image_service_client::ImageServiceClient::new(channel);
            client.pull_image(pull_request(&image, None)).await
        })
    };
    let unpacking = |daemon: &Daemon| {
        daemon
            .layer_entries()
            .iter()
            .any(|e| e.starts_with(".tmp-"))
    };
    poll_until("the unpack to start", Duration::from_secs(10), || {
        unpacking(&daemon).then_some(())
    })
    .await;
    // The client goes away: the request is reset and its future dropped.
    pull.abort();
    // The unpack thread removes its partial layer only once it has stopped.
    poll_until("the unpack to stop", Duration::from_secs(10), || {
        (!unpacking(&daemon)).then_some(())
    })
    .await;
    assert!(daemon.layer_entries().is_empty());
    assert!(
        list_ids(&daemon).await.is_empty(),
        "the daemon still answers"
    );
}

#[tokio::test]
async fn a_stalled_pull_is_cancelled() {
    let daemon = Daemon::start("stall_timeout_secs = 2").await;
    let fake = FakeRegistry::start(LayerFault::Stall, 1 << 20).await;
    let mut client = daemon.images().await;
    let started = std::time::Instant::now();
    let err = client
        .pull_image(pull_request(&fake.image(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        daemon.layer_entries().is_empty(),
        "{:?}",
        daemon.layer_entries()
    );
}

#[tokio::test]
async fn images_survive_restart_and_kill_during_pull_leaves_nothing() {
    let registry = registry();
    let mut daemon = Daemon::start("").await;
    let image = registry.image("wharf-test/busybox:latest");
    daemon
        .images()
        .await
        .pull_image(pull_request(&image, None))
        .await
        .unwrap();
    let before = list_ids(&daemon).await;

    // Kill -9 in the middle of a slow pull.
    let slow = FakeRegistry::start(
        LayerFault::Slow {
            bytes_per_second: 1 << 20,
        },
        4 << 20,
    )
    .await;
    let pull = {
        let channel = daemon.channel().await;
        let image = slow.image();
        tokio::spawn(async move {
            let mut client = k8s_cri::v1::image_service_client::ImageServiceClient::new(channel);
            client.pull_image(pull_request(&image, None)).await
        })
    };
    poll_until(
        "the pull to start unpacking",
        Duration::from_secs(10),
        || {
            daemon
                .layer_entries()
                .iter()
                .any(|e| e.starts_with(".tmp-"))
                .then_some(())
        },
    )
    .await;
    daemon.kill9();
    assert!(pull.await.unwrap().is_err());

    daemon.spawn().await;
    assert_eq!(
        list_ids(&daemon).await,
        before,
        "the whole image or nothing"
    );
    assert!(
        !daemon
            .layer_entries()
            .iter()
            .any(|e| e.starts_with(".tmp-")),
        "garbage collected at start-up: {:?}",
        daemon.layer_entries()
    );
    assert!(status(&daemon, &image).await.is_some());

    // A clean stop keeps everything too.
    assert!(daemon.sigterm().await.success());
    daemon.spawn().await;
    assert_eq!(list_ids(&daemon).await, before);
}

/// The disk fills up while a layer unpacks: RESOURCE_EXHAUSTED (not
/// INTERNAL), no partial layer or image left, and the same pull works once
/// there is room again.
#[tokio::test]
async fn a_full_disk_during_unpack_is_resource_exhausted_and_leaves_nothing() {
    let daemon = Daemon::start("").await;
    let layers = daemon.layers_dir();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "wharf-test-full"])
        .arg(&layers)
        .status()
        .unwrap();
    assert!(status.success());
    let unmount = unmount_on_drop(&layers);
    // 8 MiB that do not compress, into 2 MiB of room.
    let fake = FakeRegistry::start(LayerFault::None, 8 << 20).await;
    let mut client = daemon.images().await;
    let err = client
        .pull_image(pull_request(&fake.image(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(list_ids(&daemon).await.is_empty());
    assert!(
        daemon.layer_entries().is_empty(),
        "no partial layer: {:?}",
        daemon.layer_entries()
    );
    drop(unmount);
    let pulled = client
        .pull_image(pull_request(&fake.image(), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, fake.config_digest);
}

/// Unmounts `target` when dropped, also when the test fails half-way.
fn unmount_on_drop(target: &std::path::Path) -> impl Drop + '_ {
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    Unmount(target)
}
