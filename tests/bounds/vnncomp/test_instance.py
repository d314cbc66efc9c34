"""verify_instance, the VNN-COMP result files, and the suite runner (with fake models and verifiers)."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from opwise.bounds import BoundedModel, vnncomp
from opwise.bounds.function_bounds import FunctionBounds
from opwise.bounds.vnncomp import InstanceResult, instance, read_result, run_suite, verify_instance, write_result
from opwise.cli.vnncomp import main_verify
from opwise.errors import OpwiseError, SpecError

from tests.bounds.strategies.bab_reference import interval_bound_fn, milp_min_margin, random_mlp


def acas_loader(path: str):
    """A Loader for the ACAS Xu ONNX files (Sub, Flatten, MatMul, Add, Relu) read with the onnx package."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    weights = {t.name: torch.tensor(numpy_helper.to_array(t)) for t in onnx.load(path).graph.initializer}
    mean = next(v for k, v in weights.items() if k.endswith("AvgImg")).reshape(-1)
    layers: list[torch.nn.Module] = []
    names = sorted((k for k in weights if k.endswith("MatMul_W")), key=lambda k: int(k.split("_")[1]))
    for i, name in enumerate(names):
        linear = torch.nn.Linear(*weights[name].shape)
        with torch.no_grad():
            linear.weight.copy_(weights[name].T)
            linear.bias.copy_(weights[name.replace("MatMul_W", "Add_B")])
            if i == 0:
                linear.bias.sub_(mean @ weights[name])
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    return FunctionBounds(lambda x: model(x.reshape(len(x), -1)), interval_bound_fn(model)), (1, 1, 1, 5)


def tiny_loader(model, shape=(1, 2)):
    """A Loader for a float64 test MLP, seen in float32 like an ONNX network."""
    bounds = interval_bound_fn(model)
    function = lambda x: model(x.double()).float()  # noqa: E731
    return lambda path: (FunctionBounds(function, lambda lo, up, C: bounds(lo.double(), up.double(), C.double()).float()), shape)


def vnnlib_text(lower, upper, rows, d, outputs) -> str:
    """A VNN-LIB file for one box and one conjunction of output rows (C y <= d)."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(len(lower)))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(outputs))
    text += "".join(f"(assert (>= X_{i} {lo!r}))\n(assert (<= X_{i} {hi!r}))\n" for i, (lo, hi) in enumerate(zip(lower, upper)))
    for row, bound in zip(rows, d):
        terms = " ".join(f"(* {c!r} Y_{j})" for j, c in enumerate(row))
        text += f"(assert (<= (+ {terms}) {bound!r}))\n"
    return text


def test_acas_counterexample_is_found_checked_and_written(benchmarks_dir, tmp_path):
    suite = benchmarks_dir / "acasxu"
    onnx_path, vnnlib_path = suite / "onnx/ACASXU_run2a_2_1_batch_2000.onnx", suite / "vnnlib/prop_2.vnnlib"
    result = verify_instance(onnx_path, vnnlib_path, 30, load=acas_loader)
    assert result.status == "sat"
    write_result(tmp_path / "out.txt", result)
    status, x, y = read_result(tmp_path / "out.txt")
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(onnx_path))
    (reference,) = session.run(None, {"input": np.array(x, dtype=np.float32).reshape(1, 1, 1, 5)})
    assert status == "sat" and np.allclose(reference.reshape(-1), y, atol=1e-4)
    assert reference[0, 0] >= reference[0, 1:].max()  # prop_2's violation: COC is maximal
    assert_competition_checker_accepts(tmp_path / "out.txt", onnx_path, vnnlib_path)


def competition_counterexample(text: str) -> tuple[str, list[float], list[float]]:
    """The result file read by the rules of VNN-COMP's counterexample checker (written here from its
    documented behaviour, independently of read_result): the first line is the word; the rest, newlines
    turned to spaces, is one parenthesised list of `(X_i value)` then `(Y_j value)` pairs, indices in order."""
    word, _, rest = text.partition("\n")
    content = rest.replace("\n", " ").strip()
    assert content[0] == "(" and content[-1] == ")", content[:40]
    xs: list[float] = []
    ys: list[float] = []
    for part in content[1:-1].split(")"):
        part = " ".join(part.split())
        if not part:
            continue
        assert part[0] == "(", part
        name, number = part[1:].split(" ")
        values = xs if name.startswith("X_") else ys
        assert name[:2] in ("X_", "Y_") and int(name[2:]) == len(values), name
        values.append(float(number))
    return word, xs, ys


def assert_competition_checker_accepts(result_path, onnx_path, vnnlib_path) -> None:
    """What the competition's scoring demands of a `sat`: x strictly inside an input box (no tolerance) and
    the network's float32 output, replayed by onnxruntime, strictly inside that box's unsafe set."""
    onnxruntime = pytest.importorskip("onnxruntime")
    word, xs, _ = competition_counterexample(Path(result_path).read_text())
    assert word == "sat"
    session = onnxruntime.InferenceSession(str(onnx_path))
    feed = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in feed.shape]
    dtype = np.float64 if feed.type == "tensor(double)" else np.float32  # a DOUBLE network reads float64
    (output,) = session.run(None, {feed.name: np.array(xs, dtype=dtype).reshape(shape)})
    y = torch.tensor(output.reshape(-1), dtype=torch.float64)
    x = torch.tensor(xs, dtype=torch.float64)
    accepted = False
    for spec in vnncomp.parse_vnnlib(vnnlib_path, dtype=torch.float64):
        if bool(((x >= spec.x_lower.reshape(-1)) & (x <= spec.x_upper.reshape(-1))).all()):
            accepted |= any(bool((d.C @ y <= d.d).all()) for d in spec.unsafe)
    assert accepted, "the counterexample would be rejected by the competition's checker"


@pytest.mark.parametrize("seed", range(6))
def test_tiny_instances_agree_with_milp(tmp_path, seed):
    model = random_mlp(seed, (2, 6, 6, 2))
    lower, upper = [-1.0, -0.5], [0.5, 1.0]
    rows = [[1.0, -1.0]]
    samples = torch.tensor(lower) + torch.rand(200, 2, dtype=torch.float64) * (torch.tensor(upper) - torch.tensor(lower))
    values = model(samples).detach() @ torch.tensor(rows, dtype=torch.float64).T
    d = [float(values.median())]
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text(lower, upper, rows, d, 2))
    [spec] = vnncomp.parse_vnnlib(path, dtype=torch.float64)
    exact = milp_min_margin(model, spec)
    if abs(exact) < 1e-4:
        pytest.skip("a near-tie, where float32 and float64 may disagree")
    result = verify_instance("tiny.onnx", path, 30, load=tiny_loader(model))
    assert result.status == ("unsat" if exact > 0 else "sat"), (exact, result)


def test_sat_in_the_second_input_box_only(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 1).double())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        model[0].bias.zero_()
    text = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n" \
        "(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))\n" \
        "            (and (>= X_0 -2) (<= X_0 -1) (>= X_1 0) (<= X_1 1))))\n(assert (<= Y_0 -1.5))\n"
    path = tmp_path / "p.vnnlib"
    path.write_text(text)
    result = verify_instance("m.onnx", path, 10, load=tiny_loader(model))
    assert result.status == "sat" and float(result.x[0]) <= -1.5 and float(result.y[0]) <= -1.5


def test_property_and_model_sizes_must_match(tmp_path):
    model = random_mlp(0, (2, 4, 3))
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0, 0.0]], [0.0], 2))
    with pytest.raises(SpecError, match="2 outputs Y_i but the model has 3"):
        verify_instance("m.onnx", path, 5, load=tiny_loader(model))
    with pytest.raises(SpecError, match="declares 2 inputs"):
        verify_instance("m.onnx", path, 5, load=tiny_loader(model, (1, 3)))


def test_result_files_for_every_status(tmp_path):
    for status in ("unsat", "timeout", "unknown"):
        write_result(tmp_path / status, InstanceResult(status, 1.0))
        assert (tmp_path / status).read_text() == f"{status}\n"
        assert read_result(tmp_path / status) == (status, None, None)
    write_result(tmp_path / "sat", InstanceResult("sat", 1.0, torch.tensor([0.1, 0.2]), torch.tensor([1.5, -3e-9])))
    assert (tmp_path / "sat").read_text() == "sat\n((X_0 0.10000000149011612)\n (X_1 0.20000000298023224)\n" \
        f" (Y_0 1.5)\n (Y_1 {float(np.float32(-3e-9))!r}))\n"  # float32 values, printed exactly
    assert read_result(tmp_path / "sat")[1] == [0.10000000149011612, 0.20000000298023224]
    with pytest.raises(OpwiseError):
        write_result(tmp_path / "bad", InstanceResult("sat", 1.0))


def test_main_verify_writes_the_result_file(tmp_path, monkeypatch, capsys):
    model = random_mlp(1, (2, 4, 2))
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[0.0, 0.0]], [1.0], 2))  # 0 <= 1: always violated
    monkeypatch.setattr(instance, "load_with_engine", tiny_loader(model))
    args = argparse.Namespace(model="m.onnx", vnnlib=str(path), timeout=5.0, out=str(tmp_path / "result.txt"))
    assert main_verify(args) == 0
    assert read_result(tmp_path / "result.txt")[0] == "sat" and capsys.readouterr().out.startswith("sat")
    with pytest.raises(OpwiseError, match="timeout"):
        main_verify(argparse.Namespace(model="m.onnx", vnnlib=str(path), timeout=-1.0, out=None))


def fake_verify(onnx: str, vnnlib: str, timeout: float) -> InstanceResult:
    """A verifier whose answer is in the ONNX file name: unsat, sat, hang (ignores its timeout), or error."""
    kind = Path(onnx).stem
    if kind == "hang":
        time.sleep(600)
    if kind == "error":
        raise SpecError(vnnlib, 3, "broken on purpose")
    if kind == "sat":
        return InstanceResult("sat", 0.01, torch.tensor([0.5]), torch.tensor([1.0]))
    return InstanceResult(kind, 0.01)


def write_instances(folder: Path) -> Path:
    path = folder / "instances.csv"
    path.write_text("onnx/unsat.onnx,vnnlib/p.vnnlib,100\nonnx/hang.onnx,vnnlib/p.vnnlib,100\n"
                    "onnx/sat.onnx,vnnlib/q.vnnlib,100\nonnx/error.onnx,vnnlib/p.vnnlib,100\n")
    return path


def test_suite_runner_kills_hung_workers_and_writes_results(tmp_path, capsys):
    started, reports = time.monotonic(), []
    rows = run_suite(write_instances(tmp_path), tmp_path / "results.csv", cap=1, workers=2, verify=fake_verify,
                     result_dir=tmp_path / "results", grace=1.0, progress=reports.append)
    assert time.monotonic() - started < 60
    assert [r["status"] for r in rows] == ["unsat", "timeout", "sat", "error"]
    with open(tmp_path / "results.csv") as handle:
        assert [(r["onnx"], r["status"]) for r in csv.DictReader(handle)] == [
            ("onnx/unsat.onnx", "unsat"), ("onnx/hang.onnx", "timeout"), ("onnx/sat.onnx", "sat"), ("onnx/error.onnx", "error")]
    assert read_result(tmp_path / "results" / "sat__q.txt") == ("sat", [0.5], [1.0])
    assert read_result(tmp_path / "results" / "hang__p.txt")[0] == "timeout"
    # told at the start and after each instance; a library call draws nothing itself (only the error's reason)
    assert [(r["done"], r["total"]) for r in reports] == [(k, 4) for k in range(5)]
    assert reports[-1]["counts"] == {"unsat": 1, "timeout": 1, "sat": 1, "error": 1} and reports[-1]["left"] is None
    assert "4/4" not in capsys.readouterr().err


def test_bad_instances_csv_names_the_line(tmp_path):
    path = tmp_path / "instances.csv"
    path.write_text("a.onnx,p.vnnlib,100\na.onnx,p.vnnlib\n")
    with pytest.raises(SpecError, match="instances.csv:2"):
        run_suite(path, tmp_path / "results.csv", verify=fake_verify)


def test_suite_runner_on_a_local_ray_instance(tmp_path):
    """The Ray runner gives the process runner's answers: a hung task is cancelled and counts as timeout."""
    ray = pytest.importorskip("ray")
    # this test's own instance, by its address: "auto" could join another Ray cluster running on the machine
    address = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False).address_info["address"]
    try:
        started = time.monotonic()
        rows = run_suite(write_instances(tmp_path), tmp_path / "results.csv", cap=1, verify=fake_verify,
                         ray_address=address, result_dir=tmp_path / "results", grace=1.0)
        elapsed = time.monotonic() - started
    finally:
        ray.shutdown()
    assert [r["status"] for r in rows] == ["unsat", "timeout", "sat", "error"]
    assert elapsed < 120  # the hung task sleeps 600 s: it must have been cancelled
    assert read_result(tmp_path / "results" / "sat__q.txt") == ("sat", [0.5], [1.0])
    assert read_result(tmp_path / "results" / "hang__p.txt")[0] == "timeout"


def test_high_dimensional_unknown_instances_go_to_neuron_splitting(tmp_path):
    """20 free inputs (no input splitting); the one-pass bound function proves nothing, so only GenBaB can."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 6), torch.nn.Sigmoid(), torch.nn.Linear(6, 1)).eval()
    lower, upper = torch.zeros(1, 20), torch.full((1, 20), 0.05)
    with torch.no_grad():
        samples = model(lower + (upper - lower) * torch.rand(20000, 20))
    threshold = float(samples.min()) - 0.05  # below the sampled minimum: the property Y_0 > threshold holds
    lines = [f"(declare-const X_{i} Real)" for i in range(20)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 0.05))" for i in range(20)]
    lines.append(f"(assert (<= Y_0 {threshold}))")
    path = tmp_path / "prop.vnnlib"
    path.write_text("\n".join(lines))
    hopeless = lambda lo, up, C: torch.full((lo.shape[0], C.shape[0]), -1e9)  # noqa: E731
    function = FunctionBounds(model, hopeless, bounded=BoundedModel(model, lower))
    result = verify_instance("net.onnx", path, 30, load=lambda _: (function, (1, 20)))
    assert result.status == "unsat" and result.stats.get("domains", 0) > 0


class _RootBounded:
    """A low-dimensional network whose `bound_optimized` (the whole-box α-CROWN pass) gives the exact interval
    bounds of a linear map, recording its calls."""

    def __init__(self, weight: torch.Tensor):
        self.weight, self.calls = weight, 0

    def __call__(self, x):
        return x.reshape(len(x), -1) @ self.weight.T

    def bound_optimized(self, lo, up, C, threshold, time_limit):
        self.calls += 1
        rows = C @ self.weight
        return (torch.where(rows > 0, rows * lo.reshape(1, -1), rows * up.reshape(1, -1))).sum(-1)[None]


def test_low_dimensional_general_networks_try_the_whole_box_first(tmp_path):
    """y = x0 - x1 on [0, 1]²: y >= -1 everywhere. The root pass proves `y <= -2` unreachable without any
    input splitting (the splitting bound function must not be called); `y <= -0.5` is reachable, so the root
    pass proves nothing and splitting finds the counterexample."""
    function = _RootBounded(torch.tensor([[1.0, -1.0]]))

    def no_splitting(lo, up, C):
        raise AssertionError("input splitting ran although the root pass proved the property")

    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0]], [-2.0], 1))
    result = verify_instance("m.onnx", path, 10, load=lambda _: (FunctionBounds(function, no_splitting, function.bound_optimized), (1, 2)))
    assert result.status == "unsat" and result.stats["proved_at_root"] == 1 and function.calls == 1

    exact = lambda lo, up, C: function.bound_optimized(lo, up, C, None, None).reshape(len(lo), -1)  # noqa: E731
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0]], [-0.5], 1))
    result = verify_instance("m.onnx", path, 10, load=lambda _: (FunctionBounds(function, exact, function.bound_optimized), (1, 2)))
    assert result.status == "sat" and float(result.y[0]) <= -0.5 and function.calls == 2


def test_cgan_is_proved(benchmarks_dir):
    """The cGAN (ConvTranspose, BatchNorm, ReLU, Tanh, Conv, Sigmoid; 4 free inputs): expected unsat, proved by
    the whole-box α-CROWN pass (input splitting on forward-mode bounds alone does not prove it in minutes)."""
    pytest.importorskip("onnx")
    suite = benchmarks_dir / "cgan_2023_nonlinear"
    onnx_name, vnnlib_name, _ = (suite / "instances.csv").read_text().split(",")
    result = verify_instance(suite / onnx_name, suite / vnnlib_name, 300)
    assert result.status == "unsat" and result.stats["proved_at_root"] == 1


@pytest.mark.slow
def test_the_hardest_dist_shift_instance_is_proved(benchmarks_dir):
    """dist_shift index3363 (8 of 792 inputs free; α,β-CROWN proved it in 2023): unsat by input splitting with
    the fixed inputs folded and the boxes clipped, under the process's allocator settings of `opwise verify`
    (about 50 s on 2 cores; 152 s before either)."""
    pytest.importorskip("onnx")
    from opwise.bounds.allocator import retain_freed_memory

    retain_freed_memory()
    suite = benchmarks_dir / "dist_shift_2023"
    result = verify_instance(suite / "onnx/mnist_concat.onnx", suite / "vnnlib/index3363_delta0.13.vnnlib", 300)
    assert result.status == "unsat" and result.stats["clipped"] > 0


def test_low_dimensional_bounds_fold_fixed_inputs_without_changing_the_bounds(tmp_path):
    """LowDimensionalBounds on boxes that hold inputs 1 and 2 at the same values (folded into the first Gemm)
    gives the bounds and free-input coefficients of the unfolded graph, for a batch it pads (5 -> 8)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from opwise.bounds.strategies.input_split import LinearLowerBounds
    from opwise.bounds.strategies.low_dimensional import free_input_bounds
    from opwise.bounds.strategies.low_dimensional import LowDimensionalBounds
    from opwise.bounds.vnncomp.instance import load_with_engine

    generator = torch.Generator().manual_seed(0)
    weights = {name: numpy_helper.from_array(torch.randn(*shape, generator=generator).numpy(), name)
               for name, shape in (("W1", (6, 4)), ("b1", (6,)), ("W2", (2, 6)), ("b2", (2,)))}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("Gemm", ["s", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], list(weights.values()))
    path = tmp_path / "net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model, _ = load_with_engine(str(path))
    bound_low_dimensional = LowDimensionalBounds(model)
    lower = torch.rand(5, 4, generator=generator) - 1
    upper = lower + torch.rand(5, 4, generator=generator)
    lower[:, 1:3] = upper[:, 1:3] = torch.tensor([0.3, -0.7])
    C = torch.tensor([[1.0, -1.0]])
    folded = bound_low_dimensional(lower, upper, C)
    assert isinstance(folded, LinearLowerBounds) and bound_low_dimensional._folded[1] is not None
    full_graph = model.graph.for_batch(8)
    assert full_graph.batch_size == 8
    padded = lambda t: torch.cat([t, t[-1:].expand(3, -1)])  # noqa: E731
    reference = free_input_bounds(full_graph, padded(lower), padded(upper), C)
    assert torch.allclose(folded.lower, reference.lower[:5], atol=1e-5)
    assert torch.allclose(folded.coefficients[..., [0, 3]], reference.coefficients[:5, :, [0, 3]], atol=1e-5)
    assert (folded.coefficients[..., 1:3] == 0).all()
    x = lower + (upper - lower) * torch.rand(200, 5, 4, generator=generator)
    values = model(x.reshape(-1, 4)).reshape(200, 5, 2) @ C.T
    linear = (x[..., None, :] * folded.coefficients).sum(-1) + folded.bias
    assert (values[..., 0] >= linear[..., 0] - 1e-5).all() and (linear >= folded.lower - 1e-5).all()


def _axis_zero_network(path: Path, inputs: int, seed: int) -> torch.nn.Module:
    """An ONNX network that declares batch 1 and moves axis 0 (Gemm, Transpose [1, 6] -> [6, 1], Sigmoid,
    Transpose back, Gemm), as VNN-COMP's power-flow and control networks do; and the same function in torch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    generator = torch.Generator().manual_seed(seed)
    first, second = torch.nn.Linear(inputs, 6), torch.nn.Linear(6, 2)
    with torch.no_grad():
        for layer in (first, second):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    arrays = {"W1": first.weight, "b1": first.bias, "W2": second.weight, "b2": second.bias}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0]), helper.make_node("Sigmoid", ["ht"], ["st"]),
             helper.make_node("Transpose", ["st"], ["s"], perm=[1, 0]),
             helper.make_node("Gemm", ["s", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "axis0", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(t.detach().numpy(), name) for name, t in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return torch.nn.Sequential(first, torch.nn.Sigmoid(), second).eval()


@pytest.mark.parametrize("inputs", [3, 20])  # input splitting, then PGD + CROWN + GenBaB
def test_networks_that_move_axis_zero_verify_end_to_end(tmp_path, inputs):
    """Such a network cannot be imported at a larger batch; its instances run at the declared batch, in
    chunks, and are decided: unsat below a hand-computed interval bound of y0 - y1, sat at its sampled
    maximum (checked by a forward pass)."""
    from opwise.tracing.onnx import load_onnx

    path = tmp_path / "axis0.onnx"
    model = _axis_zero_network(path, inputs, seed=inputs)
    graph = load_onnx(path, batch_size=1)
    assert graph.for_batch(8).batch_size == 1  # the importer refuses batch 8: chunks of the declared batch
    lower, upper = [0.0] * inputs, [0.1] * inputs
    with torch.no_grad():
        y = model(torch.tensor(lower) + torch.tensor(upper) * torch.rand(20000, inputs))
    margin = y[:, 0] - y[:, 1]
    first, second = model[0], model[2]
    with torch.no_grad():  # interval arithmetic by hand: a sound lower bound of y0 - y1 over the box
        centre, radius = first(torch.full((1, inputs), 0.05))[0], 0.05 * first.weight.abs().sum(1)
        low, high = torch.sigmoid(centre - radius), torch.sigmoid(centre + radius)
        row = second.weight[0] - second.weight[1]
        floor = float((torch.where(row > 0, row * low, row * high)).sum() + second.bias[0] - second.bias[1])
    for threshold, expected in ((floor - 0.01, "unsat"), (float(margin.max()), "sat")):
        vnnlib = tmp_path / f"{expected}.vnnlib"
        vnnlib.write_text(vnnlib_text(lower, upper, [[1.0, -1.0]], [threshold], 2))
        result = verify_instance(path, vnnlib, 60)
        assert result.status == expected, (inputs, threshold, result)
        if expected == "sat":
            assert float(result.y[0] - result.y[1]) <= threshold


def test_a_counterexample_that_meets_a_strict_constraint_only_with_equality_is_not_sat(tmp_path):
    """y = x on x in [0, 0] and the violation `Y_0 < 0`: y = 0 meets it only as `<=`; it used to be `sat`, and then
    a search that proposed it (the competition's check turned it down). The search no longer proposes it: the point
    is no counterexample, and the box is a point no bound proves."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1).double())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    path = tmp_path / "p.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 0))\n"
                    "(assert (< Y_0 0))\n")
    result = verify_instance("m.onnx", path, 5, load=tiny_loader(model, (1, 1)))
    assert result.status in ("unknown", "timeout") and "unconfirmed_counterexamples" not in result.stats
    path.write_text(path.read_text().replace("(< Y_0 0)", "(<= Y_0 0)"))  # as `<=` it is a real counterexample
    assert verify_instance("m.onnx", path, 5, load=tiny_loader(model, (1, 1))).status == "sat"


def test_an_unknown_instance_says_why_the_search_left_it_open(tmp_path, capsys):
    """y = relu(sum x) - relu(sum x) = 0 over 80 free inputs, given by functions (interval bounds: y in [-80, 80])
    and `Y_0 <= -1`: true, unprovable by the bounds, and GenBaB cannot split a model given by functions. The
    search said why in its stats, but the instance (and the CLI line, and the result file) said `unknown` only.
    (80 inputs: GenBaB's range; up to 64 are split first, and all the time where GenBaB cannot follow.)"""
    model = torch.nn.Sequential(torch.nn.Linear(80, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0); model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, -1.0]])); model[2].bias.zero_()
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([-1.0] * 80, [1.0] * 80, [[1.0]], [-1.0], 1))
    result = verify_instance("m.onnx", path, 10, load=tiny_loader(model, (1, 80)))
    assert result.status == "unknown" and "given by functions only" in result.reason
    write_result(tmp_path / "r.txt", result)
    assert "given by functions only" in (tmp_path / "r.txt").read_text().splitlines()[1]


def test_a_property_whose_dnf_is_too_large_is_unknown_within_its_timeout(tmp_path):
    """20 two-way `or` asserts over outputs: 2^20 disjuncts, 62 s then MemoryError under a 5 s timeout before."""
    model = random_mlp(3, (2, 4, 2))
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [], [], 2)
                    + "".join(f"(assert (or (<= Y_0 {i}) (>= Y_1 {i})))\n" for i in range(20)))
    started = time.monotonic()
    result = verify_instance("m.onnx", path, 5, load=tiny_loader(model))
    assert time.monotonic() - started < 5
    assert result.status == "unknown" and "disjunctive normal form" in result.reason
    write_result(tmp_path / "r.txt", result)
    assert (tmp_path / "r.txt").read_text().startswith("unknown\n") and "disjuncts" in (tmp_path / "r.txt").read_text()


def _slow_loader(seconds_per_call: float):
    """A Loader whose bound function runs in pure Python far past any timeout (no engine deadline checks)."""
    def function(x):
        return x.reshape(len(x), -1)[:, :1] * 0 + 1.0

    def bounds(lo, up, C):
        ends = time.monotonic() + seconds_per_call
        while time.monotonic() < ends:
            pass
        return torch.full((len(lo), C.shape[0]), -1.0)

    return lambda path: (FunctionBounds(function, bounds), (1, 2))


def test_a_phase_outside_the_engine_is_interrupted_at_the_timeout(tmp_path):
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[-1.0]], [-2.0], 1))  # y = 1 >= 2 never: unsat, unproved
    started = time.monotonic()
    result = verify_instance("m.onnx", path, 1.0, load=_slow_loader(60.0))
    assert result.status == "timeout" and time.monotonic() - started < 2.0


def test_verify_cli_writes_an_error_result_on_any_failure(tmp_path, monkeypatch):
    path = tmp_path / "p.vnnlib"
    path.write_bytes(b"\xff\xfe binary")
    monkeypatch.setattr(instance, "load_with_engine", tiny_loader(random_mlp(1, (2, 4, 2))))
    out = tmp_path / "result.txt"
    with pytest.raises(SpecError, match="not a text file"):
        main_verify(argparse.Namespace(model="m.onnx", vnnlib=str(path), timeout=5.0, out=str(out)))
    assert read_result(out)[0] == "error" and "not a text file" in out.read_text()

    def broken(path):
        raise RuntimeError("the importer broke")

    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0, -1.0]], [0.0], 2))  # read before the network is
    monkeypatch.setattr(instance, "load_with_engine", broken)
    with pytest.raises(RuntimeError):
        main_verify(argparse.Namespace(model="m.onnx", vnnlib=str(path), timeout=5.0, out=str(out)))
    assert out.read_text() == "error\nRuntimeError: the importer broke\n"


def test_cgan_ends_within_its_timeout(benchmarks_dir):
    """The whole-box α-CROWN pass on the cGAN could not be interrupted: `--timeout 5` answered after 27.6 s.
    Module imports are start-up, outside the budget (the CLI and the suite's workers import them first)."""
    pytest.importorskip("onnx")
    import torch._dynamo  # noqa: F401

    import opwise.tracing.onnx  # noqa: F401

    suite = benchmarks_dir / "cgan_2023_nonlinear"
    onnx_name, vnnlib_name, _ = (suite / "instances.csv").read_text().split(",")
    for budget in (5.0, 1.0):
        started = time.monotonic()
        result = verify_instance(suite / onnx_name, suite / vnnlib_name, budget)
        elapsed = time.monotonic() - started
        assert elapsed <= budget + max(0.1 * budget, 1.0), (budget, elapsed, result)
        assert result.status in ("timeout", "unsat")


def test_the_progress_callback_reaches_the_search(tmp_path):
    """y = relu-MLP on [0, 1]²: the property is decided by input splitting, which reports every round."""
    model = random_mlp(1, (2, 16, 16, 1))
    with torch.no_grad():
        grid = torch.cartesian_prod(torch.linspace(0, 1, 101), torch.linspace(0, 1, 101)).double()
        floor = float(model(grid).min())
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0]], [floor - 1e-3], 1))
    reports = []
    result = verify_instance("m.onnx", path, 30, load=tiny_loader(model), progress=reports.append)
    assert result.status == "unsat"
    assert len(reports) == result.stats["rounds"] > 0 and all(r["search"] == "input splitting" for r in reports)


@pytest.mark.parametrize("mixes_rows,reshaped", [(True, False), (False, False), (False, True)])
def test_a_network_whose_declared_leading_axis_above_one_is_one_sample(tmp_path, mixes_rows, reshaped):
    """Input declared [4, 3] (nn4sys-style: rows of one sample, not a batch): VNN-LIB's X_0..X_11 number the whole
    tensor and Y_i the whole output. With a Transpose that mixes the rows the import at batch 1 was refused
    (ModelLoadError "import with batch_size=4"), which the CLI user cannot do; without one the net was imported
    at [1, 3] and every property was refused ("declares 12 inputs X_i but the model input (1, 3) has 3 values").
    `reshaped`: input declared [1, 12], reshaped to [4, 3], output [4, 2]: every property was refused ("declares
    8 outputs Y_i but the model has 2 outputs"). All are decided now: unsat above an interval bound, sat at a
    sampled maximum (the point checked here)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    generator = torch.Generator().manual_seed(3)
    W, b = torch.randn(4 if mixes_rows else 3, 2, generator=generator), torch.randn(2, generator=generator)
    first = [helper.make_node("Reshape", ["x0", "shape"], ["x"])] if reshaped else []
    nodes = first + ([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0])] if mixes_rows else []) + [
        helper.make_node("MatMul", ["t" if mixes_rows else "x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"])]
    outputs = [3, 2] if mixes_rows else [4, 2]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x0" if reshaped else "x", TensorProto.FLOAT,
                                                                          [1, 12] if reshaped else [4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, outputs)],
                              [numpy_helper.from_array(W.numpy(), "W"), numpy_helper.from_array(b.numpy(), "b"),
                               numpy_helper.from_array(np.array([4, 3], np.int64), "shape")])
    path = tmp_path / "rows.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)

    def forward(x: torch.Tensor) -> torch.Tensor:  # x [n, 12] -> [n, 6 or 8]
        rows = x.reshape(-1, 4, 3)
        return torch.relu((rows.transpose(1, 2) if mixes_rows else rows) @ W + b).reshape(len(x), -1)

    lower = torch.rand(12, generator=generator) - 0.5
    upper = lower + 0.2
    upper[6:] = lower[6:]  # half the inputs fixed, as nn4sys properties do
    samples = forward(lower + (upper - lower) * torch.rand(20000, 12, generator=generator))
    last = samples.shape[1] - 1
    centre, radius = (lower + upper) / 2, (upper - lower) / 2
    rows_c, rows_r = centre.reshape(4, 3), radius.reshape(4, 3)
    if mixes_rows:
        rows_c, rows_r = rows_c.T, rows_r.T
    ceiling = float(torch.relu(rows_c @ W + b + rows_r @ W.abs()).reshape(-1)[last])  # interval bound of Y_last
    row = [0.0] * last + [-1.0]  # -Y_last <= -threshold: Y_last >= threshold
    for threshold, expected in ((ceiling + 0.01, "unsat"), (float(samples[:, last].max()), "sat")):
        vnnlib = tmp_path / f"{expected}.vnnlib"
        vnnlib.write_text(vnnlib_text(lower.tolist(), upper.tolist(), [row], [-threshold], last + 1))
        result = verify_instance(path, vnnlib, 30)
        assert result.status == expected, (threshold, result)
        if expected == "sat":
            assert ((result.x >= lower.double() - 1e-7) & (result.x <= upper.double() + 1e-7)).all()
            assert float(forward(result.x.float()[None])[0, last]) >= threshold - 1e-6
            assert torch.allclose(result.y.float(), forward(result.x.float()[None])[0], atol=1e-5)


def _boxes_text(model, boxes: int, unsafe: int | None = None) -> str:
    """lindex's form: one `or` of `(and box (<= Y_0 a))` and `(and box (>= Y_0 b))` per box, a and b just outside
    the box's output range (sampled, widened by 0.05), or inside it for box `unsafe`."""
    text = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (or\n"
    for k in range(boxes):
        lo, hi = k / boxes, (k + 1) / boxes
        y = model(torch.linspace(lo, hi, 201, dtype=torch.float64)[:, None]).detach()
        a, b = float(y.min()) - 0.05, float(y.max()) + 0.05
        if k == unsafe:
            a = float(y.max())
        text += f"(and (>= X_0 {lo!r}) (<= X_0 {hi!r}) (<= Y_0 {a!r}))\n(and (>= X_0 {lo!r}) (<= X_0 {hi!r}) (>= Y_0 {b!r}))\n"
    return text + "))\n"


def test_many_input_boxes_are_one_search(tmp_path):
    """lindex_600's 600 boxes took 0.1 s each through the whole pipeline (an attack, then a search of one box):
    timeout at 30 s. Boxes with the same output rows are now one input splitting search: far fewer bound calls
    than boxes, and a violated box is found with a counterexample inside it."""
    model = random_mlp(5, (1, 16, 16, 1))
    path = tmp_path / "p.vnnlib"
    path.write_text(_boxes_text(model, 300))
    result = verify_instance("m.onnx", path, 60, load=tiny_loader(model, (1, 1)))
    assert result.status == "unsat" and result.stats["boxes"] == 300
    assert result.stats["bound_calls"] < 100, result.stats
    path.write_text(_boxes_text(model, 300, unsafe=123))
    result = verify_instance("m.onnx", path, 60, load=tiny_loader(model, (1, 1)))
    assert result.status == "sat" and 123 / 300 <= float(result.x[0]) <= 124 / 300
    box_top = model(torch.linspace(123 / 300, 124 / 300, 201, dtype=torch.float64)[:, None]).detach().max()
    assert float(result.y[0]) <= float(box_top) + 1e-6


def _windowed_instance(tmp_path, start_bounds, unsafe_above):
    """The window network of tests/tracing/test_onnx_fixed.py (y0 = relu(data[1] / 2) + data[3] for start 1,
    index 3, in [-1, 1.5] on data in [-1, 1]) with its start bounded by `start_bounds` and the index fixed at 3."""
    pytest.importorskip("onnx")
    from tests.tracing.test_onnx_fixed import windowed_net

    onnx_path = windowed_net(tmp_path / "w.onnx")
    lower, upper = [-1.0] * 4 + [start_bounds[0], 3.0, 0.0], [1.0] * 4 + [start_bounds[1], 3.0, 1.0]
    vnnlib_path = tmp_path / "p.vnnlib"
    vnnlib_path.write_text(vnnlib_text(lower, upper, [[-1.0, 0.0]], [-unsafe_above], 2))
    return onnx_path, vnnlib_path


@pytest.mark.parametrize("threshold, expected", [(2.0, "unsat"), (1.2, "sat")])
def test_a_slice_start_fixed_by_the_property_imports_and_is_decided(tmp_path, threshold, expected):
    onnx_path, vnnlib_path = _windowed_instance(tmp_path, (1.0, 1.0), threshold)
    result = verify_instance(onnx_path, vnnlib_path, 30)
    assert result.status == expected, result
    if expected == "sat":
        assert result.y[0] >= threshold and result.x[4] == 1.0 and result.x[5] == 3.0


def test_bounds_of_the_folded_network_contain_its_sampled_outputs(tmp_path):
    onnx_path, vnnlib_path = _windowed_instance(tmp_path, (1.0, 1.0), 2.0)
    [box] = vnncomp.parse_vnnlib(vnnlib_path)
    model, _ = instance.load_with_engine(str(onnx_path), fixed=instance.fixed_elements([box]))
    bounds = model.compute_bounds(x_lower=box.x_lower, x_upper=box.x_upper, method="crown")
    samples = box.x_lower + torch.rand(500, 7) * (box.x_upper - box.x_lower)
    outputs = model(samples)
    assert (outputs >= bounds.lower - 1e-6).all() and (outputs <= bounds.upper + 1e-6).all()
    assert float(bounds.upper[0, 0]) <= 1.5 + 1e-5 and float(bounds.lower[0, 0]) >= -1.0 - 1e-5


def test_a_slice_start_the_property_leaves_free_is_refused(tmp_path):
    from opwise.errors import InputDependentArgument

    onnx_path, vnnlib_path = _windowed_instance(tmp_path, (0.0, 2.0), 2.0)
    with pytest.raises(InputDependentArgument, match="Slice.*not fixed"):
        verify_instance(onnx_path, vnnlib_path, 30)


@pytest.mark.parametrize("row, bound, expected, start", [
    ([-1.0, 0.0], -0.7, "sat", 2.0),     # y0 >= 0.7: only the window at 2 (y0 = 0.8)
    ([-1.0, 0.0], -0.9, "unsat", None),  # y0 is 0.4, 0.3 or 0.8
    ([1.0, 0.0], 0.35, "sat", 1.0),      # y0 <= 0.35: the window at 1 (y0 = 0.3)
    ([1.0, 0.0], 0.25, "unsat", None),
])
def test_a_slice_start_free_on_the_box_is_decided_cell_by_cell(tmp_path, row, bound, expected, start):
    """The start x[4] in [0, 2.5] reaches the network only through a cast to int64: three cells, each decided at
    one point; the data x[0:4] = (0.2, -0.4, 1.0, 0.3) and the index x[5] = 3 are fixed."""
    pytest.importorskip("onnx")
    from tests.tracing.test_onnx_fixed import windowed_net

    onnx_path = windowed_net(tmp_path / "w.onnx")
    data = [0.2, -0.4, 1.0, 0.3]
    vnnlib_path = tmp_path / "p.vnnlib"
    vnnlib_path.write_text(vnnlib_text(data + [0.0, 3.0, 0.5], data + [2.5, 3.0, 0.5], [row], [bound], 2))
    result = verify_instance(onnx_path, vnnlib_path, 30)
    assert result.status == expected, result
    assert result.stats["cells"] == 3
    if expected == "sat":
        assert float(result.x[4]) == start and float(torch.tensor(row, dtype=torch.float64) @ result.y) <= bound


def test_a_free_element_read_through_arithmetic_before_its_cast_is_refused(tmp_path):
    from opwise.errors import InputDependentArgument

    pytest.importorskip("onnx")
    from tests.tracing.test_onnx_fixed import windowed_net

    onnx_path = windowed_net(tmp_path / "w.onnx", start_from="ReduceSum")
    data = [0.2, -0.4, 1.0, 0.3]
    vnnlib_path = tmp_path / "p.vnnlib"
    vnnlib_path.write_text(vnnlib_text(data + [0.0, 1.0, 0.5], data + [2.5, 1.0, 0.5], [[-1.0, 0.0]], [-0.9], 2))
    with pytest.raises(InputDependentArgument, match="Slice.*other than through an integer cast.*ReduceSum"):
        verify_instance(onnx_path, vnnlib_path, 30)


def test_a_network_that_adds_its_own_batch_axis_is_bounded_many_boxes_per_pass(tmp_path):
    """pensieve_big_parallel declares its input [12, 8] and reshapes it to [-1, 12, 8] first; it was bounded as a
    whole sample of a batch-1 graph (`_WholeInput`), one box per pass, and its input splitting timed out. It is
    imported with the batch axis now (the graph itself, at any batch size), and a property is decided: unsat
    above an interval bound, sat at a sampled maximum."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    generator = torch.Generator().manual_seed(5)
    W, b = torch.randn(12, 6, generator=generator), torch.randn(6, generator=generator)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["z"]), helper.make_node("ReduceSum", ["z", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(nodes, "adds", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                              [numpy_helper.from_array(W.numpy(), "W"), numpy_helper.from_array(b.numpy(), "b"),
                               numpy_helper.from_array(np.array([-1, 3, 4], np.int64), "shape"),
                               numpy_helper.from_array(np.array([1], np.int64), "axes")])
    path = tmp_path / "adds.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model, shape = instance.load_with_engine(str(path))
    assert shape == (1, 3, 4) and model.graph.strategy == "onnx"  # the import itself, not a wrapper traced at batch 1
    assert tuple(model.graph_for(8).info(model.graph_for(8).output).shape) == (8, 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.reshape(len(x), 12) @ W + b).sum(1, keepdim=True)

    lower = torch.rand(12, generator=generator) - 0.5
    upper = lower + 0.3
    samples = forward(lower + (upper - lower) * torch.rand(20000, 12, generator=generator))
    centre, radius = (lower + upper) / 2, (upper - lower) / 2
    ceiling = float(torch.relu(centre @ W + b + radius @ W.abs()).sum())
    for threshold, expected in ((ceiling + 0.01, "unsat"), (float(samples.max()), "sat")):
        vnnlib = tmp_path / f"{expected}.vnnlib"
        vnnlib.write_text(vnnlib_text(lower.tolist(), upper.tolist(), [[-1.0]], [-threshold], 1))
        result = verify_instance(path, vnnlib, 30)
        assert result.status == expected, (threshold, result)
        if expected == "sat":
            assert float(forward(result.x.float()[None])[0, 0]) >= threshold - 1e-5


def test_a_point_property_is_decided_by_running_the_network_once(tmp_path):
    """A property that fixes every input element folds the whole network to one constant at import, which no
    bound pass takes ("node 'constant' has no bound rule"); it is decided by the network's output at that
    point: sat just below y0 - y1 there (a counterexample at the point), unsat just above it."""
    path = tmp_path / "axis0.onnx"
    model = _axis_zero_network(path, 3, seed=7)
    point = [0.25, -0.5, 0.75]
    with torch.no_grad():
        y = model(torch.tensor([point]))[0].double()
    value = float(y[0] - y[1])
    for threshold, expected in ((value + 1e-3, "sat"), (value - 1e-3, "unsat")):
        vnnlib = tmp_path / f"{expected}.vnnlib"
        vnnlib.write_text(vnnlib_text(point, point, [[1.0, -1.0]], [threshold], 2))
        result = verify_instance(path, vnnlib, 30)
        assert result.status == expected, (threshold, result)
        assert result.stats.get("constant") is True
        if expected == "sat":
            assert torch.allclose(result.x.float(), torch.tensor(point)) and float(result.y[0] - result.y[1]) <= threshold


def test_a_network_summing_its_output_to_a_scalar_keeps_its_declared_input(tmp_path):
    """An output without a batch axis (a count summed over the whole map, as carvana_unet's) is flattened to [1, 1],
    while the input keeps its declared [1, C, H, W]: a map whose windows a bound pass carries back (as [1, 1, C, H,
    W] every pass was dense at the input). The instance is decided as before."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from opwise.bounds.vnncomp.instance import load_with_engine

    generator = torch.Generator().manual_seed(0)
    weight = numpy_helper.from_array(torch.randn(2, 3, 3, 3, generator=generator).numpy(), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceSum", ["r"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], [weight])
    path = tmp_path / "net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    model, shape = load_with_engine(str(path))
    assert tuple(shape) == (1, 3, 5, 5)
    x = torch.rand(1, 3, 5, 5, generator=generator)
    reference = torch.nn.functional.conv2d(x, torch.from_numpy(numpy_helper.to_array(weight)), padding=1).relu().sum()
    torch.testing.assert_close(model(x).reshape(()), reference)
    lines = [f"(declare-const X_{i} Real)" for i in range(75)] + ["(declare-const Y_0 Real)"]
    for i, value in enumerate(x.flatten().tolist()):
        lines += [f"(assert (>= X_{i} {value - 0.01}))", f"(assert (<= X_{i} {value + 0.01}))"]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines + [f"(assert (<= Y_0 {float(reference) - 50}))"]) + "\n")
    assert verify_instance(str(path), str(tmp_path / "p.vnnlib"), 30).status == "unsat"


def test_a_network_with_two_outputs_is_decided_on_its_first_as_vnn_comp_checks_it(tmp_path):
    """VNN-LIB 1's Y_i of a network with two outputs are its first output's elements (VNN-COMP's check runs the
    network and reads `outputs[0]`): it was refused at import. Thresholds on each side of the first output's
    largest value on a dense grid; the second output, far larger, is not read."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = {"w1": rng.normal(size=(2, 6)), "w2": rng.normal(size=(6, 1)), "w3": 100 + rng.normal(size=(6, 2))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["first"]), helper.make_node("MatMul", ["r", "w3"], ["second"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("first", TensorProto.FLOAT, [1, 1]),
                               helper.make_tensor_value_info("second", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    axis = np.linspace(-1.0, 1.0, 201)
    x = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2).astype(np.float32)
    largest = float((np.maximum(x @ weights["w1"].astype(np.float32), 0) @ weights["w2"].astype(np.float32)).max())
    for threshold, expected in ((largest + 0.05, "unsat"), (largest - 0.05, "sat")):
        prop = tmp_path / f"{expected}.vnnlib"
        prop.write_text(vnnlib_text([-1.0, -1.0], [1.0, 1.0], [[-1.0]], [-threshold], 1))
        result = verify_instance(str(path), prop, 30)
        assert result.status == expected, (threshold, largest, result)
        if expected == "sat":
            assert result.y.shape == (1,) and float(result.y[0]) >= threshold


def _rows_network(path, input_shape: tuple[int, ...], scalar: bool):
    """x (input_shape) @ W1 -> ReLU -> @ W2 (then summed to a scalar where `scalar`), as an ONNX file; its weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(input_shape[-1], 4)).astype(np.float32),
               "w2": rng.normal(size=(4, 1)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"])]
    output = [] if scalar else [*input_shape[:-1], 1]
    nodes.append(helper.make_node("ReduceSum", ["o"], ["y"], keepdims=0) if scalar else helper.make_node("Identity", ["o"], ["y"]))
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output)],
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return weights


@pytest.mark.parametrize("input_shape, scalar", [((2,), False), ((2, 2), False), ((1, 2), True)])
def test_every_input_fixed_on_a_network_without_a_batch_axis_is_decided_by_running_it(tmp_path, input_shape, scalar):
    """Every input fixed folds the network to a constant; where it has no batch axis (an input [2] or [2, 2], or a
    scalar output) tracing its wrapper refused the constant and a TraceError escaped verify_instance. The output,
    run once, decides thresholds on each side of it (and a row reading the inputs too)."""
    path = tmp_path / "rows.onnx"
    weights = _rows_network(path, input_shape, scalar)
    x = np.full(input_shape, 0.25, dtype=np.float32)
    y = (np.maximum(x @ weights["w1"], 0) @ weights["w2"]).reshape(-1)
    y = y.sum(keepdims=True) if scalar else y
    n = int(np.prod(input_shape))
    for offset, expected in ((0.01, "unsat"), (-0.01, "sat")):
        prop = tmp_path / f"{expected}.vnnlib"
        prop.write_text(vnnlib_text([0.25] * n, [0.25] * n, [[-1.0] + [0.0] * (len(y) - 1)], [-(float(y[0]) + offset)],
                                    len(y)))
        assert verify_instance(str(path), prop, 10).status == expected
        # the same threshold written against an input, X_0 - Y_0 <= 0.25 - (y + offset): the network with its input
        # appended to its output
        bound = -(float(y[0]) + offset)
        prop.write_text(prop.read_text().replace("(* -1.0 Y_0)", "(* -1.0 Y_0) (* 1.0 X_0)")
                        .replace(f" {bound!r}))", f" {bound + 0.25!r}))"))
        assert "X_0)" in prop.read_text().splitlines()[-1]
        assert verify_instance(str(path), prop, 10).status == expected


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_hard_stop_is_raised_again_where_python_ignored_it():
    """The alarm fires inside a weakref callback, where Python prints 'Exception ignored' and goes on: the block
    ran its whole second. The stop is raised again shortly after, and once the block is left no alarm remains."""
    import signal
    import weakref

    from opwise.bounds.vnncomp.instance import _hard_stop, _OutOfTime

    class Node:
        pass

    started = time.monotonic()
    with pytest.raises(_OutOfTime):
        with _hard_stop(0.05):
            node = Node()
            _ = weakref.ref(node, lambda ref: time.sleep(0.2))  # the alarm fires while the callback sleeps
            del node
            time.sleep(1.0)
    assert time.monotonic() - started < 0.6
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_the_hard_stop_waits_for_an_import_to_finish(tmp_path, monkeypatch):
    """An exception inside a module's import leaves it half initialised for the rest of the process: the first
    instance of a fresh process, stopped while torch or onnx imported a submodule lazily, made every later instance
    raise AttributeError ('module onnx has no attribute external_data_helper'; the planted-counterexample fuzzer).
    The alarm waits until the import is done, then stops the block."""
    import importlib
    import signal
    import sys

    from opwise.bounds.vnncomp.instance import _hard_stop, _OutOfTime

    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(0.3)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_to_import", raising=False)
    started = time.monotonic()
    with pytest.raises(_OutOfTime):
        with _hard_stop(0.05):  # fires while the module sleeps in its body
            importlib.import_module("slow_to_import")
            time.sleep(5.0)
    assert sys.modules["slow_to_import"].DONE
    # after the import, not after the sleep: far below 5 s even on a loaded machine (1.3 s seen with 0.05 s retries)
    assert 0.3 <= time.monotonic() - started < 3.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    sys.modules.pop("slow_to_import")


def test_a_run_started_inside_an_import_is_still_stopped(tmp_path, monkeypatch):
    """Only imports the block itself starts hold the stop: a script whose verification runs as it is imported
    (`import my_benchmark`) ran past its timeout, every frame of it being inside that import."""
    import importlib
    import sys

    (tmp_path / "runs_at_import.py").write_text(
        "import time\n"
        "from opwise.bounds.vnncomp.instance import _hard_stop, _OutOfTime\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    with _hard_stop(0.05):\n"
        "        time.sleep(5.0)\n"
        "    STOPPED = False\n"
        "except _OutOfTime:\n"
        "    STOPPED = True\n"
        "SECONDS = time.monotonic() - start\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "runs_at_import", raising=False)
    module = importlib.import_module("runs_at_import")
    assert module.STOPPED and module.SECONDS < 3.0
    sys.modules.pop("runs_at_import")


def test_a_vmap_level_a_stop_left_open_is_closed_when_the_block_is_left():
    """A stop that lands in torch.vmap's own exit skips closing its level; the process's next instance then failed
    in nn.Linear's init ('vmap: called random operation while in randomness error mode', seen running the planted
    fuzzer's instances one after another). The level is opened by hand here, as the skipped exit leaves it."""
    from opwise.bounds.vnncomp.instance import _hard_stop, _OutOfTime

    depth = torch._C._functorch.get_dynamic_layer_stack_depth()
    with pytest.raises(_OutOfTime):
        with _hard_stop(10.0):
            torch._C._functorch._vmap_increment_nesting(2, "error")
            raise _OutOfTime()
    assert torch._C._functorch.get_dynamic_layer_stack_depth() == depth
    torch.nn.Linear(3, 2)  # random initialisation, refused inside a vmap level in "error" mode
    inside = []
    torch.vmap(lambda row: inside.append(torch._C._functorch.get_dynamic_layer_stack_depth()) or row)(torch.zeros(2))
    assert inside == [depth + 1]  # a vmap after it opens one level above the caller's, not above the leaked one


def _mlp_onnx(path: Path, model: torch.nn.Sequential, batched: bool) -> None:
    """`model` (Linear/ReLU) as a FLOAT ONNX network of MatMul, Add and Relu, its input and output declared [1, n]
    or, without a batch axis, [n]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights, value = [], [], "x"
    for index, module in enumerate(model):
        if isinstance(module, torch.nn.Linear):
            weights += [numpy_helper.from_array(module.weight.detach().T.float().numpy(), f"w{index}"),
                        numpy_helper.from_array(module.bias.detach().float().numpy(), f"b{index}")]
            nodes += [helper.make_node("MatMul", [value, f"w{index}"], [f"m{index}"]),
                      helper.make_node("Add", [f"m{index}", f"b{index}"], [f"a{index}"])]
            value = f"a{index}"
        else:
            nodes.append(helper.make_node("Relu", [value], [f"r{index}"]))
            value = f"r{index}"
    shape = lambda size: [1, size] if batched else [size]  # noqa: E731
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape(model[0].in_features))],
                              [helper.make_tensor_value_info(value, TensorProto.FLOAT, shape(model[-1].out_features))], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.parametrize("seed", range(3))
def test_a_network_without_a_batch_axis_is_decided_as_the_same_network_with_one(tmp_path, seed):
    """Input declared [20], not [1, 20]: 20 free inputs, so GenBaB decides it. The network was bounded as one sample
    whose nodes have no batch axis, GenBaB found no node to split and ended `unknown: nothing to split` where the
    [1, 20] twin was proved (planted fuzzer, seeds 151 and 230). Both must agree with MILP now: unsat just below the
    exact minimum of Y_0 - Y_1 (after branching), sat just above it with a counterexample the competition accepts."""
    model = random_mlp(seed, (20, 8, 8, 2))
    with torch.no_grad():  # the weights the FLOAT network has, so MILP's minimum is the network's
        for parameter in model.parameters():
            parameter.copy_(parameter.float().double())
    lower, upper = [-1.0] * 20, [1.0] * 20
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text(lower, upper, [[1.0, -1.0]], [0.0], 2))
    [spec] = vnncomp.parse_vnnlib(path, dtype=torch.float64)
    exact = milp_min_margin(model, spec)  # the minimum of Y_0 - Y_1 over the box
    for batched in (True, False):
        _mlp_onnx(tmp_path / f"{batched}.onnx", model, batched)
    for threshold, expected in ((exact - 0.1, "unsat"), (exact + 0.1, "sat")):
        path.write_text(vnnlib_text(lower, upper, [[1.0, -1.0]], [threshold], 2))
        for batched in (True, False):
            result = verify_instance(tmp_path / f"{batched}.onnx", path, 15)
            assert result.status == expected, (batched, threshold, result.reason)
            if expected == "unsat":
                assert result.stats["domains"] > 0 and not result.stats.get("proved_at_root")  # it needed branching
            else:
                write_result(tmp_path / "out.txt", result)
                assert_competition_checker_accepts(tmp_path / "out.txt", tmp_path / f"{batched}.onnx", path)
