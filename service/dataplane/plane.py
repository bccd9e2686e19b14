"""``DataPlane``: models, inference, jobs and health for every front end, over the inference core."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence, Sized

import numpy as np
import torch
from opentelemetry.trace import Tracer

from service import __version__
from service.dataplane.description import ModelDescription
from service.dataplane.frontend import current_front_end, use_front_end
from service.dataplane.reload import ModelFileWatcher
from service.dataplane.shadow import ShadowMirror
from service.dataplane.sources import Base64Image, ImageItem, ImageSource, ImageUrl, ModelRef
from service.dataplane.status import (
    DrainState,
    HealthReport,
    HealthStatus,
    ModelConfigStatus,
    ModelsReport,
    ModelStatus,
)
from service.errors import (
    INTERNAL_ERROR_MESSAGE,
    InferenceFailed,
    InvalidRequest,
    JobNotFound,
    ModelNotFound,
    ModelNotLoaded,
    ServiceError,
    ShuttingDown,
)
from service.fetch import ImageFetcher
from service.inference.batcher import Priority
from service.inference.device import thread_budget
from service.inference.pipeline import InferencePipeline
from service.inference.registry import LoadState, ModelRegistry
from service.inference.reload import ModelReloader
from service.inference.results import Classification, Embedding
from service.jobs.base import JobBackend, JobRecord, JobRequest
from service.jobs.factory import build_job_backend
from service.observability.metrics import InferenceMetrics
from service.observability.model_ops_metrics import MAX_CLASSES_COUNTED
from service.observability.prediction_log import PredictionLog
from service.settings import Settings

log = logging.getLogger(__name__)

Outcome = Classification | ServiceError
# Base64 text longer than this is decoded in a worker thread: below it decoding is cheaper than the hop.
OFF_LOOP_CHARS = 64 * 1024


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelRegistry,
        pipeline: InferencePipeline,
        fetcher: ImageFetcher,
        jobs: JobBackend,
        drain: DrainState,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pipeline = pipeline
        self.fetcher = fetcher
        self.jobs = jobs
        self.drain = drain
        # Model operations: reloads from the models file, shadow traffic, prediction logs, class counts.
        self._metrics = metrics
        self.reloader = ModelReloader(registry, observer=metrics, drain_timeout=settings.request_timeout_s + 5)
        self.watcher = (
            ModelFileWatcher(settings, registry, self.reloader, reporter=metrics.ops if metrics else None)
            if settings.models_file
            else None
        )
        self.shadow = ShadowMirror(settings, registry, pipeline, observer=self)
        self.prediction_log = PredictionLog(settings.prediction_log_rate)
        self._started_at = time.time()

    @classmethod
    def build(cls, settings: Settings, *, tracer: Tracer, metrics: InferenceMetrics, drain: DrainState) -> DataPlane:
        threads = thread_budget(settings.workers, settings.torch_threads)
        registry = ModelRegistry(
            settings, tracer=tracer, threads=threads, batch_observer=metrics, load_observer=metrics
        )
        return cls(
            settings,
            registry=registry,
            pipeline=InferencePipeline(settings, registry, tracer=tracer, observer=metrics),
            fetcher=ImageFetcher(settings),
            jobs=build_job_backend(settings, observer=metrics),
            drain=drain,
            metrics=metrics,
        )

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the job workers and load the default model in the background."""
        await self.jobs.start(self._run_job)
        self.registry.start()
        if self.watcher is not None:
            self.watcher.start()

    def stop_accepting(self) -> None:
        """Refuse new inference (the server has waited for in-flight requests); job workers hand work back."""
        self.pipeline.accepting = False

    async def close(self) -> None:
        """Shut down in the order that loses nothing accepted: no new requests, then the job backend (the
        in-process one finishes its queue through the still-running pipeline, the Redis one lets running
        jobs finish and leaves the rest to other replicas), then the pipeline and the models."""
        self.drain.draining = True
        if self.watcher is not None:
            await self.watcher.close()
        await self.jobs.close()
        self.stop_accepting()
        await self.shadow.close()
        await self.reloader.close()
        await self.registry.close(drain_timeout=self.settings.shutdown_grace_s)
        await self.fetcher.aclose()
        self.pipeline.close()

    # Models and health ----------------------------------------------------------------------

    def resolve(self, ref: ModelRef) -> ModelRef:
        """The model version ``ref`` is served by (raises ModelNotFound); resolve once per request, since
        an A/B split draws a version each time.

        A ref this method returned before is kept as it is while its version exists; when a reload
        removed that version meanwhile, what the request named is resolved again (a request racing a
        switch is served by the old set or the new one, not failed)."""
        if ref.requested is not None:
            try:
                self.registry.resolve(ref.name, ref.version)
            except ModelNotFound:
                return self.resolve(ref.requested)
            return ref
        name, version = self.registry.resolve(ref.name, ref.version)
        return ModelRef(name, version, requested=ref)

    def models(self) -> ModelsReport:
        return ModelsReport(
            default=self.registry.config.default_model, models=self._model_statuses(), config=self.config_status()
        )

    def config_status(self) -> ModelConfigStatus:
        """Where the served model list comes from, its generation, and how the last reload went."""
        if self.watcher is not None:
            return self.watcher.status
        return ModelConfigStatus(
            source="environment",
            path=None,
            generation=self.registry.generation,
            loaded_at=self._started_at,
            in_sync=True,
        )

    def check_started(self) -> None:
        if not self.registry.startup_complete:
            raise ModelNotLoaded("the default model is still loading")

    def check_ready(self) -> None:
        """Raise why this process cannot serve now: draining, or the default model not loaded and warm."""
        if self.drain.draining or not self.pipeline.accepting:
            raise ShuttingDown()
        if self.registry.startup_error is not None:
            # The load error itself (paths, library messages) is in the log, not in a probe's answer.
            raise ModelNotLoaded("the default model failed to load; the server log says why")
        if not self.registry.ready:
            raise ModelNotLoaded("the default model is not loaded and warmed up yet")
        if self.settings.device_required and self.registry.device_fallback:
            raise ModelNotLoaded("ML_API_DEVICE=cuda but no usable GPU, and ML_API_DEVICE_REQUIRED is set")

    def health(self) -> HealthReport:
        registry = self.registry
        status: HealthStatus = "healthy"
        if registry.any_failed or not registry.ready:
            status = "unhealthy"
        elif registry.device_fallback:
            status = "degraded"
        return HealthReport(
            status=status,
            model_loaded=registry.ready,
            gpu_available=registry.gpu_available,
            version=__version__,
            models=self._model_statuses(),
        )

    def _model_statuses(self) -> tuple[ModelStatus, ...]:
        registry = self.registry
        config = registry.config
        return tuple(
            ModelStatus(
                name=entry.spec.name,
                version=entry.spec.version,
                labels_count=len(entry.model.labels) if entry.model else None,
                device=str(registry.device),
                loaded=entry.state is LoadState.LOADED,
                default=entry.spec.name == config.default_model,
                state=entry.state.value,
                traffic_weight=registry.traffic_weight(entry.spec.name, entry.spec.version),
                backend=entry.model.backend_name if entry.model else None,
                instances=entry.batcher.instances if entry.batcher else None,
                shadow_rate=config.shadow[entry.spec.name].rate
                if config.is_shadow(entry.spec.name, entry.spec.version)
                else None,
            )
            for entry in registry.entries()
        )

    # Inference ------------------------------------------------------------------------------

    def deadline(self, timeout_s: float | None = None) -> float:
        """When a request must be answered: ``timeout_s`` from now (a client's own deadline, e.g. the
        X-Request-Timeout header or a gRPC deadline), never later than the server's request timeout."""
        limit = self.settings.request_timeout_s
        return time.monotonic() + (min(timeout_s, limit) if timeout_s is not None else limit)

    async def classify(
        self, source: ImageSource, model: ModelRef, *, top_k: int = 5, timeout_s: float | None = None
    ) -> Classification:
        """Classify one image; its failure is raised. An unknown model fails before any URL is fetched."""
        deadline = self.deadline(timeout_s)
        resolved = self.resolve(model)
        data = await self._read(source)
        (outcome,) = await self._classify([data], resolved, top_k=top_k, deadline=deadline)
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome

    async def classify_many(
        self,
        items: Sequence[ImageItem],
        model: ModelRef,
        *,
        top_k: int = 5,
        timeout_s: float | None = None,
        probabilities: bool = False,
    ) -> list[Outcome]:
        """Classify several images as one batch submission; each item fails on its own. ``probabilities``
        adds every class's probability to each result."""
        deadline = self.deadline(timeout_s)
        self._check_count(items)
        resolved = self.resolve(model)
        read = await asyncio.gather(*(self._read_or_error(item) for item in items))
        images = [item for item in read if isinstance(item, bytes)]
        classified = iter(
            await self._classify(images, resolved, top_k=top_k, deadline=deadline, probabilities=probabilities)
            if images
            else []
        )
        return [next(classified) if isinstance(item, bytes) else item for item in read]

    async def classify_stream(
        self, items: Sequence[ImageItem], model: ModelRef, *, top_k: int = 5, timeout_s: float | None = None
    ) -> AsyncGenerator[tuple[int, Outcome], None]:
        """Check the request and load the model now (so those errors precede any streamed byte), then
        return an iterator of ``(index, outcome)`` in completion order. Closing it early cancels the rest."""
        self._check_count(items)
        resolved = self.resolve(model)
        assert resolved.name is not None and resolved.version is not None
        await self.registry.get(resolved.name, resolved.version)
        deadline = self.deadline(timeout_s)

        async def one(index: int, item: ImageItem) -> tuple[int, Outcome]:
            try:
                if isinstance(item, ServiceError):
                    raise item
                (outcome,) = await self._classify([await self._read(item)], resolved, top_k=top_k, deadline=deadline)
            except ServiceError as exc:
                outcome = exc
            except Exception:  # one image's bug must not end the stream without its error event
                log.exception("streamed image %d failed", index)
                outcome = InferenceFailed(INTERNAL_ERROR_MESSAGE)
            return index, outcome

        async def events() -> AsyncGenerator[tuple[int, Outcome], None]:
            tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(items)]
            try:
                for finished in asyncio.as_completed(tasks):
                    yield await finished
            finally:
                for task in tasks:  # the client went away: stop the work it no longer wants
                    task.cancel()

        return events()

    async def embed(self, source: ImageSource, model: ModelRef, *, timeout_s: float | None = None) -> Embedding:
        deadline = self.deadline(timeout_s)
        resolved = self.resolve(model)
        data = await self._read(source)
        for attempt in range(2):
            assert resolved.name is not None and resolved.version is not None
            try:
                return await self.pipeline.embed(data, model=resolved.name, version=resolved.version, deadline=deadline)
            except ModelNotFound:
                if attempt or resolved.requested is None:
                    raise
                resolved = self.resolve(resolved)  # removed by a reload on the way: the new set serves it
        raise AssertionError("unreachable")

    def _check_count(self, items: Sized) -> None:
        limit = self.settings.max_batch_items
        if len(items) > limit:
            raise InvalidRequest(f"at most {limit} images per request", field=("images",), kind="too_long")

    async def _classify(
        self,
        images: Sequence[bytes],
        model: ModelRef,
        *,
        top_k: int,
        deadline: float,
        priority: Priority = Priority.INTERACTIVE,
        probabilities: bool = False,
        request_id: str | None = None,
    ) -> list[Outcome]:
        started = time.monotonic()
        for attempt in range(2):
            name, version = model.name, model.version
            assert name is not None and version is not None
            try:
                outcomes = await self.pipeline.classify(
                    images,
                    model=name,
                    version=version,
                    top_k=top_k,
                    deadline=deadline,
                    priority=priority,
                    probabilities=probabilities,
                )
            except ModelNotFound:
                if attempt or model.requested is None:
                    raise
                model = self.resolve(model)  # removed by a reload on the way: the new set serves it
                continue
            self._classified(images, outcomes, name, version, time.monotonic() - started, request_id)
            return outcomes
        raise AssertionError("unreachable")

    # Model operations: what follows every classification ----------------------------------------

    def _classified(
        self,
        images: Sequence[bytes],
        outcomes: Sequence[Outcome],
        model: str,
        version: str,
        seconds: float,
        request_id: str | None,
    ) -> None:
        """Count the top-1 classes, log the sampled share and mirror to the shadow version. Never
        raises: the request's answer is ready and must not fail for its bookkeeping."""
        try:
            self.count_classes(
                model,
                version,
                _top1_class_ids(outcomes),
            )
            self.prediction_log.record(
                images, outcomes, protocol=current_front_end(), latency_ms=seconds * 1000, request_id=request_id
            )
            self.shadow.mirror(images, outcomes, model, version)
        except Exception:
            log.exception("recording the predictions of %s:%s failed", model, version)

    def count_classes(self, model: str, version: str, class_ids: Sequence[int]) -> None:
        """``ml_api_predicted_class_total``: the top-1 class of each result, for models whose classes are
        few enough (``MAX_CLASSES_COUNTED``) to be label values."""
        entry = self.registry.loaded_entry(model, version)
        if self._metrics is None or not class_ids or entry is None or entry.model is None:
            return
        if len(entry.model.labels) > MAX_CLASSES_COUNTED:
            return
        for class_id in class_ids:
            self._metrics.ops.class_predicted(model, version, class_id)

    # ShadowObserver: the mirror's outcomes go to the metrics, its results into the class counts.
    def shadow_done(
        self,
        model: str,
        primary_version: str,
        shadow_version: str,
        outcome: str,
        *,
        seconds: float | None = None,
        agreed: bool | None = None,
    ) -> None:
        if self._metrics is not None:
            self._metrics.ops.shadow_done(
                model, primary_version, shadow_version, outcome, seconds=seconds, agreed=agreed
            )

    def class_predicted(self, model: str, version: str, class_id: int) -> None:
        self.count_classes(model, version, [class_id])

    async def _read(self, source: ImageSource) -> bytes:
        if isinstance(source, ImageUrl):
            return await self.fetcher.fetch(source.url)
        if isinstance(source, Base64Image):
            if len(source.text) > OFF_LOOP_CHARS:
                return await asyncio.to_thread(source.decode)
            return source.decode()
        return source

    async def _read_or_error(self, item: ImageItem) -> bytes | ServiceError:
        if isinstance(item, ServiceError):
            return item
        try:
            return await self._read(item)
        except ServiceError as exc:
            return exc

    # Preprocessed images and model descriptions (the Open Inference Protocol front ends) -------

    async def classify_arrays(
        self,
        images: np.ndarray,
        model: ModelRef,
        *,
        top_k: int = 5,
        timeout_s: float | None = None,
        probabilities: bool = False,
    ) -> list[Outcome]:
        """Classify images a client preprocessed itself: a uint8 NCHW array of the model's input size,
        one batch submission; each image fails on its own (e.g. a wrong size)."""
        deadline = self.deadline(timeout_s)
        self._check_count(images)
        resolved = self.resolve(model)
        assert resolved.name is not None and resolved.version is not None
        # from_numpy shares the client's buffer; the batcher stacks the images into a new batch anyway.
        tensors = [torch.from_numpy(np.ascontiguousarray(image)) for image in images]
        outcomes = await self.pipeline.classify_tensors(
            tensors,
            model=resolved.name,
            version=resolved.version,
            top_k=top_k,
            probabilities=probabilities,
            deadline=deadline,
        )
        # Counted in the class distribution; not logged or mirrored: those need the encoded image.
        self.count_classes(
            resolved.name,
            resolved.version,
            _top1_class_ids(outcomes),
        )
        return outcomes

    async def describe(self, ref: ModelRef) -> ModelDescription:
        """The version ``ref`` names (unversioned: the one most unversioned requests are served by),
        loaded first if it is not yet: its classes, backend and preprocessing."""
        name, version = self._published_version(ref)
        entry = await self.registry.get(name, version)
        assert entry.model is not None
        pre = entry.model.preprocessing
        return ModelDescription(
            name=name,
            version=version,
            versions=tuple(self.settings.versions_of(name)),
            labels=tuple(entry.model.labels),
            backend=entry.model.backend_name,
            input_size=pre.crop_size,
            resize_size=pre.resize_size,
            mean=tuple(pre.mean),
            std=tuple(pre.std),
            interpolation=pre.interpolation,
            channels=pre.channels,
        )

    def model_ready(self, ref: ModelRef) -> bool:
        """Whether every version a request naming ``ref`` can be served by is loaded (unversioned: each
        version the A/B split gives traffic, or the newest), and the process is not draining."""
        name, version = self._published_version(ref)
        split = self.settings.traffic_split.get(name) if ref.version is None else None
        reachable = {v for v, weight in split.items() if weight > 0} if split else {version}
        loaded = {
            entry.spec.version
            for entry in self.registry.entries()
            if entry.spec.name == name and entry.state is LoadState.LOADED
        }
        return reachable <= loaded and not self.drain.draining and self.pipeline.accepting

    def _published_version(self, ref: ModelRef) -> tuple[str, str]:
        """(name, version) of ``ref`` without drawing from the A/B split: the heaviest split version
        (the last listed of equal weights), else the newest. Raises ModelNotFound."""
        name = ref.name or self.settings.default_model
        versions = self.settings.versions_of(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not registered")
        if ref.version is not None:
            if ref.version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {ref.version!r}")
            return name, ref.version
        split = self.settings.traffic_split.get(name)
        if split:
            heaviest = max(split.values())
            return name, [v for v in versions if split.get(v) == heaviest][-1]
        return name, versions[-1]

    # Jobs -----------------------------------------------------------------------------------

    async def submit_job(
        self,
        source: ImageSource,
        model: ModelRef,
        *,
        top_k: int,
        request_id: str,
        idempotency_key: str | None = None,
        tenant: str = "",
    ) -> JobRecord:
        """Queue one image for asynchronous classification. The model is checked now (an unknown one is
        a 404 at once, not a failed job later); the version is chosen when the job runs.

        An idempotency key is the submitting tenant's own: the same key from another API key is another job.
        """
        self.resolve(model)
        if not self.pipeline.accepting:
            raise ShuttingDown()
        request = JobRequest(
            image=await self._read(source),
            model=model.name,
            model_version=model.version,
            top_k=top_k,
            request_id=request_id,
        )
        scoped_key = None if idempotency_key is None else f"{tenant or '-'}:{idempotency_key}"
        return await self.jobs.submit(request, idempotency_key=scoped_key)

    async def job(self, job_id: str) -> JobRecord:
        record = await self.jobs.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id!r} (unknown or expired)")
        return record

    async def watch_job(self, job_id: str) -> AsyncIterator[JobRecord]:
        """Check the job exists now, then return an iterator of its states until it finishes."""
        await self.job(job_id)
        return self.jobs.watch(job_id)

    async def _run_job(self, job_id: str, request: JobRequest) -> Classification:
        """A job is background work: interactive requests go first, the batcher keeps jobs moving."""
        use_front_end("job")
        resolved = self.resolve(ModelRef(request.model, request.model_version))
        (outcome,) = await self._classify(
            [request.image],
            resolved,
            top_k=request.top_k,
            deadline=self.deadline(),
            priority=Priority.BACKGROUND,
            request_id=request.request_id,
        )
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome


def _top1_class_ids(outcomes: Sequence[Outcome]) -> list[int]:
    return [o.predictions[0].class_id for o in outcomes if isinstance(o, Classification) and o.predictions]
