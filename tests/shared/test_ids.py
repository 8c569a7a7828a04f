from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ids import ALPHABET, PREFIXES, SIZE, id_pattern, is_valid_id, new_id


@pytest.mark.parametrize("kind", sorted(PREFIXES))
def test_new_id_has_prefix_and_nanoid(kind: str) -> None:
    value = new_id(kind)
    prefix, _, body = value.partition("_")
    assert prefix == PREFIXES[kind]
    assert len(body) == SIZE
    assert set(body) <= set(ALPHABET)
    assert is_valid_id(kind, value)


def test_prefixes_are_unique_and_separator_free() -> None:
    assert len(set(PREFIXES.values())) == len(PREFIXES)
    assert all(re.fullmatch(r"[a-z]{3,4}", prefix) for prefix in PREFIXES.values())
    assert "_" not in ALPHABET
    assert "-" not in ALPHABET


def test_ids_do_not_repeat() -> None:
    assert len({new_id("policy") for _ in range(10_000)}) == 10_000


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(KeyError):
        new_id("nonsense")


@given(st.text(max_size=40))
def test_is_valid_id_only_accepts_the_exact_shape(value: str) -> None:
    expected = re.fullmatch(r"pol_[0-9A-Za-z]{21}", value) is not None
    assert is_valid_id("policy", value) is expected


def test_other_kinds_prefix_is_not_valid() -> None:
    assert not is_valid_id("policy", new_id("mcp_server"))
    assert re.fullmatch(id_pattern("user"), new_id("user"))
