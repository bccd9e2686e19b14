"""Request and response bodies of the HTTP contract."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ImageInput(BaseModel):
    # The exactly-one-source rule in the schema too, so generated clients and fuzzers know it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["image_url"]}, {"required": ["image_base64"]}]},
    )

    image_url: str | None = Field(default=None, max_length=4096, description="http(s) URL fetched by the server")
    image_base64: str | None = Field(
        default=None, description="base64 of the image file bytes; a data:image/...;base64, prefix is accepted"
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageInput:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url or image_base64")
        return self


class PredictionRequest(ImageInput):
    top_k: int = Field(default=5, ge=1, le=20)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[ImageInput] = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=20)


class EmbedRequest(ImageInput):
    pass


class Prediction(BaseModel):
    label: str
    class_id: int
    confidence: float = Field(ge=0, le=1)


class PredictionResponse(BaseModel):
    predictions: list[Prediction]
    model_name: str
    model_version: str
    inference_time_ms: float
    request_id: str


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error code, e.g. INVALID_IMAGE")
    message: str
    path: str
    request_id: str
    details: list[dict[str, Any]] | None = None


class BatchResponse(BaseModel):
    results: list[PredictionResponse | ErrorBody]


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["pending"] = "pending"
    status_url: str


class JobStatus(BaseModel):
    job_id: str
    status: Literal["pending", "processing", "completed", "failed"]
    result: PredictionResponse | None = None
    error: ErrorBody | None = None
    created_at: float
    updated_at: float


class EmbedResponse(BaseModel):
    embedding: list[float]
    dim: int
    model_name: str
    model_version: str
    request_id: str


class ModelInfo(BaseModel):
    name: str
    version: str
    labels_count: int | None
    device: str
    loaded: bool
    default: bool
    state: str
    traffic_weight: float | None = None


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    model_loaded: bool
    gpu_available: bool
    version: str
    models: list[ModelInfo]


class StatusBody(BaseModel):
    status: str
