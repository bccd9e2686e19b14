"""Minimal OTLP trace receivers on loopback, one per protocol the chart can select: stand-ins for the
OpenTelemetry Collector (outside the system under test). Each decodes the ExportTraceServiceRequest
messages it is sent with the protobuf classes of opentelemetry-proto."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

Requests = list[trace_service_pb2.ExportTraceServiceRequest]


@contextlib.contextmanager
def http_receiver() -> Iterator[tuple[str, Requests]]:
    """OTLP/HTTP with protobuf bodies on POST /v1/traces; yields (endpoint, received requests)."""
    received: Requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append(request)
                self.send_response(200)
            else:
                self.send_response(415)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def grpc_receiver() -> Iterator[tuple[str, Requests]]:
    """OTLP/gRPC: the opentelemetry.proto.collector.trace.v1.TraceService, without TLS."""
    received: Requests = []

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


RECEIVERS: dict[str, Callable[[], contextlib.AbstractContextManager[tuple[str, Requests]]]] = {
    "http/protobuf": http_receiver,
    "grpc": grpc_receiver,
}
