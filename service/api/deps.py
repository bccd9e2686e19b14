"""FastAPI dependencies: everything a route needs comes from the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.api.inputs import ImageReader
from service.inference.pipeline import InferencePipeline
from service.jobs.base import JobBackend
from service.settings import Settings

_NAME = r"^[A-Za-z0-9._-]+$"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pipeline(request: Request) -> InferencePipeline:
    return request.app.state.pipeline


def get_reader(request: Request) -> ImageReader:
    return request.app.state.reader


def get_jobs(request: Request) -> JobBackend:
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
PipelineDep = Annotated[InferencePipeline, Depends(get_pipeline)]
ReaderDep = Annotated[ImageReader, Depends(get_reader)]
JobsDep = Annotated[JobBackend, Depends(get_jobs)]
ModelQuery = Annotated[
    str | None, Query(max_length=64, pattern=_NAME, description="registered model name; default if unset")
]
VersionQuery = Annotated[
    str | None, Query(max_length=64, pattern=_NAME, description="model version; traffic split if unset")
]
TopKQuery = Annotated[int, Query(ge=1, le=20)]


class ModelSelection:
    """The ``model`` / ``model_version`` query parameters every predict-like route takes."""

    def __init__(self, model: ModelQuery = None, model_version: VersionQuery = None) -> None:
        self.model = model
        self.version = model_version


SelectionDep = Annotated[ModelSelection, Depends()]
