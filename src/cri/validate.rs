//! Limits every request is checked against before any work is done, and
//! the checks that keep every answer within the message size limit. One
//! place, shared by all handlers.

use std::collections::HashMap;

use tonic::Status;

use super::{required, MAX_MESSAGE_BYTES};
use crate::api;
use crate::error::shown;

/// Pod and container IDs are 64 hex characters; a prefix is shorter.
pub const MAX_ID_BYTES: usize = 64;
/// Longest metadata name, namespace or uid (Kubernetes names have at most
/// 253 characters).
pub const MAX_NAME_BYTES: usize = 253;
/// Most labels, and most annotations, one pod or container may carry.
pub const MAX_METADATA_ENTRIES: usize = 4096;
/// Labels of one pod or container, keys and values together (Kubernetes
/// labels are short: 317 bytes of key and 63 of value at most).
pub const MAX_LABEL_BYTES: usize = 256 << 10;
/// Annotations of one pod or container, keys and values together:
/// Kubernetes allows 256 KiB per object; kubelet adds its own.
pub const MAX_ANNOTATION_BYTES: usize = 512 << 10;
/// Longest image reference (a repository name has at most 255 characters;
/// tag and digest add some more).
pub const MAX_IMAGE_NAME_BYTES: usize = 4096;
/// Longest error message returned: a client's huge input must not come
/// back whole (nor fill the log).
const MAX_STATUS_MESSAGE: usize = 4096;
/// What a message may hold of items, leaving room for the rest of it.
const ITEMS_BUDGET: usize = MAX_MESSAGE_BYTES - (64 << 10);

/// A required pod or container ID (or a unique prefix of one).
pub fn id<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        return Err(required(field));
    }
    optional_id(value, field)?;
    Ok(value)
}

/// An ID (or prefix) that may be empty, as in list filters.
pub fn optional_id(value: &str, field: &str) -> Result<(), Status> {
    if value.len() > MAX_ID_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} {} is longer than an ID ({MAX_ID_BYTES} characters)",
            shown(value)
        )));
    }
    Ok(())
}

/// A name, namespace or uid of pod or container metadata.
pub fn name(value: &str, field: &str) -> Result<(), Status> {
    if value.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} {} is longer than {MAX_NAME_BYTES} bytes",
            shown(value)
        )));
    }
    Ok(())
}

/// What RunPodSandbox gets: bounded metadata, labels and annotations.
pub fn pod_config(config: &api::PodSandboxConfig) -> Result<(), Status> {
    if let Some(metadata) = &config.metadata {
        name(&metadata.name, "metadata.name")?;
        name(&metadata.namespace, "metadata.namespace")?;
        name(&metadata.uid, "metadata.uid")?;
    }
    labels_and_annotations("the pod", &config.labels, &config.annotations)
}

/// What CreateContainer gets: bounded metadata, labels and annotations.
pub fn container_config(config: &api::ContainerConfig) -> Result<(), Status> {
    if let Some(metadata) = &config.metadata {
        name(&metadata.name, "metadata.name")?;
    }
    if let Some(image) = &config.image {
        image_name(&image.image)?;
    }
    labels_and_annotations("the container", &config.labels, &config.annotations)
}

/// An image reference (or ID) no longer than any real one.
pub fn image_name(value: &str) -> Result<(), Status> {
    if value.len() > MAX_IMAGE_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "image {} is longer than {MAX_IMAGE_NAME_BYTES} bytes",
            shown(value)
        )));
    }
    Ok(())
}

/// The labels and annotations of one pod or container (`what`).
pub fn labels_and_annotations(
    what: &str,
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> Result<(), Status> {
    for (kind, map, max_bytes) in [
        ("labels", labels, MAX_LABEL_BYTES),
        ("annotations", annotations, MAX_ANNOTATION_BYTES),
    ] {
        if map.len() > MAX_METADATA_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "{what} has {} {kind}, more than the {MAX_METADATA_ENTRIES} allowed",
                map.len()
            )));
        }
        let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > max_bytes {
            return Err(Status::invalid_argument(format!(
                "{what}'s {kind} take {bytes} bytes, more than the {max_bytes} allowed"
            )));
        }
    }
    Ok(())
}

/// `message` if it fits in one gRPC message; otherwise RESOURCE_EXHAUSTED
/// (as gRPC itself answers an oversized message) saying what to do instead,
/// rather than a transport error and no answer at all.
pub fn fits<M: prost::Message>(rpc: &str, hint: &str, message: M) -> Result<M, Status> {
    let size = message.encoded_len();
    if size > MAX_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the {rpc} answer would take {size} bytes, over the {MAX_MESSAGE_BYTES}-byte message limit; {hint}"
        )));
    }
    Ok(message)
}

/// `items` split into messages of at most `max_items` items each and
/// within the message size limit. An item too large for any message
/// becomes an error in the stream at its place.
pub fn chunks<I: prost::Message + Clone>(
    items: &[I],
    max_items: usize,
) -> Vec<Result<Vec<I>, Status>> {
    let mut messages = Vec::new();
    let (mut chunk, mut bytes) = (Vec::new(), 0);
    for item in items {
        // The item's length prefix and field tag: at most 11 bytes.
        let size = item.encoded_len() + 11;
        if size > ITEMS_BUDGET {
            if !chunk.is_empty() {
                messages.push(Ok(std::mem::take(&mut chunk)));
                bytes = 0;
            }
            messages.push(Err(Status::resource_exhausted(format!(
                "an item of {size} bytes does not fit in a message ({MAX_MESSAGE_BYTES} bytes)"
            ))));
            continue;
        }
        if chunk.len() == max_items || bytes + size > ITEMS_BUDGET {
            messages.push(Ok(std::mem::take(&mut chunk)));
            bytes = 0;
        }
        chunk.push(item.clone());
        bytes += size;
    }
    if !chunk.is_empty() {
        messages.push(Ok(chunk));
    }
    messages
}

/// `message`, with its middle dropped when it is too long: the outermost
/// context and the innermost cause stay.
pub fn bounded_message(message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    let keep = MAX_STATUS_MESSAGE / 2 - 32;
    let mut head = keep;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - keep;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} [... {} bytes left out ...] {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn ids_longer_than_an_id_are_refused_without_echo() {
        assert_eq!(id(&"a".repeat(64), "container_id").unwrap().len(), 64);
        assert_eq!(id("f00d", "container_id").unwrap(), "f00d");
        assert_eq!(
            id("", "container_id").unwrap_err().code(),
            Code::InvalidArgument
        );
        let huge = "a".repeat(100_000);
        let err = id(&huge, "container_id").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().len() < 200, "{}", err.message());
        assert!(err.message().contains("container_id"));
        assert!(optional_id("", "filter.id").is_ok());
        assert!(optional_id(&"b".repeat(65), "filter.id").is_err());
    }

    #[test]
    fn names_are_bounded() {
        assert!(name(&"n".repeat(253), "metadata.name").is_ok());
        let err = name(&"n".repeat(254), "metadata.name").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[test]
    fn labels_and_annotations_are_bounded_in_count_and_bytes() {
        let none = HashMap::new();
        let map = |n: usize, size: usize| -> HashMap<String, String> {
            (0..n)
                .map(|i| (format!("k{i}"), "v".repeat(size)))
                .collect()
        };
        // Kubernetes' own maximum of annotations passes.
        assert!(labels_and_annotations("pod", &map(10, 10), &map(4, 64 << 10)).is_ok());
        let too_many = labels_and_annotations("pod", &map(MAX_METADATA_ENTRIES + 1, 0), &none);
        assert!(too_many.unwrap_err().message().contains("labels"));
        let too_big = labels_and_annotations("container", &none, &map(2, 300 << 10)).unwrap_err();
        assert_eq!(too_big.code(), Code::InvalidArgument);
        assert!(
            too_big.message().contains("annotations"),
            "{}",
            too_big.message()
        );
        assert!(labels_and_annotations("pod", &map(1, 257 << 10), &none).is_err());
    }

    fn container(annotation_bytes: usize) -> api::Container {
        api::Container {
            id: "c".repeat(64),
            annotations: HashMap::from([("a".into(), "x".repeat(annotation_bytes))]),
            ..Default::default()
        }
    }

    #[test]
    fn oversized_answers_are_resource_exhausted() {
        let small = api::ListContainersResponse {
            containers: vec![container(10)],
        };
        assert!(fits("ListContainers", "filter", small).is_ok());
        let big = api::ListContainersResponse {
            containers: vec![container(MAX_ANNOTATION_BYTES); 40],
        };
        let err = fits("ListContainers", "use a filter", big).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("use a filter"), "{}", err.message());
    }

    #[test]
    fn chunks_respect_both_item_count_and_size() {
        let small = vec![container(10); 1200];
        let counts: Vec<usize> = chunks(&small, 500)
            .into_iter()
            .map(|c| c.unwrap().len())
            .collect();
        assert_eq!(counts, [500, 500, 200]);
        let big = vec![container(MAX_ANNOTATION_BYTES); 70];
        let messages = chunks(&big, 500);
        assert!(messages.len() > 1);
        let mut total = 0;
        for chunk in messages {
            let chunk = chunk.unwrap();
            total += chunk.len();
            let message = api::StreamContainersResponse { containers: chunk };
            assert!(api_len(&message) <= MAX_MESSAGE_BYTES);
        }
        assert_eq!(total, 70);
        let huge = vec![container(10), container(MAX_MESSAGE_BYTES), container(10)];
        let results = chunks(&huge, 500);
        assert_eq!(results.len(), 3);
        assert_eq!(
            results[1].as_ref().unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    fn api_len(message: &impl prost::Message) -> usize {
        message.encoded_len()
    }

    #[test]
    fn long_messages_keep_both_ends() {
        let short = "pulling: connection reset".to_string();
        assert_eq!(bounded_message(short.clone()), short);
        let long = format!("outer {} inner cause", "é".repeat(100_000));
        let bounded = bounded_message(long);
        assert!(bounded.len() <= MAX_STATUS_MESSAGE, "{}", bounded.len());
        assert!(bounded.starts_with("outer "));
        assert!(bounded.ends_with(" inner cause"));
        assert!(bounded.contains("bytes left out"));
    }

    #[test]
    fn the_largest_exec_reply_fits_in_a_message() {
        let cap = super::super::MAX_EXEC_OUTPUT_BYTES;
        let reply = api::ExecSyncResponse {
            stdout: vec![b'o'; cap / 2],
            stderr: vec![b'e'; cap - cap / 2],
            exit_code: i32::MIN,
        };
        assert!(api_len(&reply) <= MAX_MESSAGE_BYTES);
    }
}
