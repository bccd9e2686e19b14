"""Fixtures for the chart tests: the pinned helm binary and every ci/ case rendered once per session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import CHART, CaseDocs, Rendered, ci_cases, render_all


@pytest.fixture(scope="session")
def rendered_cases(helm: str) -> dict[str, Rendered]:
    return render_all(ci_cases())


@pytest.fixture(scope="session")
def case_docs(rendered_cases: dict[str, Rendered]) -> CaseDocs:
    """Rendered documents of one case; fails with helm's message when the case does not render."""

    def get(name: str) -> list[dict[str, Any]]:
        r = rendered_cases[name]
        if r.error is not None:
            pytest.fail(f"case {name!r} does not render: {r.error}")
        assert r.docs is not None
        return r.docs

    return get


@pytest.fixture(scope="session")
def default_docs(case_docs: CaseDocs) -> list[dict[str, Any]]:
    return case_docs("default")


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A scratch copy of the chart, for tests that add or remove chart files."""
    dst = tmp_path / "ml-api"
    shutil.copytree(CHART, dst)
    return dst
