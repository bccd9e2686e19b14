"""``inference.GRPCInferenceService``: each RPC decodes its message, calls the shared handler and encodes
the answer; ``CallGuard`` applies the request ID, drain, key and rate-limit rules around it."""

from __future__ import annotations

import math

import grpc

from service.grpc import codec
from service.grpc.calls import INFERENCE, METADATA, PROBE, CallGuard
from service.grpc.proto import inference_v2_pb2 as pb
from service.oip.handler import InferenceHandler

Context = grpc.aio.ServicerContext[object, object]


def _timeout(context: Context) -> float | None:
    """The client's deadline as seconds left (None when it set none)."""
    remaining = context.time_remaining()
    return None if remaining is None or math.isinf(remaining) else max(remaining, 0.0)


class InferenceServicer:
    def __init__(self, handler: InferenceHandler, guard: CallGuard) -> None:
        self.handler = handler
        self.guard = guard

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        async def call() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self.guard.run("ServerLive", PROBE, context, call)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        async def call() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.handler.server_ready())

        return await self.guard.run("ServerReady", PROBE, context, call)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        async def call() -> pb.ModelReadyResponse:
            return pb.ModelReadyResponse(ready=self.handler.model_ready(request.name, request.version or None))

        return await self.guard.run("ModelReady", PROBE, context, call, model=request.name)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        async def call() -> pb.ServerMetadataResponse:
            return codec.encode_server_metadata(self.handler.server_metadata())

        return await self.guard.run("ServerMetadata", METADATA, context, call)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        async def call() -> pb.ModelMetadataResponse:
            return codec.encode_model_metadata(await self.handler.model_metadata(request.name, request.version or None))

        return await self.guard.run("ModelMetadata", METADATA, context, call, model=request.name)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        async def call() -> pb.ModelConfigResponse:
            return codec.encode_model_config(await self.handler.model_metadata(request.name, request.version or None))

        return await self.guard.run("ModelConfig", METADATA, context, call, model=request.name)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        async def call() -> pb.ModelInferResponse:
            response = await self.handler.infer(
                codec.decode_infer(request), front_end="v2-grpc", timeout_s=_timeout(context)
            )
            return codec.encode_infer(response)

        return await self.guard.run("ModelInfer", INFERENCE, context, call, model=request.model_name)
