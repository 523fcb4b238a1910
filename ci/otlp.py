#!/usr/bin/env python3
"""Trace export test: an OTLP/gRPC receiver runs in this process (the standard
opentelemetry-proto service stubs on grpcio), a real `hyperion serve` exports to it
(OTEL_EXPORTER_OTLP_ENDPOINT), and the test checks what arrives:
- one span per RPC, named by its gRPC method, with the status code it answered;
- on the leader, `propose`, `commit` and `apply` spans under each write's RPC span, in order;
- keys named by hash only: no key or value bytes anywhere in what was exported;
- spans still buffered at SIGTERM are flushed before the process exits.
Usage: ci/otlp.py PATH/TO/hyperion"""

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop import free_port, generate  # noqa: E402

KEY = b"customer:4711:email"
VALUE = b"private-value-0815@example.org"
LAST_KEY = b"customer:4712:email"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported request, raw and decoded."""

    def __init__(self):
        self.lock = threading.Lock()
        self.raw = []
        self.spans = []
        self.resources = []

    def Export(self, request, context):
        with self.lock:
            self.raw.append(request.SerializeToString())
            for resource_spans in request.resource_spans:
                self.resources.append(attributes(resource_spans.resource.attributes))
                for scope in resource_spans.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self):
        with self.lock:
            return list(self.spans), list(self.resources), b"".join(self.raw)


def attributes(pairs):
    out = {}
    for pair in pairs:
        value = pair.value
        kind = value.WhichOneof("value")
        out[pair.key] = getattr(value, kind) if kind else None
    return out


def key_hash(key):
    return hashlib.sha256(key).hexdigest()[:16]


def rpc_spans(spans, method):
    return [s for s in spans if s.name == f"hyperion.v1.CacheService/{method}"]


def children(spans, parent, name):
    return [s for s in spans if s.name == name and s.trace_id == parent.trace_id
            and s.parent_span_id == parent.span_id]


def wait_for(receiver, ready, what, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        spans, _, _ = receiver.snapshot()
        if ready(spans):
            return
        time.sleep(0.2)
    spans, _, _ = receiver.snapshot()
    raise AssertionError(f"{what} did not arrive within {seconds} s; got {sorted({s.name for s in spans})}")


def check_write_stages(spans, rpc_span, method):
    stages = {}
    for name in ("propose", "commit", "apply"):
        found = children(spans, rpc_span, name)
        assert len(found) == 1, f"{method}: expected one `{name}` span under the RPC, got {len(found)}"
        stages[name] = found[0]
    propose, commit, apply = stages["propose"], stages["commit"], stages["apply"]
    assert propose.end_time_unix_nano <= commit.start_time_unix_nano, f"{method}: commit before propose ended"
    assert commit.end_time_unix_nano <= apply.start_time_unix_nano, f"{method}: apply before commit ended"
    assert rpc_span.start_time_unix_nano <= propose.start_time_unix_nano
    assert apply.end_time_unix_nano <= rpc_span.end_time_unix_nano
    index = attributes(commit.attributes).get("raft.index")
    assert isinstance(index, int) and index > 0, f"{method}: commit span without raft.index: {commit}"


def main(binary):
    work = tempfile.mkdtemp(prefix="hyperion-otlp-")
    generate(work)
    import cache_pb2 as pb
    import cache_pb2_grpc as rpc

    receiver = Receiver()
    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()

    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HYPERION_LISTEN_ADDR": f"127.0.0.1:{port}",
           "HYPERION_DATA_DIR": os.path.join(work, "data"), "LOG_LEVEL": "warn",
           "HYPERION_ADMIN_ADDR": "127.0.0.1:0",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    server = subprocess.Popen([binary, "serve"], env=env)
    try:
        stub = rpc.CacheServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        deadline = time.time() + 20
        while True:  # a single node takes writes once it elected itself
            try:
                stub.Set(pb.SetRequest(key=KEY, value=VALUE), timeout=2)
                break
            except grpc.RpcError as error:
                if time.time() > deadline:
                    raise AssertionError(f"no leader within 20 s: {error}")
                time.sleep(0.2)
        assert stub.Get(pb.GetRequest(key=KEY), timeout=2).value == VALUE
        list(stub.BatchGet(pb.BatchGetRequest(keys=[KEY, b"absent"]), timeout=2))
        stub.Delete(pb.DeleteRequest(key=KEY), timeout=2)
        try:
            stub.Get(pb.GetRequest(key=b""), timeout=2)
            raise AssertionError("an empty key was accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

        def complete(spans):
            return (all(rpc_spans(spans, m) for m in ("Set", "Get", "BatchGet", "Delete"))
                    and len(rpc_spans(spans, "Get")) >= 2
                    and all(any(children(spans, s, "apply") for s in rpc_spans(spans, m))
                            for m in ("Set", "Delete")))
        wait_for(receiver, complete, "the RPC and write spans")

        spans, resources, raw = receiver.snapshot()
        for method in ("Set", "Get", "BatchGet", "Delete"):
            span = [s for s in rpc_spans(spans, method)
                    if attributes(s.attributes).get("rpc.grpc.status_code") == 0][0]
            attrs = attributes(span.attributes)
            assert span.kind == span.SPAN_KIND_SERVER, (method, span.kind)
            assert attrs["rpc.system"] == "grpc" and attrs["rpc.method"] == method, attrs
            assert attrs["rpc.service"] == "hyperion.v1.CacheService", attrs
            assert attrs["hyperion.key_hash"] == key_hash(KEY), (method, attrs)
            assert attrs["hyperion.keys"] == (2 if method == "BatchGet" else 1), attrs
            assert span.status.code != span.status.STATUS_CODE_ERROR, (method, span.status)
        for method in ("Set", "Delete"):
            applied = [s for s in rpc_spans(spans, method) if children(spans, s, "apply")]
            check_write_stages(spans, applied[0], method)
        assert not children(spans, rpc_spans(spans, "Get")[0], "propose"), "a read proposed"

        refused = [s for s in rpc_spans(spans, "Get")
                   if attributes(s.attributes).get("rpc.grpc.status_code") == 3]
        assert len(refused) == 1, "the INVALID_ARGUMENT Get has no span with status code 3"
        assert refused[0].status.code == refused[0].status.STATUS_CODE_ERROR, refused[0].status

        assert any(r.get("service.name") == "hyperion" for r in resources), resources
        for secret in (KEY, VALUE, b"customer:4711"):
            assert secret not in raw, f"{secret!r} appears in the exported traces"
        print(f"{len(spans)} spans received: RPC spans with status codes, propose/commit/apply under "
              "each write, keys by hash only")

        # A write right before SIGTERM: its spans are flushed on the way out.
        stub.Set(pb.SetRequest(key=LAST_KEY, value=b"v"), timeout=2)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0, "hyperion did not exit cleanly on SIGTERM"
        spans, _, _ = receiver.snapshot()
        last = [s for s in rpc_spans(spans, "Set")
                if attributes(s.attributes).get("hyperion.key_hash") == key_hash(LAST_KEY)]
        assert last and children(spans, last[0], "apply"), "the last write's spans were not flushed at exit"
        print("spans buffered at SIGTERM were exported before exit")
        print("otlp: 1 passed, 0 failed")
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
        collector.stop(grace=None)


if __name__ == "__main__":
    main(sys.argv[1])
