"""A character-level language model, written as one would write it with torch.nn.

Embedding -> LSTM (or GRU / RNN with --cell) -> Linear, trained with CrossEntropyLoss and Adam by
truncated backpropagation through time: the text is cut into `batch` parallel streams, each
step trains on the next `seq-len` characters of every stream, and the recurrent state is carried
from one chunk to the next without gradient flowing back across the boundary (PyTorch's
``hidden.detach()``: here we simply never backpropagate into the hx we passed in).

    python examples/char_rnn.py                     # trains on Python's own standard library
    python examples/char_rnn.py input.txt --steps 5000 --cell gru
    mpiexec -n 2 python examples/char_rnn.py --distributed      # data-parallel over 2 processes

With --distributed (fusedrnn.distributed, over MPI) each of the N processes trains `batch` streams
of its own and the gradients are averaged at every step: the same training as one process with
N * batch streams. Rank 0 prints, evaluates and samples.

It reports the loss in nats per character next to the unigram entropy of the text (what a model
that ignores context can reach), then samples text with a temperature.
"""

import argparse
import importlib
import math
import time

import numpy as np

import fusedrnn
import fusedrnn.distributed as dist
from fusedrnn import nn, optim
from fusedrnn.nn.utils import clip_grad_norm_

# Pure-Python standard library modules: text every Python installation ships.
DEFAULT_SOURCES = ["argparse", "textwrap", "string", "json.decoder", "json.encoder", "dataclasses",
                   "functools", "enum", "fractions", "calendar", "difflib", "configparser",
                   "ipaddress", "statistics", "pathlib", "inspect", "typing", "shlex", "heapq", "bisect"]


def default_text():
    parts = []
    for name in DEFAULT_SOURCES:
        try:
            path = importlib.import_module(name).__file__
        except ImportError:
            continue
        if path and path.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    if not parts:
        raise SystemExit("no standard-library sources found; pass a text file")
    return "\n".join(parts)


class CharRNN(nn.Module):
    """Characters (T, B) -> logits over the vocabulary (T, B, V), carrying a recurrent state."""

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers, cell, dropout, rng):
        super().__init__()
        layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.embed = nn.Embedding(vocab_size, embedding_dim, rng=rng)
        self.rnn = layer(embedding_dim, hidden_size, num_layers,
                         dropout=dropout if num_layers > 1 else 0.0, rng=rng)
        self.head = nn.Linear(hidden_size, vocab_size, rng=rng)

    def forward(self, chars, state=None):
        output, state = self.rnn(self.embed(chars), state)
        return self.head(output), state

    def backward(self, grad_logits):
        grad_output = self.head.backward(grad_logits)
        # The gradient for the incoming state is dropped: truncated BPTT stops at the chunk edge.
        grad_embedded, _ = self.rnn.backward(grad_output)
        self.embed.backward(grad_embedded)


def streams(data, batch):
    """data cut into `batch` equal contiguous streams, time-major: (length, batch)."""
    length = len(data) // batch
    return np.ascontiguousarray(data[:length * batch].reshape(batch, length).T)


def unigram_entropy(data, vocab_size):
    """Entropy (nats) of the character frequencies: the loss of the best context-free model."""
    p = np.bincount(data, minlength=vocab_size) / len(data)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def evaluate(model, data, batch, seq_len):
    """Mean loss (nats/char) over held-out text, read as streams like the training text."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    stream = streams(data, batch)
    state, total = None, 0.0
    for start in range(0, len(stream) - 1, seq_len):
        chunk = stream[start:start + seq_len + 1]
        logits, state = model(chunk[:-1], state)
        total += float(loss_fn(logits.reshape(-1, logits.shape[-1]), chunk[1:].reshape(-1)))
    model.train()
    return total / ((len(stream) - 1) * batch)


def sample(model, chars, warmup, prime, length, temperature, rng):
    """Runs the model over `warmup` (character indices) and `prime` to set up its state, then draws
    `length` characters one at a time from softmax(logits / temperature).

    Training always carries the state across chunks, so the model rarely saw a zero state; a
    stretch of real text settles it first."""
    index = {c: i for i, c in enumerate(chars)}
    model.eval()
    prime = [c for c in prime if c in index]
    inputs = np.concatenate([warmup, [index[c] for c in prime]]).astype(np.int64)
    logits, state = model(inputs[:, None])                 # (T, 1): a batch of one
    out = []
    for _ in range(length):
        scaled = logits[-1, 0].astype(np.float64) / temperature
        p = np.exp(scaled - scaled.max())
        choice = rng.choice(len(chars), p=p / p.sum())
        out.append(chars[choice])
        logits, state = model(np.array([[choice]]), state)
    model.train()
    return "".join(prime) + "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text", nargs="?", help="a UTF-8 text file (default: stdlib sources)")
    parser.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    parser.add_argument("--embed", type=int, default=64, help="embedding size")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0, help="between layers (--layers > 1)")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams")
    parser.add_argument("--seq-len", type=int, default=64, help="BPTT chunk length")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="max gradient norm")
    parser.add_argument("--steps", type=int, default=2000, help="training steps (chunks)")
    parser.add_argument("--minutes", type=float, default=10.0, help="stop early after this long")
    parser.add_argument("--print-every", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--sample-len", type=int, default=500)
    parser.add_argument("--prime", default="\n\ndef ", help="text the sample starts with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distributed", action="store_true", help="data-parallel over MPI (under mpiexec)")
    args = parser.parse_args()
    rank, world = 0, 1
    if args.distributed:
        dist.init()
        rank, world = dist.rank(), dist.world_size()
    show = print if rank == 0 else (lambda *a, **k: None)

    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    else:
        text = default_text()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    # Every 20th block of 5,000 characters is held out, so that it samples the whole text.
    held = np.arange(len(data)) // 5000 % 20 == 19
    if held.sum() < args.batch * (args.seq_len + 1):   # a short text: hold out its last tenth instead
        held = np.arange(len(data)) >= len(data) * 9 // 10
    train, held_out = data[~held], data[held]
    baseline = unigram_entropy(train, len(chars))
    show(f"text: {len(text):,} characters, vocabulary {len(chars)}; "
         f"fusedrnn {fusedrnn.__version__}, {world} process(es) x {fusedrnn.get_num_threads()} threads")
    show(f"unigram entropy (context-free baseline): {baseline:.3f} nats/char "
          f"({baseline / math.log(2):.3f} bits)")

    rng = np.random.default_rng(args.seed)
    model = CharRNN(len(chars), args.embed, args.hidden, args.layers, args.cell, args.dropout, rng)
    if args.distributed:
        dist.broadcast_parameters(model)
    show(model)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    # The rate follows a cosine from lr down to lr / 10 over the run.
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps, eta_min=args.lr / 10)

    # This process's streams: its own `batch` of the world * batch streams of the training text.
    stream = streams(train, args.batch * world)[:, rank * args.batch:(rank + 1) * args.batch]
    position, state, step = 0, None, 0
    running, started = None, time.perf_counter()
    while step < args.steps and not out_of_time(started, args.minutes, args.distributed):
        if position + args.seq_len + 1 > len(stream):
            position, state = 0, None          # an epoch is over: start the streams afresh
        chunk = stream[position:position + args.seq_len + 1]
        position += args.seq_len

        logits, state = model(chunk[:-1], state)
        loss = float(loss_fn(logits.reshape(-1, len(chars)), chunk[1:].reshape(-1)))
        optimizer.zero_grad()
        model.backward(loss_fn.backward().reshape(logits.shape))
        if args.distributed:
            dist.allreduce_gradients(model)
        clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        scheduler.step()
        step += 1
        running = loss if running is None else 0.95 * running + 0.05 * loss   # smoothed for display
        if step % args.print_every == 0 or step == 1:
            shown = dist.allreduce(running) if args.distributed else running   # over every process's streams
            if rank == 0:
                line = (f"step {step:5d}  {time.perf_counter() - started:6.1f}s  "
                        f"train loss {shown:.3f}  lr {optimizer.param_groups[0]['lr']:.2e}")
                if step % (5 * args.print_every) == 0:
                    line += f"  held-out loss {evaluate(model, held_out, args.batch, args.seq_len):.3f}"
                print(line, flush=True)

    elapsed = time.perf_counter() - started
    if rank != 0:
        return
    final = evaluate(model, held_out, args.batch, args.seq_len)
    characters = step * args.batch * world * args.seq_len
    print(f"trained {step} steps ({characters:,} characters, {characters / elapsed:,.0f}/s) in {elapsed:.0f}s; "
          f"held-out loss {final:.3f} nats/char ({final / math.log(2):.3f} bits) vs unigram "
          f"{baseline:.3f}")
    print(f"--- sample (temperature {args.temperature}) ---")
    print(sample(model, chars, held_out[:200], args.prime, args.sample_len, args.temperature, rng))


def out_of_time(started, minutes, distributed):
    """Past the time limit; over MPI every process must stop at the same step, so rank 0's
    clock decides."""
    over = time.perf_counter() - started >= 60 * minutes
    return dist.broadcast_object(over) if distributed else over


if __name__ == "__main__":
    main()
