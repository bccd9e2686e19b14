"""Every setting of the service, read once from the environment (prefix ``ML_API_``)."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSpec(BaseModel):
    """One servable model version. ``source`` picks the loader."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = "1"
    source: Literal["bundled", "torchvision", "file"] = "bundled"
    # torchvision: architecture name and weights enum member (e.g. resnet50 / IMAGENET1K_V2).
    arch: str | None = None
    weights: str | None = None
    # False keeps the weights' metadata (labels, transforms) but random parameters: benchmarks, tests.
    pretrained: bool = True
    # file: a TorchScript archive or a state_dict for ``arch``, plus one label per line.
    path: str | None = None
    labels: str | None = None
    format: Literal["torchscript", "state_dict"] = "torchscript"
    input_size: Annotated[int, Field(ge=8, le=4096)] = 224
    resize_size: Annotated[int, Field(ge=8, le=4096)] | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    seed: Annotated[
        int,
        Field(
            ge=0,
            description="Seed of the random parameters when they are not loaded (pretrained false, or no weights): "
            "every process and every restart serves the same network. Ignored when weights are loaded.",
        ),
    ] = 0
    backend: Annotated[
        Literal["torch", "onnxruntime", "openvino", "torch_compile"],
        Field(
            description="What runs the forward pass: torch eager (the reference), an ONNX export run by ONNX Runtime "
            "or OpenVINO, or torch.compile (inductor). Anything but torch must pass the equivalence gate at load; "
            "setting it back to torch is the rollback.",
        ),
    ] = "torch"
    backend_fallback: Annotated[
        bool,
        Field(
            description="When the backend cannot be loaded or fails the equivalence gate, serve torch eager (and log "
            "an error) instead of failing the model version.",
        ),
    ] = False
    backend_tolerance: Annotated[
        float | None,
        Field(
            gt=0,
            le=1,
            description="Largest absolute difference from torch eager allowed in any logit or feature by the "
            "equivalence gate; unset = the backend's default (1e-3 for fp32, see docs/backends.md).",
        ),
    ] = None

    @model_validator(mode="after")
    def _source_fields(self) -> ModelSpec:
        if self.source == "torchvision" and not self.arch:
            raise ValueError(f"model {self.name!r}: source 'torchvision' needs 'arch'")
        if self.source == "file" and not (self.path and self.labels):
            raise ValueError(f"model {self.name!r}: source 'file' needs 'path' and 'labels'")
        if self.source == "file" and self.format == "state_dict" and not self.arch:
            raise ValueError(f"model {self.name!r}: a state_dict file needs 'arch'")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ML_API_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Models
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec(name="digits", version="1")])
    default_model: str = "digits"
    traffic_split: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = Field(default_factory=dict)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    channels_last: bool = True  # 15-20% less CPU per image for resnet18 on CPU (docs/benchmarks.md)
    torch_threads: Annotated[int, Field(ge=0, le=256)] = 0
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    weights_dir: str | None = None
    warmup: bool = True
    backend_cache_dir: Annotated[
        str,
        Field(
            description="Where ONNX exports for the onnxruntime and openvino backends are cached, keyed by weights, "
            "spec and library versions; /tmp because it is the container's only writable path. Unwritable: "
            "each load exports afresh.",
        ),
    ] = "/tmp/ml-api-backends"

    # Server
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000

    # Batching and limits
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 16
    max_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 0
    max_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30
    max_body_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=64)] = 25_000_000
    max_batch_items: Annotated[int, Field(ge=1, le=1024)] = 32
    decode_threads: Annotated[int, Field(ge=1, le=64)] = 2
    # Nice increment of inference/decode threads so the event loop (health probes) preempts them.
    worker_niceness: Annotated[int, Field(ge=0, le=19)] = 5

    # URL fetching
    url_fetch_enabled: bool = True
    url_fetch_allowed_networks: list[Network] = Field(default_factory=list)
    url_fetch_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    url_fetch_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3
    url_fetch_max_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    url_fetch_max_redirects: Annotated[int, Field(ge=0, le=10)] = 3

    # Operations
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    api_keys: list[SecretStr] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)
    rate_limit_enabled: bool = False
    rate_limits: dict[Literal["predict", "batch", "jobs", "default"], str] = Field(
        default_factory=lambda: {"default": "100/second"}
    )
    rate_limit_storage_uri: str = "memory://"
    trusted_proxies: list[Network] = Field(default_factory=list)
    shutdown_grace_s: Annotated[float, Field(ge=0, le=3600)] = 20
    metrics_enabled: bool = True

    # Jobs
    jobs_backend: Literal["memory", "redis"] = "memory"
    redis_url: SecretStr | None = None
    job_ttl_s: Annotated[int, Field(ge=1)] = 3600
    jobs_max_queue: Annotated[int, Field(ge=1)] = 1000
    job_visibility_timeout_s: Annotated[float, Field(gt=0)] = 60

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        keys = [spec.key for spec in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError("ML_API_MODELS lists the same name and version twice")
        names = {spec.name for spec in self.models}
        if self.default_model not in names:
            raise ValueError(f"ML_API_DEFAULT_MODEL={self.default_model!r} is not in ML_API_MODELS")
        for model, split in self.traffic_split.items():
            versions = {spec.version for spec in self.models if spec.name == model}
            unknown = set(split) - versions
            if model not in names or unknown:
                raise ValueError(f"ML_API_TRAFFIC_SPLIT names unknown model/version: {model} {sorted(unknown)}")
            if sum(split.values()) <= 0:
                raise ValueError(f"ML_API_TRAFFIC_SPLIT for {model!r} has no positive weight")
        if self.jobs_backend == "redis" and self.redis_url is None:
            raise ValueError("ML_API_JOBS_BACKEND=redis needs ML_API_REDIS_URL")
        return self

    @cached_property
    def api_key_values(self) -> tuple[bytes, ...]:
        return tuple(key.get_secret_value().encode() for key in self.api_keys)

    def versions_of(self, name: str) -> list[str]:
        return [s.version for s in self.models if s.name == name]


def load_settings() -> Settings:
    """Read settings, turning a validation error into one readable line per variable."""
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings()
    except SettingsError as exc:  # a value that is not even parseable (e.g. invalid JSON)
        field = re.search(r'field "([a-z_]+)"', str(exc))
        var = f"ML_API_{field.group(1).upper()}" if field else "ML_API_*"
        raise SystemExit(f"invalid settings:\n  {var}: {exc.__cause__ or exc}") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"]
            var = f"ML_API_{str(loc[0]).upper()}" if loc else "ML_API_*"
            detail = ".".join(str(p) for p in loc[1:])
            lines.append(f"{var}{'[' + detail + ']' if detail else ''}: {err['msg']}")
        raise SystemExit("invalid settings:\n  " + "\n  ".join(lines)) from None
