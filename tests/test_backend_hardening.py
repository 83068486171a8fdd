"""The backends against what a spec or a machine can throw at them: spec names equal to
the compiler's own, a runtime learning-rate factor, batches larger than the data, a
damaged code cache, non-finite numbers, and runs that cannot fit in memory."""
from __future__ import annotations

import ast
import os
import sys

import numpy as np
import pytest

from modelc.compiler.build import build_program
from modelc.compiler.codegen import cache, get_backend
from modelc.compiler.codegen.cuda_plan import SIM_CONFIG, lit
from modelc.compiler.codegen.cuda_planner import plans_for
from modelc.errors import ModelcError
from modelc.grammar.parser import parse
from modelc.runtime import memory
from tests.cuda_cases import SPECS
from tests.target_agreement import assert_close, compare, initial_state, run, sample_data

CLASH = SPECS["clash"]


def _program(text):
    return build_program(parse(text, "test.model"))


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_spec_names_equal_to_internal_ones_train(target):
    """Input 'step', target 'lr', layers named after the generated code's own names: trains
    (the dropout reads the update counter) and the cpu target agrees with numpy."""
    report = compare(CLASH, target, steps=3)
    assert np.isfinite(report["train_sums"][1]) and report["train_sums"][1] > 0
    assert_close(report)


def test_the_update_counter_is_found_by_its_role_not_its_name():
    """Named anything (here as an internal name no spec can write), the counter still reaches
    the updates and the dropout, on every target."""
    program = _program(CLASH)
    counter = next(v for v in program.train.inputs if v.role == "scalar")
    counter.name = "#step"
    x, y = sample_data(program, 29)
    ref = run("numpy", program, x, y, 3, 8)
    got = run("cpu", program, x, y, 3, 8)
    for name, array in ref["params"].items():
        np.testing.assert_allclose(got["params"][name], array, rtol=2e-5, atol=2e-6)


def test_cuda_kernels_never_let_a_spec_name_shadow_a_local():
    """Every cuda kernel parameter that stands for a spec value carries a prefix no local of
    the generated code has, so a spec name cannot shadow one (checked on the source)."""
    for plan in plans_for(_program(CLASH), SIM_CONFIG).values():
        for kernel in plan.kernels:
            tree = ast.parse(kernel.source)
            params = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
            stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            assert not params & stored, (kernel.name, params & stored)
            assert len(params) == len(kernel.params)


# ---------------------------------------------------------------- the learning-rate factor

def _sgd(lr):
    return f"""
model lrs
input  x: f32[3]
target t: f32[2]
network {{
    x -> dense(4, tanh) -> dense(2) => out
}}
loss      mean_squared_error(t, out)
optimizer sgd(lr={lr}, momentum=0.5)
"""


def _train(target, program, steps=4, batch=8, lr_scale=None, n=32):
    x, y = sample_data(_program(_sgd(0.1)), n)
    backend = get_backend(target, program)
    backend.load_state(*initial_state(program))
    order = np.random.default_rng(2).permutation(n)
    args = () if lr_scale is None else (lr_scale,)
    sums = backend.train(backend.upload(x, y), order, batch, 0, steps, 0, *args)
    return sums, backend.read_state()[0], backend


def test_lr_scale_halves_the_rate_bit_for_bit_on_numpy():
    sums, halved, _ = _train("numpy", _program(_sgd(0.1)), lr_scale=0.5)
    ref_sums, ref, _ = _train("numpy", _program(_sgd(0.05)))
    np.testing.assert_array_equal(sums, ref_sums)
    for name in ref:
        np.testing.assert_array_equal(halved[name], ref[name])
    # and a factor of 1 is today's update, exactly
    _, one, _ = _train("numpy", _program(_sgd(0.1)), lr_scale=1.0)
    _, plain, _ = _train("numpy", _program(_sgd(0.1)))
    assert all(np.array_equal(one[k], plain[k]) for k in plain)
    assert not all(np.array_equal(halved[k], plain[k]) for k in plain)


def test_lr_scale_on_cpu_matches_numpy_and_compiles_nothing_new():
    program = _program(_sgd(0.1))
    _, want, _ = _train("numpy", _program(_sgd(0.05)))
    _, got, backend = _train("cpu", program, lr_scale=0.5)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6)
    tables = dict(backend.tables)
    backend.train(backend.upload(*sample_data(program, 32)), np.arange(32), 8, 0, 2, 4, 0.25)
    assert backend.tables == tables       # a new factor is an argument, not new code
    _, one, _ = _train("cpu", program, lr_scale=1.0)
    _, plain, _ = _train("cpu", program)
    assert all(np.array_equal(one[k], plain[k]) for k in plain)


# ---------------------------------------------------------------- buffers by the data's size

@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_a_huge_batch_on_tiny_data_is_one_batch_of_the_data(target):
    program = _program(_sgd(0.1))
    huge_sums, huge, backend = _train(target, program, steps=1, batch=10 ** 8, n=64)
    sums, ref, _ = _train(target, program, steps=1, batch=64, n=64)
    np.testing.assert_array_equal(huge_sums, sums)
    assert all(np.array_equal(huge[k], ref[k]) for k in ref)
    x, y = sample_data(program, 64)
    data = backend.upload(x, y)
    np.testing.assert_array_equal(backend.evaluate(data, 10 ** 8), backend.evaluate(data, 64))
    np.testing.assert_array_equal(backend.predict(backend.upload(x), 10 ** 8), backend.predict(backend.upload(x), 64))
    if target == "cpu":
        assert max(len(backend.A), len(backend.L)) < 10 ** 6
        assert {batch for _, batch in backend.tables} == {64}


# ---------------------------------------------------------------- a cache that heals itself

SOURCE = '''
from numba import njit


@njit("float64(float64)", cache=True)
def twice(x):
    return 2.0 * x
'''


def _load(name):
    return cache.load("cpu", name, lambda: SOURCE, lambda module: module.twice(21.0))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cpu"


def _forget(name):
    sys.modules.pop(name, None)      # as a new process would


def _numba_files(folder, suffix):
    return sorted((folder / "__pycache__").glob(f"*{suffix}"))


@pytest.mark.parametrize("damage", ["invalid bytes", "a folder", "truncated index", "truncated data"])
def test_a_damaged_cache_entry_is_reported_removed_and_rebuilt(cache_dir, capsys, damage):
    name = f"modelc_test_heal_{damage.replace(' ', '_')}"
    assert _load(name) == 42.0
    _forget(name)
    module = cache_dir / f"{name}.py"
    assert _numba_files(cache_dir, ".nbi") and _numba_files(cache_dir, ".nbc")
    if damage == "invalid bytes":
        module.write_bytes(b"\xff\xfe\x00 not python \x80\x81")
    elif damage == "a folder":
        for item in cache.entry_files(module):
            item.unlink()
        module.mkdir()
    else:
        victim = _numba_files(cache_dir, ".nbi" if damage == "truncated index" else ".nbc")[0]
        victim.write_bytes(victim.read_bytes()[:7])
    capsys.readouterr()
    assert _load(name) == 42.0
    err = capsys.readouterr().err
    assert err.count("modelc: the compiled code cache entry") == 1, err
    assert f"{name}.py was damaged (" in err and "rebuilding it" in err
    _forget(name)
    assert _load(name) == 42.0 and capsys.readouterr().err == ""      # healed for good


def test_an_unwritable_cache_folder_compiles_in_a_temporary_one(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("MODELC_CACHE_DIR", str(blocker))
    monkeypatch.setattr(cache, "_TEMPORARY", {})
    assert _load("modelc_test_unwritable") == 42.0
    err = capsys.readouterr().err
    assert "the compiled code cache folder cannot be written" in err and "for this run only" in err
    assert cache.folder("cpu") != blocker / "cpu" and cache.folder("cpu").is_dir()


# ---------------------------------------------------------------- numbers in generated code

@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_generated_code_refuses_non_finite_numbers(bad):
    with pytest.raises(AssertionError, match="non-finite"):
        lit(bad)
    assert lit(0.25) == "f32(0.25)"


# ---------------------------------------------------------------- the memory check

def test_a_batch_that_cannot_fit_is_refused_with_the_batch_that_does():
    program = _program(_sgd(0.1))
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    huge = 10 ** 12
    assert memory.needed_bytes(program, huge, "cpu") > physical
    with pytest.raises(ModelcError) as caught:
        memory.check_fits(program, huge, "cpu", "training")
    message, hint = caught.value.message, caught.value.hint
    assert "training 'lrs' with batches of 1000000000000 needs about" in message and "GiB" in message
    fits = int(hint.rsplit("at most ", 1)[1].split()[0])
    memory.check_fits(program, fits, "cpu", "training")
    assert memory.needed_bytes(program, fits + 1, "cpu") > physical
    memory.check_fits(program, 64, "numpy", "prediction")


def test_the_estimate_counts_weights_state_and_every_sample():
    program = _program(_sgd(0.1))
    weights = 4 * sum(int(np.prod(p.value.shape)) for p in program.params)
    state = 4 * sum(int(np.prod(s.shape)) for s in program.state)
    one, two = memory.needed_bytes(program, 1, "cpu"), memory.needed_bytes(program, 2, "cpu")
    per_sample = two - one
    assert one - per_sample >= weights + state
    assert per_sample >= 4 * (3 + 2 + 4 + 4 + 2)    # input, target, the layers' outputs at least
    assert memory.needed_bytes(program, 1000, "cpu") == one + 999 * per_sample
