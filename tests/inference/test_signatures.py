"""inference/signatures.py: specs from onnxruntime's fields, the warm-up input, request checks,
and the providers a session asks for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.signatures import (
    CPU_PROVIDER,
    ELEMENT_TYPES,
    WARMUP_ELEMENTS_MAX,
    SignatureError,
    TensorSpec,
    input_problem,
    session_providers,
    tensor_spec,
    warmup_inputs,
)

dims = st.one_of(st.integers(1, 8), st.none(), st.sampled_from(["batch", "N"]), st.just(-1))
specs = st.builds(
    tensor_spec,
    st.text("abcxyz_", min_size=1, max_size=8),
    st.sampled_from(sorted(ELEMENT_TYPES)),
    st.lists(dims, max_size=4),
)


def test_dynamic_dimensions_are_none_and_types_are_numpy_names() -> None:
    spec = tensor_spec("window", "tensor(float)", ["batch", 3, None, -1, 128])
    assert spec == TensorSpec("window", "tensor(float)", "float32", (None, 3, None, None, 128))
    assert spec.describe() == "float32[-1, 3, -1, -1, 128]"
    assert tensor_spec("s", "tensor(string)", [1]).dtype is None
    assert tensor_spec("u", "tensor(float)", None).shape is None
    assert tensor_spec("huge", "tensor(float)", [1 << 40]).shape == (None,)  # not a real dimension


@given(st.lists(specs, min_size=1, max_size=4, unique_by=lambda s: s.name))
def test_the_warm_up_input_always_fits_its_own_signature(inputs: list[TensorSpec]) -> None:
    warm = warmup_inputs(inputs)
    assert [w.name for w in warm] == [s.name for s in inputs]
    for w, spec in zip(warm, inputs, strict=True):
        assert spec.shape is not None
        assert w.shape == tuple(1 if d is None else d for d in spec.shape)
    assert input_problem(inputs, {w.name: (w.dtype, w.shape) for w in warm}) is None


@given(st.lists(specs, min_size=1, max_size=4, unique_by=lambda s: s.name), st.data())
def test_any_change_to_a_fitting_request_is_refused_naming_the_tensor(
    inputs: list[TensorSpec], data: st.DataObject
) -> None:
    given_ = {w.name: (w.dtype, w.shape) for w in warmup_inputs(inputs)}
    victim = data.draw(st.sampled_from(inputs))
    dtype, shape = given_[victim.name]
    change = data.draw(st.sampled_from(["drop", "dtype", "rank", "extra"]))
    if change == "drop":
        del given_[victim.name]
    elif change == "dtype":
        given_[victim.name] = ("complex64", shape)
    elif change == "rank":
        given_[victim.name] = (dtype, (*shape, 1))
    else:
        given_["zz-not-an-input"] = ("float32", (1,))
    problem = input_problem(inputs, given_)
    assert problem is not None
    tensor, message = problem
    assert tensor == ("zz-not-an-input" if change == "extra" else victim.name)
    assert repr(tensor[:64]) in message


def test_a_fixed_dimension_must_match_and_a_dynamic_one_takes_any_size() -> None:
    spec = tensor_spec("x", "tensor(float)", ["batch", 3])
    assert input_problem([spec], {"x": ("float32", (64, 3))}) is None
    assert input_problem([spec], {"x": ("float32", (64, 4))}) == (
        "x",
        "input 'x': shape [64, 4], expected float32[-1, 3]",
    )


def test_inputs_a_warm_up_cannot_generate_are_named() -> None:
    with pytest.raises(SignatureError, match="input 'text': type tensor\\(string\\) cannot be generated"):
        warmup_inputs([tensor_spec("text", "tensor(string)", [1])])
    with pytest.raises(SignatureError, match="input 'x': its rank is unknown"):
        warmup_inputs([tensor_spec("x", "tensor(float)", None)])
    with pytest.raises(SignatureError, match=f"over the {WARMUP_ELEMENTS_MAX} a warm-up may use"):
        warmup_inputs([tensor_spec("x", "tensor(float)", [1 << 20, 1 << 20])])


def test_providers_put_the_asked_accelerator_first_and_always_end_with_the_cpu() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER]
    assert session_providers(available, None) == [CPU_PROVIDER]
    assert session_providers(available, "cuda") == ["CUDAExecutionProvider", CPU_PROVIDER]
    assert session_providers(available, "TensorRT") == ["TensorrtExecutionProvider", CPU_PROVIDER]
    assert session_providers([CPU_PROVIDER], "cuda") == [CPU_PROVIDER]  # not offered: the CPU serves
    assert session_providers(available, "cpu") == [CPU_PROVIDER]
