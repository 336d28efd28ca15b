"""Whole PyTorch training steps: torch.nn's recurrent layers against fusedrnn.torch.nn's drop-ins.

Each step is what a PyTorch user runs: Embedding -> RNN/LSTM/GRU -> Linear -> cross-entropy,
``loss.backward()`` and Adam, on padded input or on a PackedSequence (random lengths in [T/2, T],
``enforce_sorted=False``). The two models hold the same weights (the fused one is a
``fusedrnn.torch.convert``-ed copy); their steps are timed interleaved, call by call, in this one
process with the same thread count, and the table gives median times and torch's / ours. With
``--compile`` both models also run under ``torch.compile`` (the fused one with Dynamo's
``allow_rnn``, so its graph holds the custom operators; torch.nn's RNNs break the graph, as they
do for every user). Then a generation loop: B=1, one step per call with the state carried,
``--generate`` steps, eval mode.

    python bench/torch_dropin.py                           # B in {1, 8, 64}, H in {256, 512}, T=100
    python bench/torch_dropin.py --quick                   # a small subset
    python bench/torch_dropin.py --cells gru --batch 64 --hidden 256 --compile
"""

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
import fusedrnn.torch

import machine  # bench/machine.py

VOCAB = 64
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class Model(nn.Module):
    def __init__(self, cell, hidden):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.rnn = LAYERS[cell](hidden, hidden)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, tokens, lengths=None, hidden=None):
        x = self.embed(tokens)                                       # (T, B, H)
        if lengths is None:
            out, hidden = self.rnn(x, hidden)
            return self.head(out), hidden
        out, hidden = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False), hidden)
        return self.head(out.data), hidden                           # the packed steps only


def training_step(model, optimizer, tokens, targets, lengths):
    def step():
        optimizer.zero_grad(set_to_none=True)
        logits, _ = model(tokens, lengths)
        if lengths is None:
            target = targets.reshape(-1)
        else:
            target = pack_padded_sequence(targets, lengths, enforce_sorted=False).data
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target)
        loss.backward()
        optimizer.step()
    return step


class PassThrough(nn.Module):
    """Stands in for the RNN in rest_of_step: the input (padded or packed) is the output."""

    def forward(self, x, hidden=None):
        return x, hidden


def rest_of_step(model, tokens, targets, lengths):
    """A training step of a copy of `model` with its RNN replaced by PassThrough (I = H, so the
    shapes still fit) and Adam still updating the RNN's parameters (with zero gradients): what a
    step costs besides the RNN layer's forward and backward, the same for both contenders. A target
    that needs a whole step faster than this cannot be met by any RNN."""
    rest = copy.deepcopy(model)
    parameters = list(rest.parameters())
    zeros = [(p, torch.zeros_like(p)) for p in rest.rnn.parameters()]
    rest.rnn = PassThrough()
    optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def zero_rnn_gradients(*_):
        for p, z in zeros:
            p.grad = z
    optimizer.register_step_pre_hook(zero_rnn_gradients)
    return training_step(rest, optimizer, tokens, targets, lengths)


def generation_loop(model, steps):
    @torch.no_grad()
    def run():
        token, hidden = torch.zeros(1, 1, dtype=torch.long), None
        for _ in range(steps):
            logits, hidden = model(token, hidden=hidden)
            token = logits[-1].argmax(-1, keepdim=True)
    return run


def time_pair(fns, min_calls, min_seconds):
    """Interleaved calls of each function: ({name: (median, min seconds)}, the median of the
    cross-core probe taken after each round (None with one thread))."""
    for fn in fns.values():
        fn()
        fn()
    times = {name: [] for name in fns}
    probes = []
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < min_calls or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        probes.append(machine.cross_core_ns())
    return ({name: (statistics.median(t), min(t)) for name, t in times.items()},
            None if None in probes else statistics.median(probes))


def pair(cell, hidden, seed=0):
    torch.manual_seed(seed)
    ours = Model(cell, hidden)
    theirs = copy.deepcopy(ours)
    fusedrnn.torch.convert(ours)
    return theirs, ours


def compiled(model, allow_rnn):
    """torch.compile(model), traced with Dynamo's allow_rnn as given: off for torch.nn's RNNs, as a
    user gets them (a graph break at the RNN), on for ours (the operators inside the graph)."""
    run = torch.compile(model)

    def call(*args, **kwargs):
        with torch._dynamo.config.patch(allow_rnn=allow_rnn):
            return run(*args, **kwargs)
    return call


def best_of(fn, calls, repeats=7):
    """Seconds per call: the least mean over `repeats` runs of `calls` calls (robust to noise)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def best_of_interleaved(fns, calls, repeats):
    """best_of for several functions, their runs taken in turn: each meets the same moments of the
    machine's other load, so their differences are more reliable than those of separate best_ofs."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    return best


def call_overhead(cells=("gru", "lstm"), H=64, calls=200, repeats=50):
    """The op's own cost per call at T=1, B=1, I=H: fusedrnn.torch.recurrent against the native
    kernel called directly on the same arrays, as fusedrnn.functional calls it (positionally:
    everything but the kernel is overhead); the operator through PyTorch's dispatcher (as a
    compiled graph calls it); the modules. Many short runs in turn, the least mean: a run of a
    few milliseconds is often untouched by the other load of a shared machine."""
    from fusedrnn import _core

    rows = []
    for cell in cells:
        gates = fusedrnn.functional.CELLS[cell].gates
        torch.manual_seed(0)
        x = torch.randn(1, 1, H)
        weights = {"weight_ih": torch.randn(gates * H, H) / 8, "weight_hh": torch.randn(gates * H, H) / 8,
                   "bias_ih": torch.zeros(gates * H), "bias_hh": torch.zeros(gates * H)}
        trainable = {name: w.clone().requires_grad_() for name, w in weights.items()}
        arrays = dict(x=x.numpy(), h0=None, c0=None, w_ih=weights["weight_ih"].numpy(),
                      w_hh=weights["weight_hh"].numpy(), w_hr=None, recurrent_scale=None,
                      b_ih=weights["bias_ih"].numpy(), b_hh=weights["bias_hh"].numpy(), lengths=None, mask=None)

        def kernel(training):
            a = arrays
            return _core.forward(cell, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["w_hr"], a["b_ih"],
                                 a["b_hh"], a["recurrent_scale"], a["lengths"], a["mask"], False, False, training,
                                 False, None)

        def kernel_train():
            y, _, _, computed = kernel(True)
            _core.backward(cell, arrays["x"], arrays["w_ih"], arrays["w_hh"], None, None, None, None, False, False,
                           tuple(computed), want_db_ih=True, want_db_hh=True, dy=y, dh_n=None, dc_n=None)

        def ours_train():
            y, _, _ = fusedrnn.torch.recurrent(cell, x, None, None, trainable)
            y.backward(y.detach())

        def operator():
            return torch.ops.fusedrnn.recurrent_forward(cell, x, None, None, weights["weight_ih"],
                                                        weights["weight_hh"], weights["bias_ih"],
                                                        weights["bias_hh"], None, None, None, "zero", False,
                                                        False, None)

        theirs = LAYERS[cell](H, H).eval()
        ours = fusedrnn.torch.convert(copy.deepcopy(theirs))
        with torch.no_grad():
            t = best_of_interleaved(dict(kernel=lambda: kernel(False),
                                         recurrent=lambda: fusedrnn.torch.recurrent(cell, x, None, None, weights),
                                         operator=operator, module=lambda: ours(x), torch_module=lambda: theirs(x)),
                                    calls, repeats)
        t.update(best_of_interleaved(dict(kernel_train=kernel_train, recurrent_train=ours_train), calls // 2, repeats))
        rows.append(dict(cell=cell, H=H, **{k + "_us": v * 1e6 for k, v in t.items()}))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--batch", default="1,8,64")
    parser.add_argument("--hidden", default="256,512")
    parser.add_argument("--steps", type=int, default=100, help="T")
    parser.add_argument("--inputs", default="padded,packed")
    parser.add_argument("--compile", action="store_true", help="also time both under torch.compile")
    parser.add_argument("--generate", type=int, default=200, help="steps of the B=1 generation loop")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="write everything measured as JSON")
    parser.add_argument("--save", action="store_true",
                        help="write it as this CPU's results, bench/results/<cpu>/torch_dropin.json")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.hidden, args.generate = "1,64", "256", 50
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    min_calls, min_seconds = (3, 0.3) if args.quick else (7, 1.0)
    near = machine.NearLatency(threads)
    cells, batches = args.cells.split(","), [int(b) for b in args.batch.split(",")]
    hiddens, inputs = [int(h) for h in args.hidden.split(",")], args.inputs.split(",")
    T = args.steps
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                  command="python bench/torch_dropin.py " + " ".join(sys.argv[1:]), cpu=machine.cpu_model(),
                  cpus=os.cpu_count(), threads=threads, torch=torch.__version__, fusedrnn=fusedrnn.__version__,
                  T=T, vocab=VOCAB, generate=args.generate, near_cross_core_ns=near.ns,
                  displaced_pause_s=machine.DISPLACED_PAUSE_S, steps=[], overhead=[])

    print(f"{result['cpu']}, {os.cpu_count()} cpus | threads {threads} | torch {torch.__version__} | "
          f"fusedrnn {fusedrnn.__version__} | T={T}, I=H, vocab {VOCAB}")
    print("\nPer call at T=1, B=1, I=H=64 (microseconds; overhead = fusedrnn.torch.recurrent - the kernel):")
    print("| cell | kernel | recurrent | overhead | dispatcher op | module | torch.nn | train kernel | "
          "train recurrent | train overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in call_overhead():
        result["overhead"].append(r)
        print(f"| {r['cell']} | {r['kernel_us']:.1f} | {r['recurrent_us']:.1f} | "
              f"{r['recurrent_us'] - r['kernel_us']:.1f} | {r['operator_us']:.1f} | {r['module_us']:.1f} | "
              f"{r['torch_module_us']:.1f} | {r['kernel_train_us']:.1f} | {r['recurrent_train_us']:.1f} | "
              f"{r['recurrent_train_us'] - r['kernel_train_us']:.1f} |", flush=True)

    print("\n| cell | B | H | input | compiled | torch.nn ms | fusedrnn ms | torch / ours | rest of the step ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(1)
    for cell in cells:
        for H in hiddens:
            for B in batches:
                tokens = torch.randint(0, VOCAB, (T, B), generator=generator)
                targets = torch.randint(0, VOCAB, (T, B), generator=generator)
                lengths = torch.randint(T // 2, T + 1, (B,), generator=generator)
                lengths[0] = T
                for kind in inputs:
                    given = lengths if kind == "packed" else None
                    for compile_ in (False, True) if args.compile else (False,):
                        theirs, ours = pair(cell, H)
                        if compile_:
                            theirs_run, ours_run = compiled(theirs, False), compiled(ours, True)
                        else:
                            theirs_run, ours_run = theirs, ours
                        steps = {}
                        for name, model, run in (("torch", theirs, theirs_run), ("ours", ours, ours_run)):
                            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                            steps[name] = training_step(run, optimizer, tokens, targets, given)
                        if not compile_:  # (timed with the eager pair; the compiled row after it reuses it)
                            steps["rest"] = rest_of_step(theirs, tokens, targets, given)
                        timed, cross_core, retries = machine.measure_near(
                            lambda: time_pair(steps, min_calls, min_seconds), near)
                        if not compile_:
                            rest_ms = timed["rest"][0] * 1e3
                        row = dict(cell=cell, B=B, H=H, input=kind, compiled=compile_,
                                   torch_ms=timed["torch"][0] * 1e3, ours_ms=timed["ours"][0] * 1e3,
                                   torch_min_ms=timed["torch"][1] * 1e3, ours_min_ms=timed["ours"][1] * 1e3,
                                   rest_ms=rest_ms, cross_core_ns=cross_core, retries=retries)
                        result["steps"].append(row)
                        print(f"| {cell} | {B} | {H} | {kind} | {'yes' if compile_ else 'no'} | "
                              f"{row['torch_ms']:.2f} | {row['ours_ms']:.2f} | "
                              f"{row['torch_ms'] / row['ours_ms']:.2f} | {rest_ms:.2f} |", flush=True)
        for H in hiddens:
            theirs, ours = pair(cell, H)
            theirs.eval()
            ours.eval()
            loops = {"torch": generation_loop(theirs, args.generate), "ours": generation_loop(ours, args.generate)}
            timed, cross_core, retries = machine.measure_near(lambda: time_pair(loops, min_calls, min_seconds), near)
            row = dict(cell=cell, B=1, H=H, input=f"generate {args.generate} steps", compiled=False,
                       torch_ms=timed["torch"][0] * 1e3, ours_ms=timed["ours"][0] * 1e3,
                       torch_min_ms=timed["torch"][1] * 1e3, ours_min_ms=timed["ours"][1] * 1e3,
                       cross_core_ns=cross_core, retries=retries)
            result["steps"].append(row)
            print(f"| {cell} | 1 | {H} | {row['input']} | no | {row['torch_ms']:.2f} | {row['ours_ms']:.2f} | "
                  f"{row['torch_ms'] / row['ours_ms']:.2f} |", flush=True)

    result["near_cross_core_ns"] = near.ns  # (lowered during the run where a nearer moment came)
    for path in filter(None, (args.json, args.save and machine.results_path("torch_dropin"))):
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
