"""The chart's switch for the page: ``config.ui.enabled`` becomes ML_API_UI_ENABLED, which the service reads."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.chart.helm import FULLNAME, one, render

pytestmark = pytest.mark.helm


@pytest.mark.parametrize(("sets", "expected"), [((), "true"), (("config.ui.enabled=false",), "false")])
def test_config_ui_enabled_reaches_the_service(
    helm: str, sets: tuple[str, ...], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = one(render(sets=sets), "ConfigMap", FULLNAME)["data"]
    assert data["ML_API_UI_ENABLED"] == expected
    monkeypatch.setenv("ML_API_UI_ENABLED", data["ML_API_UI_ENABLED"])
    assert Settings(_env_file=None).ui_enabled is (expected == "true")  # type: ignore[call-arg]


def test_config_ui_enabled_must_be_a_boolean(helm: str) -> None:
    from tests.chart.helm import HelmError

    with pytest.raises(HelmError, match="ui"):
        render(sets=("config.ui.enabled=maybe",))
