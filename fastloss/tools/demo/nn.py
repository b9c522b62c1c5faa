"""A tiny NumPy network for the demo: dense layers with hand-written backward.

Layers compute in the parameters' dtype; only the loss and the optimizer go
through fastloss, so the demo can time the two parts separately.
"""
from __future__ import annotations

import numpy as np


class MLP:
    """x -> [Dense -> ReLU]* -> Dense. ``params`` and ``grads`` are parallel lists."""

    def __init__(self, sizes, rng, dtype=np.float32):
        self.params, self.grads = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype)
            b = np.zeros(fan_out, dtype)
            self.params += [w, b]
            self.grads += [np.zeros_like(w), np.zeros_like(b)]
        self._cache = []

    def forward(self, x):
        self._cache = []
        n_layers = len(self.params) // 2
        for k in range(n_layers):
            w, b = self.params[2 * k], self.params[2 * k + 1]
            self._cache.append(x)
            x = x @ w + b
            if k < n_layers - 1:
                x = np.maximum(x, 0)
        return x

    def backward(self, dout):
        """Fill ``self.grads`` from d(loss)/d(output)."""
        n_layers = len(self.params) // 2
        for k in reversed(range(n_layers)):
            x = self._cache[k]
            np.matmul(x.T, dout, out=self.grads[2 * k])
            np.sum(dout, axis=0, out=self.grads[2 * k + 1])
            if k:
                dout = dout @ self.params[2 * k].T
                dout *= self._cache[k] > 0  # ReLU of the layer below
