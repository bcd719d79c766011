"""A real backend whose output is poisoned after the engine ran, as a dtype overflow would leave it."""

import numpy as np

from mteb_vllm.backends import BackendLayer


class Overflowing(BackendLayer):
    """Delegates to a running backend, then writes ``value`` into ``row`` of its output and reports ``dtype``."""

    def __init__(self, inner, dtype, row, value=np.inf):
        super().__init__(inner)
        self._dtype, self.row, self.value = dtype, row, value

    @property
    def dtype(self):
        return self._dtype

    def pool(self, inputs, task, desc=""):
        out = self.inner.pool(inputs, task, desc=desc)
        out[self.row] = self.value
        return out
