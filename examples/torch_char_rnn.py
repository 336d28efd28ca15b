"""The classic PyTorch character-level language model, in plain PyTorch.

Embedding -> nn.LSTM (or GRU / RNN with --cell) -> Linear, CrossEntropyLoss and Adam, truncated
backpropagation through time with ``hidden.detach()`` between chunks, gradient clipping, and
sampling with ``torch.multinomial``. With ``--fusedrnn`` one line changes: the recurrent layer
comes from ``fusedrnn.torch.nn`` instead of ``torch.nn``; everything else is PyTorch's.

    python examples/torch_char_rnn.py                      # torch.nn, on Python's standard library
    python examples/torch_char_rnn.py --fusedrnn           # the same program on fusedrnn's kernels
    python examples/torch_char_rnn.py input.txt --cell gru --steps 2000 --fusedrnn
"""

import argparse
import importlib
import time

import torch
from torch import nn

DEFAULT_SOURCES = ["argparse", "textwrap", "string", "json.decoder", "dataclasses", "functools", "enum",
                   "fractions", "calendar", "difflib", "configparser", "statistics", "pathlib", "shlex"]


def default_text():
    parts = []
    for name in DEFAULT_SOURCES:
        path = getattr(importlib.import_module(name), "__file__", None)
        if path and path.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    return "\n".join(parts)


class CharModel(nn.Module):
    def __init__(self, recurrent, cell, vocab_size, embed, hidden, layers, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        layer = {"lstm": recurrent.LSTM, "gru": recurrent.GRU, "rnn": recurrent.RNN}[cell]
        self.rnn = layer(embed, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, chars, hidden=None):           # chars (T, B) -> logits (T, B, V)
        output, hidden = self.rnn(self.embed(chars), hidden)
        return self.head(output), hidden


def detach(hidden):
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def batches(data, batch, seq_len):
    """Yields (inputs, targets) chunks of `batch` parallel streams, forever, in order."""
    streams = data[: len(data) // batch * batch].view(batch, -1).t().contiguous()   # (N, B)
    while True:
        for start in range(0, streams.size(0) - seq_len - 1, seq_len):
            yield streams[start:start + seq_len], streams[start + 1:start + seq_len + 1]


@torch.no_grad()
def sample(model, chars, stoi, length, temperature, generator):
    model.eval()
    hidden, out = None, [chars[0]]
    x = torch.tensor([[stoi[chars[0]]]])
    for _ in range(length):
        logits, hidden = model(x, hidden)
        probs = torch.softmax(logits[-1, 0] / temperature, dim=-1)
        x = torch.multinomial(probs, 1, generator=generator).view(1, 1)
        out.append(chars[x.item()])
    model.train()
    return "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", help="a UTF-8 text file (default: Python's own sources)")
    parser.add_argument("--fusedrnn", action="store_true", help="the recurrent layer from fusedrnn.torch.nn")
    parser.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--print-every", type=int, default=50)
    parser.add_argument("--sample-len", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.fusedrnn:
        from fusedrnn.torch import nn as recurrent   # the one line that changes
    else:
        recurrent = nn
    torch.manual_seed(args.seed)
    text = open(args.text, encoding="utf-8").read() if args.text else default_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)

    model = CharModel(recurrent, args.cell, len(chars), args.embed, args.hidden, args.layers, args.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    print(f"{len(text):,} characters, {len(chars)} distinct | {args.cell} from "
          f"{'fusedrnn.torch.nn' if args.fusedrnn else 'torch.nn'}, {args.layers} layer(s) of {args.hidden}")

    hidden, start, stream = None, time.perf_counter(), batches(data, args.batch, args.seq_len)
    for step in range(1, args.steps + 1):
        inputs, targets = next(stream)
        if hidden is not None:
            hidden = detach(hidden)                     # truncated BPTT: no gradient across chunks
        logits, hidden = model(inputs, hidden)
        loss = loss_fn(logits.view(-1, len(chars)), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.print_every == 0 or step == 1:
            elapsed = time.perf_counter() - start
            print(f"step {step:5d}  loss {loss.item():.4f} nats/char  {elapsed / step * 1e3:.1f} ms/step")
    generator = torch.Generator().manual_seed(args.seed)
    print("sample:", sample(model, chars, stoi, args.sample_len, 0.8, generator))


if __name__ == "__main__":
    main()
