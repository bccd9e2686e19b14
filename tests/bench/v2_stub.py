"""A stand-in Open Inference Protocol server for the bench's own tests: HTTP and gRPC, no model.

It accepts the JPEG the way a v2 server typically would (HTTP: base64 in the JSON ``data``, or
Triton's binary tensor extension; gRPC: ``bytes_contents``), refuses other forms, and answers with
one BYTES output. It also serves Triton's model configuration, which perf_analyzer asks for.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

from bench import oip
from bench.procs import free_port

JPEG = b"\xff\xd8"
METADATA = {
    "name": "m",
    "versions": ["1"],
    "platform": "stub",
    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}],
}
CONFIG = {
    "name": "m",
    "platform": "stub",
    "max_batch_size": 0,
    "input": [{"name": "image", "data_type": "TYPE_STRING", "dims": [1]}],
    "output": [{"name": "label", "data_type": "TYPE_STRING", "dims": [1]}],
}
OUTPUT = {"model_name": "m", "outputs": [{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["8"]}]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk needs

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        pages = {"/v2": {"name": "stub", "version": "0", "extensions": []}, "/v2/models/m": METADATA}
        pages["/v2/models/m/config"] = CONFIG
        self._send(200, pages[self.path]) if self.path in pages else self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v2/models/m/infer":
            self._send(404, {"error": "not found"})
            return
        image = b""
        try:
            if "Inference-Header-Content-Length" in self.headers:
                n = int(self.headers["Inference-Header-Content-Length"])
                raw = data[n:]
                (size,) = struct.unpack("<I", raw[:4])
                image = raw[4 : 4 + size]
            else:
                [tensor] = json.loads(data)["inputs"]
                if tensor.get("parameters"):
                    raise ValueError("unknown parameters")
                image = base64.b64decode(tensor["data"][0], validate=True)
        except (ValueError, KeyError, struct.error):
            pass
        self._send(200, OUTPUT) if image.startswith(JPEG) else self._send(400, {"error": "not an image"})


def _grpc_handler() -> grpc.GenericRpcHandler:
    m = oip.messages()

    def live(request: bytes, context: grpc.ServicerContext) -> bytes:
        return m["ServerLiveResponse"](live=True).SerializeToString()

    def infer(request: bytes, context: grpc.ServicerContext) -> bytes:
        req = m["ModelInferRequest"].FromString(request)
        contents = req.inputs[0].contents.bytes_contents if req.inputs else []
        if req.model_name != "m" or not contents or not contents[0].startswith(JPEG):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected the image in bytes_contents")
        reply = m["ModelInferResponse"](model_name="m")
        out = reply.outputs.add(name="label", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(b"8")
        return reply.SerializeToString()

    handlers = {"ServerLive": live, "ModelInfer": infer}
    return grpc.method_handlers_generic_handler(
        oip.GRPC_SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in handlers.items()}
    )


@contextmanager
def v2_stub() -> Iterator[tuple[int, int]]:
    """(HTTP port, gRPC port) of a running stub."""
    from concurrent.futures import ThreadPoolExecutor

    http = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((_grpc_handler(),))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield http.server_address[1], grpc_port
    finally:
        server.stop(0)
        http.shutdown()
        http.server_close()


@contextmanager
def plain_http() -> Iterator[int]:
    """An HTTP server with no /v2 at all (404 everywhere), like the service before /v2 lands."""

    class NotFound(_Handler):
        def do_GET(self) -> None:
            self._send(404, {"error": "not found"})

    http = ThreadingHTTPServer(("127.0.0.1", free_port()), NotFound)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield http.server_address[1]
    finally:
        http.shutdown()
        http.server_close()
