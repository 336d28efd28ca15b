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
import os
import platform
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
import fusedrnn.torch

VOCAB = 64
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in f)}
        return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    except OSError:
        return platform.processor() or "unknown CPU"


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


def generation_loop(model, steps):
    @torch.no_grad()
    def run():
        token, hidden = torch.zeros(1, 1, dtype=torch.long), None
        for _ in range(steps):
            logits, hidden = model(token, hidden=hidden)
            token = logits[-1].argmax(-1, keepdim=True)
    return run


def time_pair(fns, min_calls, min_seconds):
    """Interleaved calls of each function; median and min seconds of each."""
    for fn in fns.values():
        fn()
        fn()
    times = {name: [] for name in fns}
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < min_calls or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def pair(cell, hidden, seed=0):
    torch.manual_seed(seed)
    ours = Model(cell, hidden)
    theirs = copy.deepcopy(ours)
    fusedrnn.torch.convert(ours)
    return theirs, ours


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
    args = parser.parse_args()
    if args.quick:
        args.batch, args.hidden, args.generate = "1,64", "256", 50
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    min_calls, min_seconds = (3, 0.3) if args.quick else (7, 1.0)
    cells, batches = args.cells.split(","), [int(b) for b in args.batch.split(",")]
    hiddens, inputs = [int(h) for h in args.hidden.split(",")], args.inputs.split(",")
    T = args.steps

    print(f"{cpu_model()}, {os.cpu_count()} cpus | threads {threads} | torch {torch.__version__} | "
          f"fusedrnn {fusedrnn.__version__} | T={T}, I=H, vocab {VOCAB}")
    print("| cell | B | H | input | compiled | torch.nn ms | fusedrnn ms | torch / ours |")
    print("|---|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(1)
    for cell in cells:
        for H in hiddens:
            for B in batches:
                tokens = torch.randint(0, VOCAB, (T, B), generator=generator)
                targets = torch.randint(0, VOCAB, (T, B), generator=generator)
                lengths = torch.randint(T // 2, T + 1, (B,), generator=generator)
                lengths[0] = T
                for kind in inputs:
                    for compiled in (False, True) if args.compile else (False,):
                        theirs, ours = pair(cell, H)
                        if compiled:
                            torch._dynamo.config.allow_rnn = True
                            theirs_run, ours_run = torch.compile(theirs), torch.compile(ours)
                        else:
                            theirs_run, ours_run = theirs, ours
                        steps = {}
                        for name, model, run in (("torch", theirs, theirs_run), ("ours", ours, ours_run)):
                            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                            steps[name] = training_step(run, optimizer, tokens, targets,
                                                        lengths if kind == "packed" else None)
                        result = time_pair(steps, min_calls, min_seconds)
                        t_torch, t_ours = result["torch"][0] * 1e3, result["ours"][0] * 1e3
                        print(f"| {cell} | {B} | {H} | {kind} | {'yes' if compiled else 'no'} | {t_torch:.2f} | "
                              f"{t_ours:.2f} | {t_torch / t_ours:.2f} |", flush=True)
        theirs, ours = pair(cell, hiddens[0])
        theirs.eval()
        ours.eval()
        result = time_pair({"torch": generation_loop(theirs, args.generate),
                            "ours": generation_loop(ours, args.generate)}, min_calls, min_seconds)
        t_torch, t_ours = result["torch"][0] * 1e3, result["ours"][0] * 1e3
        print(f"| {cell} | 1 | {hiddens[0]} | generate {args.generate} steps | no | {t_torch:.2f} | {t_ours:.2f} | "
              f"{t_torch / t_ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
