"""jaxmlp.interop: PyTorch modules and Flax linen variables computing the same function.

The PyTorch tests need PyTorch (``pip install jaxmlp[torch]``) and are skipped without it; the Flax
variable layout is checked without Flax, and against a real ``flax.linen`` module when Flax is
installed (the ``dev`` extra has it).

Outputs are compared as ``|jax - other| <= rtol (|other| + max |other|)``, rtol 1e-6 in float32
and 1e-12 in float64: relative to each entry and to the output's scale (an output near zero
after a cancellation keeps the absolute error of its larger terms). Gradients use gradcheck's
tolerance table.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp._core.gradcheck import TOLERANCES
from jaxmlp.interop import from_flax_params, from_torch, to_flax_params, to_torch
from jaxmlp.layers import Dense, FourierFeatures, Layer, Norm

SKIP_TORCH = "PyTorch not installed: pip install jaxmlp[torch]"
RTOL = {"float32": 1e-6, "float64": 1e-12}

# Every piece, on a (2, 8, 8, 3) network unless the kwargs say otherwise.
PIECES = {
    "plain": {},
    "layernorm": {"norm": "layernorm"},
    "dropout": {"dropout": 0.25},
    "residual": {"residual": True},
    "residual-norm-dropout": {"norm": "layernorm", "dropout": 0.1, "residual": True},
    "playground": {"features": "playground", "activation": "tanh"},
    "named-features": {"features": ("x2", "x1*x2", "sin(x1)", "x1^2"), "activation": "tanh"},
    # scale 1: with scale 10, 2 pi x B reaches ~100, where float32's rounding of the matmul
    # (summed in another order by PyTorch) alone moves sin by ~1e-5
    "fourier": {"features": FourierFeatures(n=6, scale=1.0, seed=3)},
    "siren": {"activation": "sin", "initializer": "siren"},
    "per-layer": {"activation": ("gelu", "elu")},
    "softmax": {"output_activation": "softmax", "norm": "layernorm"},
    "no-hidden": {"sizes": (2, 3), "output_activation": "sigmoid"},
    "widths-change": {"sizes": (2, 8, 5, 5, 3), "residual": True, "norm": "layernorm"},
}
for _name in jaxmlp.HIDDEN_ACTIVATIONS:
    PIECES[f"hidden-{_name}"] = {"activation": _name}
for _name in jaxmlp.OUTPUT_ACTIVATIONS:
    PIECES[f"output-{_name}"] = {"output_activation": _name}

DTYPES = ("float32", "float64")


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason=SKIP_TORCH)


def _model(name: str, dtype: str) -> jaxmlp.MLP:
    kw = dict(PIECES[name])
    sizes = kw.pop("sizes", (2, 8, 8, 3))
    return jaxmlp.MLP(sizes, param_dtype=dtype, **kw)


def _inputs(model: jaxmlp.MLP, seed: int = 0, n: int = 32) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, model.sizes[0]))
    return x.astype(model.param_dtype)


def _random_params(model: jaxmlp.MLP, key) -> tuple:
    """Initialised parameters with every block moved off its initial value (layer norms start
    at scale 1 and offset 0, biases at 0, which would hide a swapped or dropped block)."""
    params = model.init(key)
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(7)
    # NumPy, not jnp: an eager jnp op compiles once per shape
    leaves = [
        jnp.asarray(np.asarray(leaf, np.float64) + 0.3 * rng.normal(size=leaf.shape), leaf.dtype)
        for leaf in leaves
    ]
    return jax.tree.unflatten(tree, leaves)


def _apply(model, params, x):
    """``model.apply`` as one compiled program (eagerly, every op compiles on its own)."""
    return jax.jit(model.apply)(params, x)


def _assert_close(got, want, rtol: float) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    bound = rtol * (np.abs(want) + np.max(np.abs(want)))
    err = np.abs(got - want)
    assert np.all(err <= bound), f"max error {err.max():.3e}, bound {bound.min():.3e}"


def _assert_bits_equal(a, b) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(leaves_a, leaves_b, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(np.asarray(u).view(np.uint8), np.asarray(v).view(np.uint8))


def _torch_out(torch, module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------------------------------------
# to_torch computes the same function; from_torch gives back the same model and bits


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(PIECES))
def test_to_torch_computes_the_same_function_and_round_trips(torch, name, dtype):
    with jax.enable_x64(dtype == "float64"):
        model = _model(name, dtype)
        params = _random_params(model, jax.random.key(1))
        x = _inputs(model)
        module = to_torch(model, params)
        assert not module.training  # eval(): no dropout, like apply without a key
        assert {p.dtype for p in module.parameters()} == {getattr(torch, dtype)}
        got = _torch_out(torch, module, x)
        assert got.dtype == np.dtype(dtype)
        _assert_close(got, _apply(model, params, x), RTOL[dtype])

        back_model, back_params = from_torch(module)
        assert back_model == model
        _assert_bits_equal(back_params, params)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_round_trips_exactly(torch, dtype):
    model = jaxmlp.MLP((3, 5, 2), activation="tanh", norm="layernorm", param_dtype=dtype)
    params = _random_params(model, jax.random.key(2))
    module = to_torch(model, params)
    assert module[0].weight.dtype == getattr(torch, dtype)
    back_model, back_params = from_torch(module)
    assert back_model == model
    _assert_bits_equal(back_params, params)


def test_the_module_is_what_the_docs_say(torch):
    nn = torch.nn
    from jaxmlp.interop import torch_modules as tm

    model = jaxmlp.MLP(
        (2, 6, 6, 3),
        activation="gelu_tanh",
        norm="layernorm",
        dropout=0.2,
        residual=True,
        features="playground",
        output_activation="softmax",
    )
    params = _random_params(model, jax.random.key(3))
    module = to_torch(model, params)
    assert type(module) is nn.Sequential
    kinds = [type(m) for m in module]
    # the first hidden layer changes the width (7 features -> 6): no skip around it
    assert kinds == [
        tm.Features, nn.Linear, nn.LayerNorm, nn.GELU, nn.Dropout, tm.Residual, nn.Linear, nn.Softmax
    ]  # fmt: skip
    assert [type(m) for m in module[5]] == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Dropout]
    assert module[3].approximate == "tanh" and module[4].p == 0.2 and module[7].dim == -1
    assert module[2].eps == 1e-5 and tuple(module[2].normalized_shape) == (6,)
    # weight = w.T, bias = b; LayerNorm weight = scale, bias = offset
    assert np.array_equal(module[1].weight.detach().numpy(), np.asarray(params[0].w).T)
    assert np.array_equal(module[1].bias.detach().numpy(), np.asarray(params[0].b))
    assert np.array_equal(module[2].weight.detach().numpy(), np.asarray(params[1].scale))
    assert np.array_equal(module[2].bias.detach().numpy(), np.asarray(params[1].offset))
    assert module.jaxmlp_model is model
    # eval: the function of apply without a key; train: PyTorch's dropout masks act
    x = _inputs(model)
    _assert_close(_torch_out(torch, module, x), _apply(model, params, x), RTOL["float32"])
    torch.manual_seed(0)
    trained = _torch_out(torch, module.train(), x)
    assert not np.allclose(trained, _torch_out(torch, module.eval(), x))


def test_the_fourier_matrix_is_the_layers(torch):
    layer = FourierFeatures(n=4, scale=2.0, seed=5)
    model = jaxmlp.MLP((3, 4, 1), features=layer)
    module = to_torch(model, model.init(jax.random.key(4)))
    assert module[0].matrix.shape == (3, 4)
    assert np.array_equal(module[0].matrix.numpy(), np.asarray(layer.matrix(3, "float32")))
    assert not list(module[0].parameters())  # fixed: a buffer, not trained


def test_the_gelu_forms_and_softplus_are_told_apart(torch):
    """Exact GELU and its tanh form differ by ~1e-3 at z ~ 2: a swapped mapping fails here; the
    softplus module is jax's logaddexp(z, 0) in float64 even above torch.nn.Softplus's
    threshold of 20."""
    with jax.enable_x64(True):
        z = np.linspace(-30.0, 30.0, 241)[:, None]
        for act in ("gelu", "gelu_tanh", "softplus"):
            model = jaxmlp.MLP((1, 1, 1), activation=act, param_dtype="float64")
            params = (Dense(jnp.ones((1, 1)), jnp.zeros(1)), Dense(jnp.ones((1, 1)), jnp.zeros(1)))
            got = _torch_out(torch, to_torch(model, params), z)
            _assert_close(got, model.apply(params, z), RTOL["float64"])
        exact = to_torch(jaxmlp.MLP((1, 1, 1), activation="gelu", param_dtype="float64"), params)
        tanh_form = to_torch(
            jaxmlp.MLP((1, 1, 1), activation="gelu_tanh", param_dtype="float64"), params
        )
        assert np.max(np.abs(_torch_out(torch, exact, z) - _torch_out(torch, tanh_form, z))) > 1e-4


# ---------------------------------------------------------------------------------------------
# from_torch of modules written by hand


def test_from_torch_reads_a_hand_written_sequential(torch):
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(3, 8), nn.LayerNorm(8), nn.SiLU(), nn.Dropout(0.1),
        nn.Linear(8, 8), nn.LayerNorm(8), nn.SiLU(), nn.Dropout(0.1),
        nn.Linear(8, 2), nn.Sigmoid(),
    ).eval()  # fmt: skip
    model, params = from_torch(module)
    assert model == jaxmlp.MLP(
        (3, 8, 8, 2), activation="silu", output_activation="sigmoid", norm="layernorm", dropout=0.1
    )
    x = _inputs(model)
    _assert_close(_apply(model, params, x), _torch_out(torch, module, x), RTOL["float32"])
    # and back: the same modules, the same numbers
    again = to_torch(model, params)
    for a, b in zip(module.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_from_torch_accepts_torch_softplus_and_missing_activations(torch):
    nn = torch.nn
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 4), nn.Linear(4, 1))
    model, params = from_torch(module)
    assert model.activations == ("softplus", "identity", "identity")
    x = _inputs(model)
    _assert_close(_apply(model, params, x), _torch_out(torch, module, x), RTOL["float32"])


def test_from_torch_residual_blocks_by_hand(torch):
    nn = torch.nn
    from jaxmlp.interop.torch_modules import Residual

    torch.manual_seed(2)
    module = nn.Sequential(
        nn.Linear(2, 6), nn.Tanh(),
        Residual(nn.Linear(6, 6), nn.Tanh()),
        Residual(nn.Linear(6, 6), nn.Tanh()),
        nn.Linear(6, 1),
    )  # fmt: skip
    model, params = from_torch(module)
    assert model == jaxmlp.MLP((2, 6, 6, 6, 1), activation="tanh", residual=True)
    x = _inputs(model)
    _assert_close(_apply(model, params, x), _torch_out(torch, module, x), RTOL["float32"])


def test_a_changed_module_is_read_from_its_modules_not_the_kept_description(torch):
    model = jaxmlp.MLP((2, 4, 1), activation="relu", initializer="glorot_uniform")
    params = _random_params(model, jax.random.key(5))
    module = to_torch(model, params)
    assert from_torch(module)[0] == model  # the kept description, initializer included
    module[1] = torch.nn.Tanh()
    back, _ = from_torch(module)
    assert back.activation == "tanh" and back.initializer == "auto"


# ---------------------------------------------------------------------------------------------
# Gradients: to_torch(model, grads) against PyTorch autograd


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name", ["plain", "residual-norm-dropout", "playground", "fourier", "siren", "softmax"]
)
def test_gradients_match_torch_autograd_entry_by_entry(torch, name, dtype):
    with jax.enable_x64(dtype == "float64"):
        model = _model(name, dtype)
        params = _random_params(model, jax.random.key(6))
        x = _inputs(model, seed=1)
        y = np.random.default_rng(2).normal(size=(x.shape[0], model.sizes[-1])).astype(dtype)
        _, grads = jaxmlp.value_and_grad(model, "mse", method="manual")(params, x, y)

        module = to_torch(model, params)
        out = module(torch.from_numpy(x))
        torch.mean((out - torch.from_numpy(y)) ** 2).backward()  # jaxmlp's "mse"
        as_module = to_torch(model, grads)

        rtol, atol = TOLERANCES[dtype]
        ref = [p.grad.numpy() for p in module.parameters()]
        scale = max(np.max(np.abs(r)) for r in ref)
        pairs = list(zip(as_module.parameters(), ref, strict=True))
        assert len(pairs) == len(jax.tree.leaves(params))
        for mine, theirs in pairs:
            err = np.abs(mine.detach().numpy() - theirs)
            assert np.all(err <= atol * scale + rtol * np.abs(theirs)), err.max()


@pytest.mark.slow
def test_gradcheck_against_torch_adds_a_column(torch):
    model = jaxmlp.MLP(
        (3, 6, 6, 3), activation="tanh", norm="layernorm", residual=True,
        output_activation="softmax",
    )  # fmt: skip
    params = _random_params(model, jax.random.key(7))
    x = _inputs(model)
    y = np.arange(x.shape[0]) % 3
    loss = "softmax_cross_entropy"
    report = jaxmlp.gradcheck(model, params, x, y, loss, l2=0.1, l1=0.01, against="torch")
    assert report.ok
    assert all(r.torch is not None and r.torch.ok for r in report.rows)
    assert all(r.torch.max_rel < 1e-13 for r in report.rows)
    assert "vs torch" in str(report)
    without = jaxmlp.gradcheck(model, params, x, y, loss, l2=0.1, l1=0.01)
    assert "vs torch" not in str(without) and all(r.torch is None for r in without.rows)

    # a planted bug in the manual gradient: PyTorch autograd sees it too
    manual = jaxmlp.value_and_grad(model, loss, l2=0.1, l1=0.01)

    def broken(*args, **kw):
        value, g = manual(*args, **kw)
        return value, (g[0]._replace(b=g[0].b * 1.001), *g[1:])

    bad = jaxmlp.gradcheck(
        model, params, x, y, loss, l2=0.1, l1=0.01, against="torch", grad_fn=broken
    )
    assert not bad.ok
    assert [r.torch.ok for r in bad.rows] == [r.name != "b" or r.layer != 1 for r in bad.rows]


def test_gradcheck_against_refuses_what_it_cannot_check(torch, monkeypatch):
    model = jaxmlp.MLP((2, 4, 1), dropout=0.5)
    params = model.init(jax.random.key(8))
    x, y = _inputs(model), np.zeros((32, 1), np.float32)
    with pytest.raises(ValueError, match="against: expected None or one of"):
        jaxmlp.gradcheck(model, params, x, y, "mse", against="pytorch")
    with pytest.raises(ValueError, match="inference mode only"):
        jaxmlp.gradcheck(model, params, x, y, "mse", against="torch", train_key=jax.random.key(9))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    with pytest.raises(ImportError, match=r"pip install jaxmlp\[torch\]"):
        jaxmlp.gradcheck(model, params, x, y, "mse", against="torch")


# ---------------------------------------------------------------------------------------------
# Errors


def test_without_torch_the_error_names_the_extra(monkeypatch):
    model = jaxmlp.MLP((2, 3, 1))
    params = model.init(jax.random.key(10))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"to_torch: PyTorch is not installed: pip install jaxmlp\[torch\]"):  # fmt: skip
        to_torch(model, params)
    with pytest.raises(ImportError, match=r"from_torch: .*pip install jaxmlp\[torch\]"):
        from_torch(object())


def test_import_jaxmlp_interop_imports_neither_torch_nor_flax():
    code = "import sys, jaxmlp.interop; print(sorted({'torch', 'flax'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda nn: [nn.Linear(2, 3), nn.Conv1d(1, 1, 1)], r"module\[1\]: torch.nn.modules.conv.Conv1d has no jaxmlp counterpart"),
        (lambda nn: [nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)], r"module\[1\]: .*BatchNorm1d has no jaxmlp"),
        (lambda nn: [nn.Linear(2, 3), nn.LeakyReLU(0.2), nn.Linear(3, 1)], r"module\[1\]: LeakyReLU\(negative_slope=0.2\)"),
        (lambda nn: [nn.Linear(2, 3), nn.ReLU(), nn.Linear(4, 1)], r"module\[2\]: Linear\(4, 1\) reads 4 features, the module before it gives 3"),
        (lambda nn: [nn.Linear(2, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)], r"module\[3\]: jaxmlp puts a LayerNorm after every hidden Linear or after none"),
        (lambda nn: [nn.Linear(2, 3), nn.LayerNorm(3, eps=1e-6), nn.ReLU(), nn.Linear(3, 1)], r"LayerNorm\(eps=1e-06\)"),
        (lambda nn: [nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3, 3), nn.ReLU(), nn.Dropout(0.2), nn.Linear(3, 1)], r"one dropout rate to every hidden layer, got \[0.1, 0.2\]"),
        (lambda nn: [nn.Dropout(0.1), nn.Linear(2, 1)], r"module\[0\]: a Dropout must follow a hidden layer's activation"),
        (lambda nn: [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.ReLU()], r"module\[3\]: the output activation 'relu' is not one of jaxmlp's output activations"),
        (lambda nn: [nn.Linear(2, 3), nn.ReLU(), nn.ReLU(), nn.Linear(3, 1)], r"module\[2\]: the activation ReLU must follow a Linear"),
        (lambda nn: [nn.Linear(2, 3), nn.Softmax(dim=-1), nn.Linear(3, 1)], r"module\[1\]: softmax is an output activation only"),
        (lambda nn: [nn.ReLU()], r"module\[0\]: the activation ReLU must follow a Linear"),
        (lambda nn: [], r"module: holds no torch.nn.Linear"),
    ],
    ids=[
        "conv", "batchnorm", "leaky-slope", "widths", "norm-on-some", "norm-eps", "dropout-rates",
        "dropout-first", "output-relu", "two-activations", "hidden-softmax", "no-linear", "empty",
    ],
)  # fmt: skip
def test_from_torch_names_what_it_cannot_read(torch, build, match):
    with pytest.raises(ValueError, match=match):
        from_torch(torch.nn.Sequential(*build(torch.nn)))


def test_from_torch_residual_errors(torch):
    nn = torch.nn
    from jaxmlp.interop.torch_modules import Residual

    with pytest.raises(ValueError, match=r"module\[0\]\[0\]: a Residual around Linear\(2, 3\) changes the width"):  # fmt: skip
        from_torch(nn.Sequential(Residual(nn.Linear(2, 3), nn.ReLU()), nn.Linear(3, 1)))
    with pytest.raises(
        ValueError, match=r"module\[1\]: jaxmlp's residual=True adds a skip to every"
    ):
        from_torch(
            nn.Sequential(
                Residual(nn.Linear(3, 3), nn.ReLU()), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)
            )
        )
    with pytest.raises(ValueError, match=r"module\[0\]: a Residual must hold exactly one Linear"):
        from_torch(nn.Sequential(Residual(nn.Linear(3, 3), nn.Linear(3, 3)), nn.Linear(3, 1)))


def test_from_torch_type_errors(torch):
    with pytest.raises(TypeError, match=r"module: expected a torch\.nn\.Module, got int"):
        from_torch(3)
    with pytest.raises(TypeError, match=r"module: expected a torch.nn.Sequential, got torch.nn.modules.linear.Linear"):  # fmt: skip
        from_torch(torch.nn.Linear(2, 1))


def test_from_torch_float64_without_x64_says_so(torch):
    module = torch.nn.Sequential(torch.nn.Linear(2, 1)).double()
    with pytest.raises(ValueError, match="param_dtype: 'float64' needs JAX's 64-bit mode"):
        from_torch(module)


def test_from_torch_refuses_a_fourier_matrix_that_is_not_its_seeds(torch):
    model = jaxmlp.MLP((2, 4, 1), features=FourierFeatures(n=3, scale=1.0, seed=0))
    module = to_torch(model, model.init(jax.random.key(11)))
    with torch.no_grad():
        module[0].matrix += 1
    with pytest.raises(
        ValueError, match="FourierFeatures matrix is not 2 pi B drawn from its seed 0"
    ):
        from_torch(module)


@dataclasses.dataclass(frozen=True)
class _Scale(Layer):
    """A width-keeping layer of the user's with a parameter: no PyTorch or Flax counterpart."""

    name = "scale"

    def init(self, key, n_in, dtype):
        return jnp.ones((n_in,), dtype)

    def forward(self, params, a, key):
        return a * params, None

    def backward(self, params, a, out, saved, d_out, need_din):
        return jnp.sum(d_out * a, axis=0), d_out * params


def test_to_torch_names_what_it_cannot_convert(torch):
    model = jaxmlp.MLP((2, 3, 1), norm=_Scale())
    params = model.init(jax.random.key(12))
    with pytest.raises(ValueError, match=r"model.layers\[1\]: the layer _Scale \(scale\) has no PyTorch counterpart"):  # fmt: skip
        to_torch(model, params)
    mixed = jaxmlp.MLP((2, 3, 1), compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="model: compute_dtype='bfloat16'"):
        to_torch(mixed, mixed.init(jax.random.key(13)))
    with pytest.raises(TypeError, match=r"model: expected a jaxmlp\.MLP"):
        to_torch("mlp", params)
    plain = jaxmlp.MLP((2, 3, 1))
    with pytest.raises(ValueError, match=r"params: got 1 layers, expected 2"):
        to_torch(plain, plain.init(jax.random.key(14))[:1])


def test_to_torch_names_a_registered_activation(torch):
    name = "interop_test_cube"
    jaxmlp.register_activation(name, _cube, _cube_deriv)
    model = jaxmlp.MLP((2, 3, 1), activation=name)
    with pytest.raises(ValueError, match=r"model.layers\[1\]: the activation 'interop_test_cube' has no PyTorch counterpart"):  # fmt: skip
        to_torch(model, model.init(jax.random.key(15)))


def _cube(z):
    return z**3


def _cube_deriv(z, a):
    return 3 * z**2


# ---------------------------------------------------------------------------------------------
# Flax linen variables


def test_flax_layout_names_and_round_trip():
    model = jaxmlp.MLP((2, 5, 5, 3), norm="layernorm", residual=True, dropout=0.1)
    params = _random_params(model, jax.random.key(16))
    variables = to_flax_params(model, params)
    tree = variables["params"]
    assert set(variables) == {"params"}
    assert sorted(tree) == ["Dense_0", "Dense_1", "Dense_2", "LayerNorm_0", "LayerNorm_1"]
    assert tree["Dense_0"]["kernel"] is params[0].w and tree["Dense_0"]["bias"] is params[0].b
    assert tree["LayerNorm_0"]["scale"] is params[1].scale
    assert tree["LayerNorm_0"]["bias"] is params[1].offset
    assert (
        tree["Dense_1"]["kernel"] is params[2].w and tree["LayerNorm_1"]["bias"] is params[3].offset
    )
    assert tree["Dense_2"]["kernel"].shape == (5, 3)
    back = from_flax_params(model, variables)
    assert isinstance(back[0], Dense) and isinstance(back[1], Norm)
    _assert_bits_equal(back, params)


def test_flax_errors_name_the_key():
    model = jaxmlp.MLP((2, 4, 1))
    variables = to_flax_params(model, model.init(jax.random.key(17)))
    tree = variables["params"]
    with pytest.raises(TypeError, match="variables: expected a dict, got list"):
        from_flax_params(model, [])
    with pytest.raises(ValueError, match=r"variables: expected \{'params': \.\.\.\}"):
        from_flax_params(model, tree)
    with pytest.raises(ValueError, match=r"missing \['Dense_1'\], unexpected \['Dense_7'\]"):
        from_flax_params(
            model, {"params": {"Dense_0": tree["Dense_0"], "Dense_7": tree["Dense_1"]}}
        )
    with pytest.raises(ValueError, match=r"variables\['params'\]\['Dense_1'\]: expected the keys \['kernel', 'bias'\]"):  # fmt: skip
        from_flax_params(model, {"params": {**tree, "Dense_1": {"kernel": tree["Dense_1"]["kernel"]}}})  # fmt: skip
    swapped = {**tree["Dense_0"], "kernel": tree["Dense_0"]["kernel"].T}
    with pytest.raises(ValueError, match=r"variables\['params'\]\['Dense_0'\]\['kernel'\]: shape \(4, 2\), expected \(2, 4\)"):  # fmt: skip
        from_flax_params(model, {"params": {**tree, "Dense_0": swapped}})
    with pytest.raises(
        ValueError, match=r"model.layers\[1\]: the layer _Scale \(scale\) has no Flax"
    ):
        to_flax_params(jaxmlp.MLP((2, 3, 1), norm=_Scale()), None)


def _flax_module(model: jaxmlp.MLP):
    """A flax.linen module walking the model's stack, as the docs' page shows it."""
    import flax.linen as nn

    from jaxmlp.layers import ActivationLayer, Affine, LayerNorm, SkipBegin, SkipEnd

    class FlaxMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            kept = []
            for layer in model.layers:
                if isinstance(layer, Affine):
                    x = nn.Dense(layer.n_out, param_dtype=model.param_dtype)(x)
                elif isinstance(layer, LayerNorm):
                    x = nn.LayerNorm(
                        epsilon=layer.eps, use_fast_variance=False, param_dtype=model.param_dtype
                    )(x)
                elif isinstance(layer, SkipBegin):
                    kept.append(x)
                elif isinstance(layer, SkipEnd):
                    x = kept.pop() + x
                elif isinstance(layer, ActivationLayer):
                    x = layer.fn.fn(x)
                else:  # feature maps, dropout at inference: jaxmlp's own forward
                    x = layer.forward(None, x, None)[0]
            return x

    return FlaxMLP()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name", ["plain", "residual-norm-dropout", "playground", "fourier", "softmax"]
)
def test_a_flax_linen_module_computes_the_same_function(name, dtype):
    pytest.importorskip("flax", reason="Flax not installed: pip install flax")
    with jax.enable_x64(dtype == "float64"):
        model = _model(name, dtype)
        params = _random_params(model, jax.random.key(18))
        x = jnp.asarray(_inputs(model))
        flax_model = _flax_module(model)
        # flax's own init names the modules as to_flax_params does
        fresh = flax_model.init(jax.random.key(19), x)
        shapes = jax.tree.map(lambda a: (a.shape, a.dtype), from_flax_params(model, fresh))
        assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), params)
        got = flax_model.apply(to_flax_params(model, params), x)
        _assert_close(got, _apply(model, params, x), RTOL[dtype])
