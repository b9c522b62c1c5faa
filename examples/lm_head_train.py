"""Train a small next-token model on CPU with a fused LM head (a few seconds).

The model embeds the previous ``context`` tokens, mixes them with an MLP into a
hidden state h (N, D), and predicts the next token through
``fastloss.torch.LinearCrossEntropyLoss``: the vocabulary projection and its
cross-entropy in row chunks, without the N x V logits. Swapping it for
``torch.nn.LinearCrossEntropyLoss`` (``--head torch``) is the one-line change;
the state_dicts are interchangeable.

The data is a synthetic corpus from a random sparse bigram source, so the
loss has a known floor (the source's entropy) to train towards.

    PYTHONPATH=. python examples/lm_head_train.py [--steps 150] [--vocab 4096] [--head torch]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import fastloss
import fastloss.torch as ft


def corpus(vocab, length, branching, seed=0):
    """Tokens from a random bigram source: each token has ``branching`` possible
    successors with random probabilities."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, vocab, (vocab, branching))
    probs = rng.dirichlet(np.full(branching, 0.5), vocab)
    tokens = np.empty(length, np.int64)
    tokens[:2] = rng.integers(0, vocab, 2)
    for i in range(2, length):
        row = tokens[i - 1]
        tokens[i] = succ[row, rng.choice(branching, p=probs[row])]
    entropy = float(-np.mean(np.sum(probs * np.log(probs), axis=1)))
    return torch.from_numpy(tokens), entropy


class NextToken(torch.nn.Module):
    def __init__(self, vocab, dim, context, head):
        super().__init__()
        self.context = context
        self.embed = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Sequential(torch.nn.Linear(context * dim, 2 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(2 * dim, dim), torch.nn.LayerNorm(dim))
        loss_cls = ft.LinearCrossEntropyLoss if head == "fastloss" else \
            torch.nn.LinearCrossEntropyLoss
        self.head = loss_cls(dim, vocab, bias=False)  # the one line that changes

    def forward(self, windows, target):
        h = self.mix(self.embed(windows).flatten(1))
        return self.head(h, target)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--context", type=int, default=2)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--head", choices=["fastloss", "torch"], default="fastloss")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(fastloss.get_num_threads())
    tokens, floor = corpus(args.vocab, 200_000, branching=4)
    model = NextToken(args.vocab, args.dim, args.context, args.head)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.arange(args.context)
    rng = torch.Generator().manual_seed(1)
    print(f"vocab {args.vocab}, dim {args.dim}, batch {args.batch}, head {args.head}; "
          f"uniform loss {math.log(args.vocab):.2f}, source entropy {floor:.2f}")
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        start = torch.randint(0, len(tokens) - args.context - 1, (args.batch,), generator=rng)
        windows = tokens[start[:, None] + idx]
        target = tokens[start + args.context]
        loss = model(windows, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.perf_counter() - t0:5.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
