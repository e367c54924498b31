use super::*;

fn pod() -> PodNetwork {
    PodNetwork {
        id: "abc123".into(),
        name: "web".into(),
        namespace: "default".into(),
        uid: "u-1".into(),
        netns: "/var/run/netns/x".into(),
        ..Default::default()
    }
}

fn cni() -> Cni {
    Cni::new(CniConfig {
        conf_dir: "/nonexistent/net.d".into(),
        bin_dirs: vec!["/nonexistent/bin".into()],
        cache_dir: "/nonexistent/cache".into(),
    })
}

#[test]
fn cni_args_name_the_pod() {
    assert_eq!(
        pod().cni_args(),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
    );
}

#[test]
fn validation_rejects_what_would_corrupt_cni_args_or_paths() {
    assert!(pod().validate().is_ok());
    let bad = [
        PodNetwork {
            name: "a;K8S_POD_NAME=b".into(),
            ..pod()
        },
        PodNetwork {
            namespace: "x=y".into(),
            ..pod()
        },
        PodNetwork {
            uid: "u\0".into(),
            ..pod()
        },
        PodNetwork {
            id: "../etc".into(),
            ..pod()
        },
        PodNetwork {
            id: "".into(),
            ..pod()
        },
        PodNetwork {
            netns: "relative".into(),
            ..pod()
        },
        PodNetwork {
            port_mappings: vec![PortMapping {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_port: 8080,
                host_ip: "localhost".into(),
            }],
            ..pod()
        },
    ];
    for pod in bad {
        let error = pod.validate().unwrap_err();
        assert!(matches!(error, CniError::InvalidArgument { .. }), "{error}");
    }
}

#[test]
fn capability_args_follow_containerd() {
    let cni = cni();
    let mut pod = pod();
    assert!(cni.capability_args(&pod).is_empty());
    pod.port_mappings = vec![
        PortMapping {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        },
        PortMapping {
            protocol: Protocol::Udp,
            container_port: 53,
            host_port: 0,
            host_ip: String::new(),
        },
        PortMapping {
            protocol: Protocol::Sctp,
            container_port: 9,
            host_port: 9,
            host_ip: "127.0.0.1".into(),
        },
    ];
    pod.annotations.insert("a".into(), "b".into());
    cni.set_pod_cidr("10.1.0.0/24, fd00::/64").unwrap();
    let caps = Value::Object(cni.capability_args(&pod));
    assert_eq!(
        caps,
        json!({
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 9, "containerPort": 9, "protocol": "sctp", "hostIP": "127.0.0.1"}
            ],
            "ipRanges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]],
            "io.kubernetes.cri.pod-annotations": {"a": "b"}
        })
    );
    assert!(cni.set_pod_cidr("10.1.0.0").is_err());
    cni.set_pod_cidr("").unwrap();
    assert!(!cni.capability_args(&pod).contains_key("ipRanges"));
}

#[test]
fn not_ready_without_config() {
    let reason = cni().ready().unwrap_err();
    assert!(reason.contains("no network config"), "{reason}");
    assert!(!cni().portmap_needs_host_setup());
}
