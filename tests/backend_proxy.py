"""A real backend whose output is poisoned after the engine ran, as a dtype overflow would leave it."""

import numpy as np


class Overflowing:
    """Delegates to a running backend, then writes ``value`` into ``row`` of its output and reports ``dtype``."""

    def __init__(self, inner, dtype, row, value=np.inf):
        self.inner, self.dtype, self.row, self.value = inner, dtype, row, value
        self.tokenizer, self.max_model_len = inner.tokenizer, inner.max_model_len

    def pool(self, inputs, task, desc=""):
        out = self.inner.pool(inputs, task, desc=desc)
        out[self.row] = self.value
        return out
