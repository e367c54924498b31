use super::*;

#[test]
fn default_text_parses_to_defaults() {
    assert_eq!(Config::parse(DEFAULT_CONFIG).unwrap(), Config::default());
}

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
}

#[test]
fn file_overrides_single_keys() {
    let config = Config::parse("root = \"/tmp/w\"\n[registry]\nstall_timeout_secs = 5\n").unwrap();
    assert_eq!(config.root, PathBuf::from("/tmp/w"));
    assert_eq!(config.registry.stall_timeout_secs, 5);
    assert_eq!(
        config.registry.config_path,
        PathBuf::from("/etc/wharf/certs.d")
    );
}

#[test]
fn image_defaults_are_the_unpack_defaults() {
    let image = ImageSection::default();
    let unpack = crate::image::unpack::UnpackOptions::default();
    assert_eq!(image.max_layer_unpacked_bytes, unpack.max_layer_bytes);
    assert_eq!(image.max_image_unpacked_bytes, unpack.max_image_bytes);
    assert_eq!(image.max_unpack_ratio, unpack.max_ratio);
    assert_eq!(image.unpack_ratio_allowance_bytes, unpack.ratio_allowance);
    let config = Config::parse("[image]\nmax_unpack_ratio = 10\n").unwrap();
    assert_eq!(config.image.max_unpack_ratio, 10);
    assert_eq!(config.image.max_layer_unpacked_bytes, 32 << 30);
}

#[test]
fn rejects_unknown_keys_and_bad_values() {
    assert!(Config::parse("[image]\nmax_layer_unpacked_bytes = 0").is_err());
    assert!(Config::parse("[image]\nmax_layer_unpacked_bytes = -1").is_err());
    assert!(Config::parse("sockett = \"/x\"").is_err());
    assert!(Config::parse("[registry]\nmax_concurrent_downloads = 0").is_err());
    assert!(Config::parse("root = \"relative\"").is_err());
    assert!(Config::parse("[runtime]\ncgroup_driver = \"other\"").is_err());
    let long_state = format!("state_dir = \"/{}\"", "s".repeat(200));
    assert!(Config::parse(&long_state).is_ok(), "any length");
}

#[test]
fn handlers_are_read_and_checked() {
    let config = Config::parse(
        "[runtime.handlers.fast]\npath = \"/usr/bin/crun\"\noptions = [\"--debug\"]\n",
    )
    .unwrap();
    let fast = &config.runtime.handlers["fast"];
    assert_eq!(fast.path, PathBuf::from("/usr/bin/crun"));
    assert_eq!(fast.root, None);
    assert_eq!(fast.options, ["--debug"]);
    assert_eq!(config.runtime.path, PathBuf::from("runc"));
    for bad in [
        "[runtime.handlers.Fast]\npath = \"crun\"",
        "[runtime.handlers.\"a/b\"]\npath = \"crun\"",
        "[runtime.handlers.fast]\npath = \"\"",
        "[runtime.handlers.fast]\npath = \"crun\"\nroot = \"rel\"",
        "[runtime.handlers.fast]\npath = \"crun\"\noptions = [\"debug\"]",
        "[runtime.handlers.fast]\npath = \"crun\"\nbogus = 1",
        "[runtime.handlers.fast]\nroot = \"/r\"",
    ] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
    assert!(Config::parse("[stream]\naddress = \"localhost\"").is_err());
    assert_eq!(Config::default().metrics.address(), None);
    for bad in ["localhost:9191", "127.0.0.1", ":9191", "127.0.0.1:99999"] {
        let text = format!("[metrics]\naddress = {bad:?}");
        assert!(Config::parse(&text).is_err(), "{bad}");
    }
    let metrics = Config::parse("[metrics]\naddress = \"[::1]:9191\"").unwrap();
    assert_eq!(metrics.metrics.address(), Some("[::1]:9191"));
    assert!(Config::parse("[registry]\nstall_warning_secs = 0").is_err());
    assert!(Config::parse("[stream]\ntoken_lifetime_secs = 0").is_err());
    let tls = Config::parse("[stream]\ntls_cert = \"/c\"").unwrap_err();
    assert!(tls.contains("not supported yet"), "{tls}");
    let stream = Config::parse("[stream]\nport = 10010\naddress = \"::1\"").unwrap();
    assert_eq!(
        (stream.stream.port, stream.stream.address.as_str()),
        (10010, "::1")
    );
}
