"""state_io: any nested training state survives save/load exactly, without pickle."""

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from training_toys import same

from training.state_io import load_state, save_state, state_paths

DTYPES = [
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.int8,
    torch.bool,
    torch.uint16,
]


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    raw = draw(st.binary(min_size=math.prod(shape) * dtype.itemsize, max_size=math.prod(shape) * dtype.itemsize))
    # Arbitrary bytes: NaN payloads, denormals and -0.0 included, which must all survive bit for bit.
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    tensor = flat.view(dtype).reshape(shape) if dtype != torch.bool else (flat != 0).reshape(shape)
    if draw(st.booleans()) and tensor.ndim == 2:
        tensor = tensor.t()  # non-contiguous
    return tensor


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
keys = st.text(max_size=6) | st.integers(-5, 5) | st.tuples(st.integers(0, 3), st.text(max_size=2)) | st.none()
states = st.recursive(
    scalars | tensors() | st.builds(lambda a: a.numpy(), tensors().filter(lambda t: t.dtype != torch.bfloat16)),
    lambda inner: (
        st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple) | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=states)
def test_round_trip_is_exact(tmp_path, state):
    save_state(state, tmp_path / "s")
    assert same(load_state(tmp_path / "s"), state)


def test_rng_states_round_trip(tmp_path):
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    save_state(state, tmp_path / "rng")
    assert same(load_state(tmp_path / "rng"), state)


def test_skeleton_is_readable_json_and_tensors_are_safetensors(tmp_path):
    written = save_state({"step": 3, "exp_avg": torch.ones(2)}, tmp_path / "opt")
    json_path, tensor_path = state_paths(tmp_path / "opt")
    assert sorted(written) == sorted([json_path, tensor_path])
    assert '"step": 3' in json_path.read_text()
    save_state({"epoch": 1, "cursor": 7}, tmp_path / "data")
    assert not state_paths(tmp_path / "data")[1].exists()


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"a": [1, object()]}, "state['a'][1]"),
        ({"opt": {"s": {1, 2}}}, "state['opt']['s']"),
        ({(1, 2): 3, frozenset(): 4}, "state: cannot store a dict key of type frozenset"),
    ],
)
def test_unsupported_values_fail_naming_where(tmp_path, state, where):
    with pytest.raises(TypeError, match=__import__("re").escape(where)):
        save_state(state, tmp_path / "x")


def test_namedtuple_is_refused_rather_than_silently_changed(tmp_path):
    from collections import namedtuple

    with pytest.raises(TypeError, match="Point"):
        save_state({"p": namedtuple("Point", "x y")(1, 2)}, tmp_path / "x")


def test_views_of_one_storage_come_back_as_separate_equal_tensors(tmp_path):
    base = torch.arange(10.0)
    state = {"whole": base, "slice": base[2:5], "matrix": base.view(2, 5), "strided": base[::3]}
    save_state(state, tmp_path / "views")
    loaded = load_state(tmp_path / "views")
    assert same(loaded, state)
    loaded["slice"][0] = -1.0
    assert loaded["whole"][2] == 2.0
