"""secagg.torch: state_dict <-> vector, integer buffers, deltas, tensor inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from secagg.errors import ParameterError  # noqa: E402
from secagg.torch import (  # noqa: E402
    apply_delta,
    as_numpy,
    flatten_state_dict,
    model_delta,
    unflatten,
    unflatten_state_dict,
)


def bn_model(hidden: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1))


def trained(model: nn.Module, steps: int = 3) -> nn.Module:
    model.train()
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        model.zero_grad()
        model(torch.randn(16, 5, generator=g)).pow(2).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    return model


def test_import_secagg_does_not_import_torch():
    code = ("import sys, secagg, secagg.training, secagg.training.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'sklearn' not in sys.modules and 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_round_trip_keeps_dtypes_and_shapes_with_batchnorm():
    model = trained(bn_model())
    sd = model.state_dict()
    assert int(sd["1.num_batches_tracked"]) == 3
    vec, spec = flatten_state_dict(model)
    assert vec.dtype == np.float64 and vec.ndim == 1
    # every floating entry, parameters and running statistics, is aggregated; the counter is not
    n_float = sum(v.numel() for v in sd.values() if v.is_floating_point())
    assert vec.size == spec.size == n_float
    assert "1.num_batches_tracked" not in spec.aggregated_names
    assert {"1.running_mean", "1.running_var", "1.weight", "0.weight"} <= set(spec.aggregated_names)
    back = unflatten_state_dict(vec, spec)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert torch.equal(back[k], v), k
    fresh = bn_model(seed=5)
    fresh.load_state_dict(back)  # loads without complaint


def test_mixed_float_dtypes_round_trip():
    sd = {"a": torch.arange(6, dtype=torch.float16).reshape(2, 3) / 4,
          "b": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
          "c": torch.tensor(3.0, dtype=torch.float64),
          "steps": torch.tensor(7, dtype=torch.int64),
          "mask": torch.tensor([True, False])}
    vec, spec = flatten_state_dict(sd)
    assert vec.size == 6 + 2 + 1
    back = unflatten(vec, spec)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k], v)


def test_integer_buffers_come_from_the_base_model():
    global_model = bn_model()
    g_sd = {k: v.clone() for k, v in global_model.state_dict().items()}
    client = trained(bn_model(), steps=4)
    delta = model_delta(client, g_sd)
    new = apply_delta(g_sd, delta)
    # floats moved to the client's values, the counter stayed the global one (0), never averaged
    assert int(new["1.num_batches_tracked"]) == 0
    assert new["1.num_batches_tracked"].dtype == torch.int64
    assert torch.allclose(new["0.weight"], client.state_dict()["0.weight"], atol=1e-6)
    assert torch.allclose(new["1.running_mean"], client.state_dict()["1.running_mean"], atol=1e-6)


def test_exclude_float_buffers():
    model = trained(bn_model())
    vec, spec = flatten_state_dict(model, include_buffers=False)
    assert "1.running_mean" not in spec.aggregated_names
    assert vec.size == sum(p.numel() for p in model.parameters())
    back = unflatten_state_dict(vec, spec, base=model)
    assert torch.equal(back["1.running_var"], model.state_dict()["1.running_var"])


def test_model_delta_values():
    old = bn_model()
    new = trained(bn_model())
    d = model_delta(new.state_dict(), old.state_dict())
    v_new, _ = flatten_state_dict(new)
    v_old, _ = flatten_state_dict(old)
    np.testing.assert_array_equal(d, v_new - v_old)


def test_mismatched_shapes_are_a_clear_error():
    _, spec = flatten_state_dict(bn_model(hidden=8))
    with pytest.raises(ParameterError, match=r"client 3: entry '0.weight' has shape \(4, 5\)"):
        flatten_state_dict(bn_model(hidden=4), spec, who="client 3")
    with pytest.raises(ParameterError, match="shape"):
        model_delta(bn_model(hidden=4), bn_model(hidden=8), who="client 2")
    with pytest.raises(ParameterError, match="missing"):
        flatten_state_dict(nn.Linear(5, 8), spec)
    vec, _ = flatten_state_dict(bn_model(hidden=8))
    with pytest.raises(ParameterError, match="entries"):
        unflatten_state_dict(vec[:-1], spec)


def test_nan_is_a_clear_error():
    model = bn_model()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ParameterError, match=r"NaN or infinite values in \['0.weight'\]"):
        flatten_state_dict(model)
    vec, spec = flatten_state_dict(bn_model())
    vec[3] = np.inf
    with pytest.raises(ParameterError, match="NaN or infinite"):
        unflatten_state_dict(vec, spec)


def test_as_numpy_accepts_tensors_modules_and_arrays():
    t = torch.arange(6, dtype=torch.float32, requires_grad=True).reshape(2, 3)
    a = as_numpy(t)
    assert a.dtype == np.float64 and a.shape == (2, 3)
    np.testing.assert_array_equal(a, np.arange(6).reshape(2, 3))
    model = bn_model()
    np.testing.assert_array_equal(as_numpy(model), flatten_state_dict(model)[0])
    np.testing.assert_array_equal(as_numpy(model.state_dict()), flatten_state_dict(model)[0])
    np.testing.assert_array_equal(as_numpy([1, 2]), np.array([1.0, 2.0]))
    with pytest.raises(ParameterError):
        as_numpy(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ParameterError):
        as_numpy(["a", "b"])


def test_unflatten_accepts_a_tensor_vector():
    model = bn_model()
    vec, spec = flatten_state_dict(model)
    back = unflatten_state_dict(torch.from_numpy(vec), spec)
    assert torch.equal(back["0.weight"], model.state_dict()["0.weight"])


def test_simulate_accepts_modules_state_dicts_and_tensors():
    from secagg.simulation import simulate

    a, b = bn_model(seed=1), trained(bn_model(seed=2))
    va, vb = flatten_state_dict(a)[0], flatten_state_dict(b)[0]
    t = torch.linspace(-1, 1, va.size)
    from secagg.encoding.fixed_point import FixedPoint

    res = simulate([a, b.state_dict(), t], protocol="secagg", seed=3,
                   encoding=FixedPoint(clip=8.0, frac_bits=20))  # running_var can exceed the default clip 1
    expected = (va + vb + t.double().numpy()) / 3
    assert res.aggregate.shape == va.shape
    np.testing.assert_allclose(res.aggregate, expected, atol=1e-4)


def test_simulate_reports_nan_in_a_module():
    from secagg.simulation import simulate

    a = bn_model()
    with torch.no_grad():
        a[0].weight[0, 0] = float("nan")
    with pytest.raises(ParameterError, match="NaN"):
        simulate([a, bn_model(seed=1)], protocol="plaintext", seed=1)
