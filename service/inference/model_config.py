"""The model configuration that can change while the service runs: which versions exist, the default
model, the A/B split and shadow traffic. It comes from the settings at start-up, and from the models
file (``ML_API_MODELS_FILE``) whenever that file changes.

The file holds JSON, either the list ``ML_API_MODELS`` takes, or an object::

    {"models": [...], "default_model": "digits", "traffic_split": {...}, "shadow": {...}}

where every key but ``models`` is optional and falls back to its environment setting
(``ML_API_DEFAULT_MODEL``, ``ML_API_TRAFFIC_SPLIT``, ``ML_API_SHADOW``). Torch-free: the settings
validate through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.settings import ModelSpec, ShadowSpec

if TYPE_CHECKING:
    from service.settings import Settings

# A ConfigMap holds at most 1 MiB; anything larger is not a model list.
MAX_FILE_BYTES = 1024 * 1024
FILE_KEYS = ("models", "default_model", "traffic_split", "shadow")


class ModelConfigError(ValueError):
    """A model configuration that cannot be served: unreadable, not JSON, or inconsistent."""


class ModelConfig(BaseModel):
    """One consistent set of versions, the default model, the traffic split and the shadow targets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: Annotated[tuple[ModelSpec, ...], Field(min_length=1)]
    default_model: str
    traffic_split: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = Field(default_factory=dict)
    shadow: dict[str, ShadowSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        keys = [spec.key for spec in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError("the model list names the same name and version twice")
        names = {spec.name for spec in self.models}
        if self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not in the model list")
        for model, split in self.traffic_split.items():
            unknown = set(split) - set(self.versions_of(model))
            if model not in names or unknown:
                raise ValueError(f"traffic_split names unknown model/version: {model} {sorted(unknown)}")
            if sum(split.values()) <= 0:
                raise ValueError(f"traffic_split for {model!r} has no positive weight")
        for model, target in self.shadow.items():
            versions = self.versions_of(model)
            if target.version not in versions:
                raise ValueError(f"shadow for {model!r} names version {target.version!r}, which is not in the list")
            if versions == [target.version]:
                raise ValueError(f"shadow for {model!r}: its only version cannot be its own shadow")
            if self.traffic_split.get(model, {}).get(target.version, 0) > 0:
                raise ValueError(
                    f"shadow version {model}:{target.version} has a traffic_split weight; a shadow version gets "
                    "mirrored copies only"
                )
        return self

    @classmethod
    def of_settings(cls, settings: Settings) -> ModelConfig:
        return cls.parse(
            {
                "models": settings.models,
                "default_model": settings.default_model,
                "traffic_split": settings.traffic_split,
                "shadow": settings.shadow,
            }
        )

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ModelConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ModelConfigError(_errors(exc)) from None

    # Queries ----------------------------------------------------------------------------------

    def versions_of(self, name: str) -> list[str]:
        return [spec.version for spec in self.models if spec.name == name]

    def is_shadow(self, name: str, version: str) -> bool:
        target = self.shadow.get(name)
        return target is not None and target.version == version

    def serving_versions(self, name: str) -> list[str]:
        """The versions unversioned requests may get: every listed one but a shadow target."""
        return [v for v in self.versions_of(name) if not self.is_shadow(name, v)]

    def spec(self, name: str, version: str) -> ModelSpec | None:
        return next((s for s in self.models if s.key == (name, version)), None)


def parse_model_file(text: str, defaults: Settings) -> ModelConfig:
    """The configuration a models file describes; keys it leaves out come from ``defaults``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"not valid JSON: {exc}") from None
    if isinstance(data, list):
        data = {"models": data}
    if not isinstance(data, dict):
        raise ModelConfigError("expected a JSON list of model specs or an object with a 'models' list")
    unknown = set(data) - set(FILE_KEYS)
    if unknown:
        raise ModelConfigError(f"unknown keys {sorted(unknown)} (allowed: {', '.join(FILE_KEYS)})")
    if "models" not in data:
        raise ModelConfigError("the object has no 'models' list")
    return ModelConfig.parse(
        {
            "models": data["models"],
            "default_model": data.get("default_model", defaults.default_model),
            "traffic_split": data.get("traffic_split", defaults.traffic_split),
            "shadow": data.get("shadow", defaults.shadow),
        }
    )


def read_text(path: str) -> str:
    """The file's text; a missing, unreadable, oversized or non-UTF-8 file is a ModelConfigError."""
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ModelConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ModelConfigError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelConfigError(f"{path} is not UTF-8 text") from None


def read_model_file(path: str, defaults: Settings) -> ModelConfig:
    return parse_model_file(read_text(path), defaults)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
