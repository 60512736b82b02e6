"""Hyper-gradient modes against each other, the plain training run and the peers, in one run.

Two problems on 500 Fashion-MNIST training and 500 validation images (float64, so gradients can
be compared to ~1e-10):

* ``l2``: logistic regression with one L2 strength per input pixel (784 hyperparameters),
  ``T`` steps of SGD — innerloop's ``Unrolled``, ``Unrolled(truncate=T/10)``, ``ImplicitCG(20)``,
  ``ImplicitNeumann(20)``, and the unrolled hyper-gradient written with ``higher``
  (``innerloop_ctx``) and TorchOpt (``MetaSGD``);
* ``lr``: the same model with a learned learning rate, momentum and global L2 strength (three
  scalars), ``T`` steps of heavy-ball SGD — ``Unrolled``, ``ForwardMode``, ``higher`` (learning
  rate and momentum overridden by tensors), TorchOpt.

Each (problem, method, T) runs in a fresh subprocess: one warm-up each, then ``--repeats`` timed
hyper-gradients; reported are seconds per hyper-gradient as a ratio to one plain training run
of ``T`` steps without a graph measured in the same subprocess, the peak megabytes of tensors
held for the backward pass at once (what reverse mode must keep; counted by a saved-tensors
hook), and
the largest difference from innerloop's ``Unrolled`` hyper-gradient (the truncated and implicit
modes differ by design: the first ignores early steps, the second assumes ``T`` steps reached
the optimum).

    python -m benchmarks.bilevel_modes [--steps 25 100 400] [--threads 1] [--json benchmarks/results/bilevel_modes.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import torch

PROBLEMS = {"l2": ("unrolled", "truncated", "implicit-cg", "implicit-neumann", "higher", "torchopt"),
            "lr": ("unrolled", "forward", "higher", "torchopt")}
LR, MOMENTUM = 0.05, 0.5


def _data(path: str | None = None):
    """The splits; from ``path`` (written by the parent) in a measuring subprocess, so that its peak
    memory is not the decoding of all 70,000 images."""
    if path is not None:
        return tuple(torch.load(path, weights_only=True))
    from innerloop.bilevel.experiments.data import fashion_mnist_splits

    splits = fashion_mnist_splits(0, 500, 500, 1)
    return (splits.train_x.double(), splits.train_y, splits.val_x.double(), splits.val_y)


def _ours(problem_name: str, method: str, steps: int, data):
    from innerloop.bilevel import (BilevelProblem, ForwardMode, GradientDescent, ImplicitCG, ImplicitNeumann,
                                   Unrolled, hypergradient)
    from innerloop.functional import SGD, MomentumSGD

    train_x, train_y, val_x, val_y = data
    # The weight in nn.Linear's [out, in] layout, as the peers hold it: the layout alone moves the
    # double-backward's time by ~15% on this CPU, so all three use the same.
    weights = {"w": torch.zeros(10, 784, dtype=torch.float64), "b": torch.zeros(10, dtype=torch.float64)}
    if problem_name == "l2":
        hyper = {"log_l2": torch.full((784,), -3.0, dtype=torch.float64)}
        strength = lambda h: torch.exp(h["log_l2"])[None, :]  # noqa: E731
        solver = GradientDescent(steps, SGD(LR))
    else:
        hyper = {"log_lr": torch.tensor(LR, dtype=torch.float64).log(),
                 "momentum_logit": torch.logit(torch.tensor(MOMENTUM, dtype=torch.float64)),
                 "log_l2": torch.tensor(-3.0, dtype=torch.float64)}
        strength = lambda h: torch.exp(h["log_l2"])  # noqa: E731
        solver = GradientDescent(steps, lambda h: MomentumSGD(torch.exp(h["log_lr"]), torch.sigmoid(h["momentum_logit"])))

    def inner(w, h):
        return (torch.nn.functional.cross_entropy(torch.nn.functional.linear(train_x, w["w"], w["b"]), train_y)
                + 0.5 * (strength(h) * w["w"] ** 2).sum())

    def outer(w, h):
        return torch.nn.functional.cross_entropy(torch.nn.functional.linear(val_x, w["w"], w["b"]), val_y)

    problem = BilevelProblem(inner, outer, solver)
    mode = {"unrolled": Unrolled(), "truncated": Unrolled(truncate=max(steps // 10, 1)),
            "implicit-cg": ImplicitCG(20), "implicit-neumann": ImplicitNeumann(20, LR), "forward": ForwardMode(chunk_size=3)}

    def plain() -> None:
        solver.run_autograd(inner, weights, hyper, create_graph=False)

    def gradient() -> torch.Tensor:
        result = hypergradient(problem, weights, hyper, mode[method])
        return torch.cat([value.reshape(-1) for value in result.gradient.values()])

    return plain, gradient


def _peer(problem_name: str, method: str, steps: int, data):
    train_x, train_y, val_x, val_y = data

    def fresh():
        model = torch.nn.Linear(784, 10).double()
        torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
        if problem_name == "l2":
            return model, {"log_l2": torch.full((784,), -3.0, dtype=torch.float64, requires_grad=True)}
        return model, {"log_lr": torch.tensor(LR, dtype=torch.float64).log().requires_grad_(True),
                       "momentum_logit": torch.logit(torch.tensor(MOMENTUM, dtype=torch.float64)).requires_grad_(True),
                       "log_l2": torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)}

    def penalty(weight, hyper):
        strength = torch.exp(hyper["log_l2"])
        return 0.5 * ((strength[None, :] if strength.dim() else strength) * weight ** 2).sum()

    def gradient() -> torch.Tensor:
        model, hyper = fresh()
        if method == "higher":
            import higher

            optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0 if problem_name == "l2" else MOMENTUM)
            override = None
            if problem_name == "lr":
                override = {"lr": [torch.exp(hyper["log_lr"])], "momentum": [torch.sigmoid(hyper["momentum_logit"])]}
            with higher.innerloop_ctx(model, optimizer, copy_initial_weights=True, override=override) as (fmodel, diffopt):
                for _ in range(steps):
                    loss = torch.nn.functional.cross_entropy(fmodel(train_x), train_y) + penalty(fmodel.weight, hyper)
                    diffopt.step(loss)
                outer = torch.nn.functional.cross_entropy(fmodel(val_x), val_y)
        else:
            import torchopt

            if problem_name == "l2":
                optimizer = torchopt.MetaSGD(model, lr=LR)
            else:
                optimizer = torchopt.MetaSGD(model, lr=torch.exp(hyper["log_lr"]), momentum=torch.sigmoid(hyper["momentum_logit"]))
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(model(train_x), train_y) + penalty(model.weight, hyper)
                optimizer.step(loss)
            outer = torch.nn.functional.cross_entropy(model(val_x), val_y)
        grads = torch.autograd.grad(outer, list(hyper.values()))
        return torch.cat([value.reshape(-1) for value in grads]).detach()

    return gradient


def _saved_megabytes(function) -> tuple[object, float | None]:
    """``function()``'s result and the peak megabytes of tensors held for backward at once while it
    ran (the memory reverse mode holds: a saved-tensors hook counts each storage when saved and a
    finalizer releases it when the tensor dies); None where ``torch.func`` refuses the hook
    (forward mode, whose memory does not grow with the steps)."""
    live: dict[int, list[int]] = {}
    held = {"now": 0, "peak": 0}

    def release(key: int) -> None:
        entry = live[key]
        entry[1] -= 1
        if entry[1] == 0:
            held["now"] -= entry[0]
            del live[key]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in live:
            live[key][1] += 1
        else:
            live[key] = [storage.nbytes(), 1]
            held["now"] += storage.nbytes()
            held["peak"] = max(held["peak"], held["now"])
        weakref.finalize(tensor, release, key)
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = function()
    except RuntimeError as error:  # torch.func transforms (forward mode) refuse saved-tensor hooks
        if "saved tensor hooks" not in str(error):
            raise
        return function(), None
    return result, held["peak"] / 2**20


def _measure(problem_name: str, method: str, steps: int, repeats: int, threads: int, data_path: str) -> dict:
    """Runs in its own subprocess: timings, saved memory, gradient difference from ours (Unrolled)."""
    torch.set_num_threads(threads)
    data = _data(data_path)
    plain, ours_unrolled = _ours(problem_name, "unrolled", steps, data)
    plain()  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        plain()
    plain_seconds = (time.perf_counter() - began) / repeats
    gradient = _peer(problem_name, method, steps, data) if method in ("higher", "torchopt") else _ours(problem_name, method, steps, data)[1]
    try:
        value, saved = _saved_megabytes(gradient)  # also the warm-up
    except Exception as error:  # a peer that cannot express the problem
        return {"error": f"{type(error).__name__}: {error}"[:200]}
    began = time.perf_counter()
    for _ in range(repeats):
        gradient()
    seconds = (time.perf_counter() - began) / repeats
    reference = ours_unrolled() if method != "unrolled" else value
    return {"seconds": seconds, "plain_seconds": plain_seconds, "time_ratio": seconds / plain_seconds,
            "saved_for_backward_mb": saved, "max_difference_from_unrolled": float((value - reference).abs().max()),
            "gradient_scale": float(reference.abs().max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 100, 400])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=4, metavar=("PROBLEM", "METHOD", "STEPS", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args.one[0], args.one[1], int(args.one[2]), args.repeats, args.threads, args.one[3])))
        return 0
    folder = tempfile.mkdtemp(prefix="bilevel-modes-")
    data_path = str(Path(folder) / "splits.pt")
    torch.save(list(_data()), data_path)
    rows = []
    for problem_name, methods in PROBLEMS.items():
        for steps in args.steps:
            for method in methods:
                output = subprocess.run([sys.executable, "-m", "benchmarks.bilevel_modes", "--one", problem_name, method,
                                         str(steps), data_path, "--repeats", str(args.repeats), "--threads", str(args.threads)],
                                        capture_output=True, text=True, check=True).stdout
                row = {"problem": problem_name, "method": method, "steps": steps, **json.loads(output.splitlines()[-1])}
                rows.append(row)
                if "error" in row:
                    print(f"{problem_name:3s} T={steps:4d} {method:17s} {row['error']}", flush=True)
                else:
                    print(f"{problem_name:3s} T={steps:4d} {method:17s} time x{row['time_ratio']:6.2f}  saved for backward "
                          f"{'n/a' if row['saved_for_backward_mb'] is None else format(row['saved_for_backward_mb'], '8.1f')} MB  |difference| "
                          f"{row['max_difference_from_unrolled']:.1e} of {row['gradient_scale']:.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "machine": platform.processor() or platform.machine(),
                       "torch": torch.__version__, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
