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


# Model operations (reload, shadow traffic) ----------------------------------------------------


class ShadowSpec(BaseModel):
    """Mirror a share of one model's requests to another of its versions (``ML_API_SHADOW``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9._-]+$",
            description="the version that receives the mirrored copies (a version of the same model)",
        ),
    ]
    rate: Annotated[float, Field(ge=0, le=1, description="share of the model's classified images mirrored")] = 0.1


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The rate-limit classes routes belong to (see service/api/policy.py).
RateClass = Literal["predict", "batch", "jobs", "default"]


def _default_rate_limits() -> dict[RateClass, str]:
    return {"default": "100/second"}


class Settings(BaseSettings):
    """Every setting, from ``ML_API_*`` environment variables (complex values as JSON) or a ``.env`` file.

    The settings table of ``docs/operations.md`` is generated from these fields and their descriptions
    (``python scripts/settings_doc.py``); a test fails when the two drift apart.
    """

    model_config = SettingsConfigDict(env_prefix="ML_API_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Models
    models: list[ModelSpec] = Field(
        default_factory=lambda: [ModelSpec(name="digits", version="1")],
        description='model specs (`docs/architecture.md`, "Model specs")',
    )
    default_model: str = Field("digits", description="model used when a request names none")
    traffic_split: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = Field(
        default_factory=dict, description='`{"model": {"version": weight, ...}}` A/B split between versions'
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="`auto`, `cpu` or `cuda`; `cuda` without a GPU runs on CPU, `/health` says `degraded` and "
        "`ml_api_device_fallback` is 1",
    )
    device_required: bool = Field(
        False,
        description="readiness fails (503) while `ML_API_DEVICE=cuda` finds no usable GPU, instead of serving on CPU",
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="`fp32`, `fp16`, `bf16` (reduced precision on CUDA only)"
    )
    channels_last: bool = Field(
        True,
        description="channels-last memory format for the model (faster convolutions on CPU, measured in "
        "`docs/benchmarks.md`, and on recent GPUs)",
    )
    torch_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        0,
        description="torch intra-op threads, fixed; `0` = adaptive: the CPU quota from cgroup `cpu.max` (else the "
        "core count) divided by workers is this process's budget, a lone batch gets all of it and busy "
        "instances split it",
    )
    model_instances: Annotated[int, Field(ge=0, le=64)] = Field(
        0,
        description="model instances per loaded version, sharing one copy of the weights and one queue; `0` = one "
        "per thread of the budget (one per core)",
    )
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="gunicorn workers; more than 1 switches on Prometheus multiprocess mode"
    )
    weights_dir: str | None = Field(
        None, description="extra directory searched for model files and torchvision checkpoints"
    )
    warmup: bool = Field(
        True, description="run a warm-up batch through each version of the default model before readiness turns 200"
    )
    backend_cache_dir: str = Field(
        "/tmp/ml-api-backends",
        description="where ONNX exports for the `onnxruntime` and `openvino` backends are cached, keyed by weights, "
        "spec and library versions (`docs/backends.md`); `/tmp` because it is the container's only writable path; "
        "unwritable: each load exports afresh",
    )

    # Model operations: reload from a file, shadow traffic, prediction logs (docs/operations.md)
    models_file: str | None = Field(
        None,
        description="file holding the model list (the JSON of `ML_API_MODELS`, or an object with `models`, "
        "`default_model`, `traffic_split`, `shadow`); polled every `ML_API_MODELS_FILE_POLL_S` and reloaded "
        "without a restart; replaces `ML_API_MODELS` (set only one)",
    )
    models_file_poll_s: Annotated[float, Field(ge=0.1, le=300)] = Field(
        1.0, description="how often the models file is checked for a change (its content hash)"
    )
    shadow: dict[str, ShadowSpec] = Field(
        default_factory=dict,
        description='`{"model": {"version": "2", "rate": 0.1}}`: mirror that share of the model\'s classified '
        "images to another of its versions after the answer is sent; shadow-only versions get no unversioned "
        "traffic",
    )
    shadow_max_inflight: Annotated[int, Field(ge=1, le=1024)] = Field(
        8, description="mirrored requests in progress at once per process; more are dropped, never queued"
    )
    prediction_log_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0,
        description="share of classified images logged as one JSON record on the logger `service.predictions` "
        "(image SHA-256, size, top-k, latency; never the image)",
    )

    # Server
    host: str = Field("0.0.0.0", description="bind address")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(8000, description="bind port")
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8081,
        description="port of the Open Inference Protocol's gRPC service (with `grpc.health.v1` and reflection), "
        "served by the same process as HTTP; `0` turns gRPC off; several workers share it (`SO_REUSEPORT`)",
    )
    grpc_max_connection_age_s: Annotated[float, Field(ge=0, le=86_400)] = Field(
        300,
        description="a gRPC connection is closed (GOAWAY; calls in flight get `ML_API_SHUTDOWN_GRACE_S` to "
        "finish) after this long, so clients re-resolve and reach pods added since; `0` = never",
    )

    # Batching and limits
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(16, description="images per model batch")
    max_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        0, description="wait for a fuller batch (GPU users); 0 = take what is queued"
    )
    max_background_batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        4,
        description="most images in one batch of background work (async jobs, shadow copies), capped by "
        "ML_API_MAX_BATCH_SIZE: small, so an instance busy with them is soon free for an interactive request",
    )
    max_queue_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        256, description="images queued per model version before 503 OVERLOADED"
    )
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30, description="per-request deadline (504 INFERENCE_TIMEOUT)"
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        10 * 1024 * 1024, description="request body / upload cap (413)"
    )
    body_read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60, description="a request body not fully received this long after the request started is refused (408)"
    )
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1000,
        description="connections and requests one process serves at once; beyond it the server itself answers "
        "503 (text/plain, before the app sees the request), so a flood of slow or idle connections cannot "
        "exhaust the process",
    )
    max_image_pixels: Annotated[int, Field(ge=64, le=178_956_970)] = Field(
        25_000_000,
        description="pixel budget of every image buffer, judged on the declared size before decoding and on the "
        "resize target before preprocessing (413); at most twice Pillow's `MAX_IMAGE_PIXELS`, where Pillow's own "
        "guard refuses anyway",
    )
    max_image_aspect_ratio: Annotated[float, Field(ge=1)] = Field(
        32.0,
        description="longest side over shortest side above which an image is refused before decoding (400 "
        "INVALID_IMAGE): a 1 x 65535 strip says nothing a classifier can read",
    )
    max_jpeg_scans: Annotated[int, Field(ge=1, le=10_000)] = Field(
        64,
        description="scans (SOS markers) a JPEG may have (400 INVALID_IMAGE); libjpeg spends a full pass over the "
        "image per progressive scan, and ordinary files have at most about 20",
    )
    max_batch_items: Annotated[int, Field(ge=1, le=1024)] = Field(32, description="images per batch/stream request")
    decode_threads: Annotated[int, Field(ge=1, le=64)] = Field(
        2, description="threads decoding and preprocessing images beside the event loop"
    )
    worker_niceness: Annotated[int, Field(ge=0, le=19)] = Field(
        5,
        description="nice increment of the inference and decode threads (0 = off): at saturation the event loop, "
        "which answers probes, preempts them",
    )

    # URL fetching
    url_fetch_enabled: bool = Field(True, description="allow `image_url`")
    url_fetch_allowed_networks: list[Network] = Field(
        default_factory=list, description="CIDRs allowed besides global addresses (in-cluster sources)"
    )
    url_fetch_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(10, description="total fetch timeout")
    url_fetch_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(3, description="connect timeout")
    url_fetch_max_bytes: Annotated[int, Field(ge=1024)] = Field(
        10 * 1024 * 1024, description="fetched image cap, enforced while streaming"
    )
    url_fetch_max_redirects: Annotated[int, Field(ge=0, le=10)] = Field(
        3, description="redirects followed, each hop checked"
    )
    url_fetch_max_url_length: Annotated[int, Field(ge=64, le=65_536)] = Field(
        4096, description="longest image URL, redirect targets included (403 URL_NOT_ALLOWED)"
    )
    url_fetch_dns_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        3, description="timeout of one host name lookup (400 IMAGE_FETCH_FAILED)"
    )
    url_fetch_dns_threads: Annotated[int, Field(ge=1, le=64)] = Field(
        4,
        description="threads of the resolver's own pool: lookups never wait behind model loads in the default "
        "executor, and a flood of slow lookups holds at most this many threads",
    )

    # Operations
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO",
        description="`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` (any case); app, uvicorn and gunicorn alike",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="`json` (one object per line) or `text` (humans, tests)"
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="API keys (JSON list, from a Secret); empty = auth off"
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty = CORS off")
    rate_limit_enabled: bool = Field(False, description="per-client rate limiting")
    rate_limits: dict[RateClass, str] = Field(
        default_factory=_default_rate_limits,
        description="per route class: `predict`, `batch`, `jobs`, `default` ([limits](https://limits.readthedocs.io) "
        "notation, e.g. `10/second`, `100/minute`)",
    )
    rate_limit_storage_uri: str = Field(
        "memory://", description="`redis://host:6379/0` to share counters between replicas"
    )
    trusted_proxies: list[Network] = Field(
        default_factory=list, description="CIDRs whose `X-Forwarded-For` is honoured"
    )
    shutdown_grace_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        20, description="drain time after SIGTERM (gunicorn's `graceful_timeout` is this + 5 s)"
    )
    metrics_enabled: bool = Field(True, description="serve `/metrics` and record HTTP metrics")
    ui_enabled: bool = Field(True, description="serve the page at / for trying a model in a browser (off: / is a 404)")

    # Jobs
    jobs_backend: Literal["memory", "redis"] = Field("memory", description="`memory` or `redis` (`docs/jobs.md`)")
    redis_url: SecretStr | None = Field(None, description="Redis for jobs; from a Secret in Kubernetes")
    job_ttl_s: Annotated[int, Field(ge=1)] = Field(3600, description="how long a finished job stays readable")
    jobs_max_queue: Annotated[int, Field(ge=1)] = Field(1000, description="jobs waiting before 503 OVERLOADED")
    jobs_max_queue_bytes: Annotated[int, Field(ge=1024)] = Field(
        256 * 1024 * 1024,
        description="image bytes of all queued and running jobs (process memory for `memory`, Redis memory for "
        "`redis`) before 503 OVERLOADED",
    )
    job_visibility_timeout_s: Annotated[float, Field(gt=0)] = Field(
        60, description="Redis backend: a job unacknowledged this long is reclaimed by another replica"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.grpc_port == self.port:
            raise ValueError(f"ML_API_GRPC_PORT={self.grpc_port} is the HTTP port (ML_API_PORT): use another or 0")
        if self.jobs_backend == "redis" and self.redis_url is None:
            raise ValueError("ML_API_JOBS_BACKEND=redis needs ML_API_REDIS_URL")
        if self.models_file is not None:  # the file's model list is checked when it is read (below)
            return self
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
        return self

    @model_validator(mode="after")
    def _model_operations(self) -> Settings:
        """The models file, when set, is the model list (read now: a broken file stops start-up, as an
        invalid ML_API_MODELS does); the shadow settings must name versions that exist."""
        from service.inference.model_config import ModelConfig, ModelConfigError, read_model_file

        if self.models_file is not None:
            if "models" in self.model_fields_set:
                raise ValueError("set ML_API_MODELS or ML_API_MODELS_FILE, not both")
            try:
                config = read_model_file(self.models_file, self)
            except ModelConfigError as exc:
                raise ValueError(f"ML_API_MODELS_FILE: {exc}") from None
            # The file's list is what serves: everything that reads settings sees it.
            self.models, self.default_model = list(config.models), config.default_model
            self.traffic_split, self.shadow = config.traffic_split, config.shadow
        else:
            try:
                ModelConfig.of_settings(self)
            except ModelConfigError as exc:  # the rest was checked by _consistent: the shadow is wrong
                raise ValueError(f"ML_API_SHADOW: {exc}") from None
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
