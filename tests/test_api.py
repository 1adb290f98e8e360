"""The public API module: every advertised name resolves, unknown names fail clearly."""

from __future__ import annotations

import pytest


def test_every_export_resolves_and_unknown_names_raise() -> None:
    from medforensics import api

    for name in api.__all__:
        assert callable(getattr(api, name)), name
    assert sorted(dir(api)) == sorted(api.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        api.nope  # noqa: B018
