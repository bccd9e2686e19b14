"""Request and response bodies of the HTTP contract, and how each is built from data-plane results.

Imports only pydantic and the plain result types, so clients can use these models without torch or
FastAPI installed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.dataplane.status import HealthReport, ModelConfigStatus, ModelsReport, ModelStatus
from service.errors import ErrorCode
from service.inference.results import Classification, ClassScore, Embedding
from service.jobs.base import JobRecord

# A handwritten 3 from the bundled digits model's held-out set (32x32 PNG): examples that work as sent,
# in Swagger UI's "Try it out" and for API testers that replay them.
EXAMPLE_DIGIT_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAAAAABWESUoAAAAf0lEQVR4nM3S0QmDUAyF4U/pAB3BUewGXcEJOkq7gbqBG3SFjtANdIQ+3DyI"
    "Lwq9XAwcEsKB80NSwRVP3GP+oIte26n/DRdoQ10s++ApyTCFoIn+zRZxjGFdD+keQzmGMxiq7aLFW/qNoTBDI92gx4JbtojjDLP0hyNeWSN2"
    "DT84kxBij73EwQAAAABJRU5ErkJggg=="
)


class ImageInput(BaseModel):
    # The exactly-one-source rule in the schema too, so generated clients and fuzzers know it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["image_url"]}, {"required": ["image_base64"]}]},
    )

    image_url: str | None = Field(
        default=None, min_length=1, max_length=4096, description="http(s) URL fetched by the server"
    )
    image_base64: str | None = Field(
        default=None,
        min_length=1,
        description="base64 of the image file bytes; a data:image/...;base64, prefix is accepted",
    )

    @field_validator("image_url", "image_base64")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        # An empty source is a malformed request (422 naming the field), not an undecodable image.
        if value is not None and not value.strip():
            raise ValueError("must not be empty or whitespace")
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageInput:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url or image_base64")
        return self


class PredictionRequest(ImageInput):
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["image_url"]}, {"required": ["image_base64"]}],
            "examples": [{"image_base64": EXAMPLE_DIGIT_PNG_BASE64, "top_k": 3}],
        }
    )

    top_k: int = Field(default=5, ge=1, le=20)


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"images": [{"image_base64": EXAMPLE_DIGIT_PNG_BASE64}] * 2, "top_k": 3}],
        },
    )

    # The hard ceiling of ML_API_MAX_BATCH_ITEMS: validation stops at the length, never walks 400,000 items.
    images: list[ImageInput] = Field(min_length=1, max_length=1024)
    top_k: int = Field(default=5, ge=1, le=20)


class EmbedRequest(ImageInput):
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["image_url"]}, {"required": ["image_base64"]}],
            "examples": [{"image_base64": EXAMPLE_DIGIT_PNG_BASE64}],
        }
    )


class Prediction(BaseModel):
    label: str
    class_id: int
    confidence: float = Field(ge=0, le=1)

    @classmethod
    def of(cls, score: ClassScore) -> Prediction:
        # Softmax in reduced precision can land a hair outside [0, 1].
        return cls(label=score.label, class_id=score.class_id, confidence=min(1.0, max(0.0, score.confidence)))


class PredictionResponse(BaseModel):
    predictions: list[Prediction]
    model_name: str
    model_version: str
    inference_time_ms: float
    request_id: str

    @classmethod
    def of(cls, result: Classification, request_id: str) -> PredictionResponse:
        return cls(
            predictions=[Prediction.of(score) for score in result.predictions],
            model_name=result.model_name,
            model_version=result.model_version,
            inference_time_ms=result.inference_time_ms,
            request_id=request_id,
        )


class ErrorBody(BaseModel):
    # A plain string at run time, so a client built against this version still reads a newer server's
    # codes; the documented schema lists every code this server sends.
    error: str = Field(
        description="machine-readable error code, e.g. INVALID_IMAGE",
        json_schema_extra={"enum": [code.value for code in ErrorCode]},
    )
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

    @classmethod
    def of(cls, record: JobRecord, submit_path: str) -> JobStatus:
        """``submit_path`` is the route the job came in on: a failed job's ErrorBody names it."""
        result, error = record.result, record.error
        return cls(
            job_id=record.job_id,
            status=record.status,
            result=None if result is None else PredictionResponse.of(result, record.request_id),
            error=None
            if error is None
            else ErrorBody(error=error.code, message=error.message, path=submit_path, request_id=record.request_id),
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class EmbedResponse(BaseModel):
    embedding: list[float]
    dim: int
    model_name: str
    model_version: str
    request_id: str

    @classmethod
    def of(cls, embedding: Embedding, request_id: str) -> EmbedResponse:
        return cls(
            embedding=list(embedding.vector),
            dim=len(embedding.vector),
            model_name=embedding.model_name,
            model_version=embedding.model_version,
            request_id=request_id,
        )


class ModelInfo(BaseModel):
    name: str
    version: str
    labels_count: int | None
    device: str
    loaded: bool
    default: bool
    state: str
    traffic_weight: float | None = None
    backend: str | None = Field(default=None, description="what runs the forward pass: torch, onnxruntime, ...")
    instances: int | None = Field(default=None, description="model instances sharing this version's queue")
    shadow_rate: float | None = Field(
        default=None,
        description="a shadow version: the share of its model's images mirrored to it (it gets no unversioned "
        "requests); null for a serving version",
    )

    @classmethod
    def of(cls, status: ModelStatus) -> ModelInfo:
        return cls(
            name=status.name,
            version=status.version,
            labels_count=status.labels_count,
            device=status.device,
            loaded=status.loaded,
            default=status.default,
            state=status.state,
            traffic_weight=status.traffic_weight,
            backend=status.backend,
            instances=status.instances,
            shadow_rate=status.shadow_rate,
        )


class ModelConfigInfo(BaseModel):
    """Where the served model list comes from and how its last reload went."""

    source: Literal["environment", "file"] = Field(
        description="`file`: ML_API_MODELS_FILE, watched and reloaded; `environment`: ML_API_MODELS"
    )
    path: str | None = Field(default=None, description="the models file")
    generation: int = Field(description="1 at start-up, +1 per applied reload")
    loaded_at: float = Field(description="Unix time the served configuration was installed")
    in_sync: bool = Field(description="false while the file's latest content was rejected and the previous set serves")
    last_outcome: Literal["applied", "invalid", "failed"] | None = Field(
        default=None, description="outcome of the latest change of the file"
    )
    last_attempt_at: float | None = Field(default=None, description="Unix time of that change")
    last_error: str | None = Field(default=None, description="why it was rejected")

    @classmethod
    def of(cls, status: ModelConfigStatus) -> ModelConfigInfo:
        return cls(
            source=status.source,
            path=status.path,
            generation=status.generation,
            loaded_at=status.loaded_at,
            in_sync=status.in_sync,
            last_outcome=status.last_outcome,
            last_attempt_at=status.last_attempt_at,
            last_error=status.last_error,
        )


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]
    config: ModelConfigInfo | None = None

    @classmethod
    def of(cls, report: ModelsReport) -> ModelsResponse:
        return cls(
            default=report.default,
            models=[ModelInfo.of(m) for m in report.models],
            config=ModelConfigInfo.of(report.config) if report.config is not None else None,
        )


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    model_loaded: bool
    gpu_available: bool
    version: str
    models: list[ModelInfo]

    @classmethod
    def of(cls, report: HealthReport) -> HealthResponse:
        return cls(
            status=report.status,
            model_loaded=report.model_loaded,
            gpu_available=report.gpu_available,
            version=report.version,
            models=[ModelInfo.of(m) for m in report.models],
        )


class StatusBody(BaseModel):
    status: str
