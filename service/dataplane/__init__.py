"""The one inference path behind every front end (REST v1, the page, v2).

Front ends parse their protocol into ``ImageSource`` values and a ``ModelRef``
(``service.dataplane.sources``), call ``service.dataplane.plane.DataPlane``, and render the plain
results it returns (``service.inference.results``, ``service.dataplane.status``,
``service.jobs.base.JobRecord``) in their own shapes; failures are ``service.errors.ServiceError``.
Nothing is imported here, so the plain types load without torch.
"""
