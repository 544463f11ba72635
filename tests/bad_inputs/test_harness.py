"""The harness itself fails where it must: a row that raises the wrong kind of error, names the
wrong culprit or writes a file is caught, so a green table means what it says."""
from __future__ import annotations

import pytest
from harness import Case, check

from minigpt_ptv2.errors import InputError, NonFiniteError
from minigpt_ptv2.validate import check_finite, read_json, require


def _raise(error):
    def run(tmp):
        raise error
    return run


def test_a_good_row_passes(tmp_path):
    assert check(Case("ok", _raise(InputError("field 'P' is bad")), ["'P'"]), tmp_path) == "field 'P' is bad"


@pytest.mark.parametrize("case", [
    Case("not ours", _raise(ValueError("'P'")), ["'P'"], error=ValueError),
    Case("wrong culprit", _raise(InputError("something")), ["'P'"]),
    Case("no error", lambda tmp: None, []),
], ids=str)
def test_a_bad_row_fails(case, tmp_path):
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check(case, tmp_path)


def test_a_row_that_writes_fails(tmp_path):
    def writes(tmp):
        (tmp / "half.json").write_text("{")
        raise InputError("'P'")
    with pytest.raises(AssertionError, match="files changed"):
        check(Case("writes", writes, ["'P'"]), tmp_path)


def test_validate_names_file_field_and_type(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"P": true, "task": 3}')
    meta = read_json(path)
    with pytest.raises(InputError, match=r"c.json: field 'P' must be a positive int, got true \(bool\)"):
        require(meta, path, {"P": "positive int"})
    with pytest.raises(InputError, match="missing field 'method'"):
        require(meta, path, {"method": "str"})
    path.write_text('{"P": 2,\n "x": }')
    with pytest.raises(InputError, match="line 2, column 7"):
        read_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="must hold a JSON object"):
        read_json(path)


def test_check_finite_names_the_tensor():
    import torch
    with pytest.raises(NonFiniteError, match="'w' holds 1 NaN and 1 infinite"):
        check_finite({"w": torch.tensor([1.0, float("nan"), float("inf")])}, "f.safetensors")
    check_finite({"ids": torch.tensor([1, 2]), "w": torch.ones(3)}, "f.safetensors")
