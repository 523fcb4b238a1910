#!/usr/bin/env python3
"""Acceptance test with an independent client: Python gRPC stubs generated from proto/cache.proto
(grpcio-tools) call every RPC of a real `hyperion serve` process over HTTP/2 on loopback,
including the error statuses; the standard grpcio-reflection client lists and resolves
`hyperion.v1.CacheService`, and the standard grpcio-health-checking client gets SERVING.
Usage: ci/interop.py PATH/TO/hyperion"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import \
    ProtoReflectionDescriptorDatabase
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(out_dir):
    proto_dir = os.path.join(ROOT, "proto")
    code = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
                        f"--grpc_python_out={out_dir}", os.path.join(proto_dir, "cache.proto")])
    assert code == 0, "protoc failed"
    sys.path.insert(0, out_dir)


def expect_error(call, code, fragment):
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
        assert fragment in error.details(), f"`{fragment}` not in `{error.details()}`"
        return error
    raise AssertionError(f"expected {code}")


def main(binary):
    work = tempfile.mkdtemp(prefix="hyperion-interop-")
    generate(work)
    import cache_pb2 as pb
    import cache_pb2_grpc as rpc

    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HYPERION_LISTEN_ADDR": f"127.0.0.1:{port}",
           "HYPERION_DATA_DIR": os.path.join(work, "data"), "LOG_LEVEL": "warn",
           "HYPERION_ADMIN_ADDR": "127.0.0.1:0"}
    server = subprocess.Popen([binary, "serve"], env=env)
    try:
        stub = rpc.CacheServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        deadline = time.time() + 20
        while True:  # a single node takes writes once it elected itself
            try:
                first = stub.Set(pb.SetRequest(key=b"greeting", value=b"hello"), timeout=2)
                break
            except grpc.RpcError as error:
                if time.time() > deadline:
                    raise AssertionError(f"no leader within 20 s: {error}")
                time.sleep(0.2)
        hit = stub.Get(pb.GetRequest(key=b"greeting"), timeout=2)
        assert hit.status == pb.HIT and hit.value == b"hello" and hit.version == first.version
        assert hit.key == b"greeting"

        second = stub.Set(pb.SetRequest(key=b"greeting", value=b"hi", ttl_ms=60000,
                                        expected_version=first.version), timeout=2)
        assert second.version > first.version and second.ttl_ms == 60000
        hinted = stub.Get(pb.GetRequest(key=b"greeting"), timeout=2)
        assert 0 < hinted.ttl_remaining_ms <= 60000

        big = bytes(range(256)) * 2048  # 512 KiB exactly: the largest value accepted
        stub.Set(pb.SetRequest(key=b"big", value=big), timeout=5)
        assert stub.Get(pb.GetRequest(key=b"big"), timeout=5).value == big

        keys = [b"greeting", b"absent", b"big"]
        batch = list(stub.BatchGet(pb.BatchGetRequest(keys=keys), timeout=5))
        assert [r.key for r in batch] == keys
        assert [r.status for r in batch] == [pb.HIT, pb.MISS, pb.HIT]

        deleted = stub.Delete(pb.DeleteRequest(key=b"greeting"), timeout=2)
        assert deleted.existed and deleted.version == second.version
        assert stub.Get(pb.GetRequest(key=b"greeting"), timeout=2).status == pb.MISS

        invalid = grpc.StatusCode.INVALID_ARGUMENT
        expect_error(lambda: stub.Get(pb.GetRequest(key=b""), timeout=2), invalid, "key: must not be empty")
        expect_error(lambda: stub.Set(pb.SetRequest(key=b"k", value=big + b"x"), timeout=5),
                     invalid, "max_value_size_kb")
        expect_error(lambda: stub.Get(pb.GetRequest(key=b"x" * 4097), timeout=2), invalid, "4096")
        expect_error(lambda: list(stub.BatchGet(pb.BatchGetRequest(keys=[b"k%d" % i for i in range(101)]),
                                                timeout=2)), invalid, "limit of 100")
        expect_error(lambda: stub.Get(pb.GetRequest(key=b"k", timeout_ms=60001), timeout=2),
                     invalid, "timeout_ms")
        cas = expect_error(lambda: stub.Set(pb.SetRequest(key=b"big", value=b"v", expected_version=1),
                                            timeout=2), grpc.StatusCode.FAILED_PRECONDITION, "current version")
        current = dict(cas.trailing_metadata()).get("x-hyperion-current-version")
        assert current and int(current) > 1, cas.trailing_metadata()
        # Watch: a bidirectional stream; a read naming it is tracked, a change is reported, a
        # sync is answered.
        import queue
        outgoing = queue.Queue()
        outgoing.put(pb.WatchRequest(open=pb.WatchOpen(prefixes=[b"py:"])))

        def requests():
            while True:
                request = outgoing.get()
                if request is None:
                    return
                yield request

        events = stub.Watch(requests(), timeout=10)
        ready = next(events)
        assert ready.kind == pb.EVENT_READY and ready.tracking_id != 0, ready
        stub.Set(pb.SetRequest(key=b"tracked", value=b"1"), timeout=2)
        read = stub.Get(pb.GetRequest(key=b"tracked", tracking_id=ready.tracking_id), timeout=2)
        assert read.tracked, read
        changed = stub.Set(pb.SetRequest(key=b"tracked", value=b"2"), timeout=2)
        event = next(events)
        assert (event.kind, event.key, event.version, event.reason) == (
            pb.EVENT_CHANGED, b"tracked", changed.version, pb.REASON_SET), event
        stub.Set(pb.SetRequest(key=b"py:1", value=b"b"), timeout=2)
        event = next(events)
        assert (event.kind, event.key) == (pb.EVENT_CHANGED, b"py:1"), event
        outgoing.put(pb.WatchRequest(sync=pb.SyncRequest(sync_id=42)))
        event = next(events)
        assert (event.kind, event.sync_id) == (pb.EVENT_PROGRESS, 42), event
        outgoing.put(None)
        events.cancel()
        print("every RPC and error status checked with a Python client")

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = reflection.get_services()
        assert "hyperion.v1.CacheService" in services, services
        assert "grpc.health.v1.Health" in services, services
        cache_service = descriptor_pool.DescriptorPool(reflection).FindServiceByName(
            "hyperion.v1.CacheService")
        methods = sorted(method.name for method in cache_service.methods)
        assert methods == ["BatchGet", "Delete", "Get", "Set", "Watch"], methods
        print(f"reflection lists {sorted(services)}")

        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "hyperion.v1.CacheService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert answer.status == serving, (service, answer)
        expect_error(lambda: health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=2),
                     grpc.StatusCode.NOT_FOUND, "no.Such")
        watch = health.Watch(health_pb2.HealthCheckRequest(service="hyperion.v1.CacheService"),
                             timeout=5)
        assert next(watch).status == serving
        watch.cancel()
        print("health: Check and Watch answer SERVING")
        print("interop: 1 passed, 0 failed")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1])
