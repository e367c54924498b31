#!/usr/bin/python3
"""A minimal CRI v1 ImageService client for the pull benchmark.

usage: hack/bench/cri_client.py --endpoint unix:///PATH wait [--timeout SECS]
       hack/bench/cri_client.py --endpoint unix:///PATH pull IMAGE

"wait" returns once ListImages answers (the daemon is serving).
"pull" calls PullImage and prints "SECONDS IMAGE_REF": the wall time of the
RPC alone, measured here so that starting Python is not part of it.

Needs only grpcio (Debian: python3-grpcio). The two requests it sends are so
small that they are encoded by hand below, which spares compiling the CRI
proto (no protoc, no generated code, no protobuf package).
"""

import argparse
import sys
import time

import grpc

SERVICE = "/runtime.v1.ImageService/"
PULL_TIMEOUT_SECS = 1800


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def pull_request(image: str) -> bytes:
    # PullImageRequest { image: ImageSpec { image: <image> } }
    return length_delimited(1, length_delimited(1, image.encode()))


def read_varint(data: bytes, pos: int):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def string_field(data: bytes, wanted: int) -> str:
    """The string field `wanted` of a message; other fields are skipped."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos)
        elif wire_type == 2:
            size, pos = read_varint(data, pos)
            if field == wanted:
                return data[pos:pos + size].decode()
            pos += size
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unexpected wire type {wire_type}")
    return ""


def call(channel, method: str, request: bytes, timeout: float) -> bytes:
    # No (de)serializers: the stub sends and returns raw message bytes.
    return channel.unary_unary(SERVICE + method)(request, timeout=timeout)


def wait(channel, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call(channel, "ListImages", b"", timeout=5)
            return 0
        except grpc.RpcError as error:
            if time.monotonic() >= deadline:
                print(f"no answer from the daemon within {timeout}s: {error.code()} {error.details()}",
                      file=sys.stderr)
                return 1
            time.sleep(0.05)


def pull(channel, image: str) -> int:
    start = time.perf_counter()
    try:
        response = call(channel, "PullImage", pull_request(image), timeout=PULL_TIMEOUT_SECS)
    except grpc.RpcError as error:
        print(f"PullImage {image}: {error.code()} {error.details()}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    image_ref = string_field(response, 1)
    if not image_ref:
        print(f"PullImage {image}: the response has no image_ref", file=sys.stderr)
        return 1
    print(f"{elapsed:.6f} {image_ref}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="gRPC target, e.g. unix:///run/wharf/wharf.sock")
    commands = parser.add_subparsers(dest="command", required=True)
    wait_command = commands.add_parser("wait", help="wait until the ImageService answers")
    wait_command.add_argument("--timeout", type=float, default=30.0)
    pull_command = commands.add_parser("pull", help="pull an image, print seconds and image_ref")
    pull_command.add_argument("image")
    args = parser.parse_args()

    with grpc.insecure_channel(args.endpoint) as channel:
        if args.command == "wait":
            return wait(channel, args.timeout)
        return pull(channel, args.image)


if __name__ == "__main__":
    sys.exit(main())
