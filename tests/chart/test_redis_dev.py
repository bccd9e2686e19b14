"""templates/redis-dev.yaml: the development Redis."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    FULLNAME,
    CaseDocs,
    deployment,
    env_of,
    main_container,
    one,
)

pytestmark = pytest.mark.helm


def test_dev_redis_is_hardened_with_aof_and_isolated_from_the_api_selector(case_docs: CaseDocs) -> None:
    docs = case_docs("redis-dev")
    redis = one(docs, "Deployment", f"{FULLNAME}-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert container["image"] == "docker.io/library/redis:7.4-alpine"
    svc = one(docs, "Service", f"{FULLNAME}-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    env = env_of(main_container(docs))
    assert env["ML_API_REDIS_URL"]["value"] == f"redis://{FULLNAME}-redis:6379/0"
    # Neither selector may pick up the other's pods, or the API Service would route to Redis.
    api = deployment(docs)
    api_sel = api["spec"]["selector"]["matchLabels"].items()
    redis_sel = redis["spec"]["selector"]["matchLabels"].items()
    assert not api_sel <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert not redis_sel <= api["spec"]["template"]["metadata"]["labels"].items()
    api_svc_sel = one(docs, "Service", FULLNAME)["spec"]["selector"].items()
    assert not api_svc_sel <= redis["spec"]["template"]["metadata"]["labels"].items()
    np = one(docs, "NetworkPolicy", f"{FULLNAME}-redis")
    assert np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == dict(api_sel)
