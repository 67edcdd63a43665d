"""The documentation's Python snippets run as pasted: every ```python block of each page of
``docs/`` runs, the blocks of one page in order in one namespace, in a fresh folder (the README's
own blocks are tests/test_readme.py). The site build itself (``sphinx-build -W``) runs in .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
WITH_CODE = [p for p in PAGES if "```python" in p.read_text()]


def test_the_docs_have_runnable_snippets():
    assert {p.stem for p in WITH_CODE} >= {"classic", "irestnet", "suppa", "pnp_reg", "golf"}


@pytest.mark.parametrize("page", WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_docs_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    namespace: dict = {"__name__": "docs_snippet"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - our own documentation
