"""The API reference is made from the docstrings, kept current, and its examples run."""
import doctest
import importlib
from pathlib import Path

import pytest

from rog.apidoc import API, reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_committed_reference_is_current_and_documents_every_name():
    text = reference()
    assert DOCS.read_text() == text, "docs/api.md is stale: run `python -m rog.apidoc`"
    assert "(undocumented)" not in text and text.count(">>>") >= 10  # the examples are in it
    for module, names in API.items():
        assert f"## `{module}`" in text and all(f"`{name}(" in text for name in names), module


@pytest.mark.parametrize("module", sorted({*API, "rog.attacks.threat"}))
def test_examples_in_the_docstrings_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
