"""Opt-in ``torch.compile`` for a module's network, shared by the graph potentials and TrajCast.

The network is compiled lazily, on its first call, so that a model moved to another device or
dtype first compiles for that one. Compiled code does not deep-copy or pickle: a copy (the
training's weight average, a model sent to another rank) compiles its own on first use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class LazyCompile:
    """Mixin for a ``torch.nn.Module`` with one network method worth compiling.

    :meth:`use_compile` switches compilation on or off; the module calls
    ``self._compiled_or_eager(self.method)`` where it runs the network.
    """

    _compile_options: dict | None = None
    _compiled: Callable | None = None

    def use_compile(self, enabled: bool = True, **options):
        """Run the network through ``torch.compile(**options)``, default ``dynamic=True`` (edge
        and walker counts change from call to call). Compilation happens on the first call
        (seconds to minutes); results equal the eager network's to rounding. Returns self."""
        self._compile_options = {"dynamic": True, **options} if enabled else None
        self._compiled = None
        return self

    @property
    def compiled(self) -> bool:
        """Whether the network runs through ``torch.compile`` (:meth:`use_compile`)."""
        return self._compile_options is not None

    def _compiled_or_eager(self, network: Callable) -> Callable:
        """``network`` compiled with the options of :meth:`use_compile` (built on first use and
        kept), or ``network`` itself when compilation is off."""
        if self._compile_options is None:
            return network
        if self._compiled is None:
            self._compiled = torch.compile(network, **self._compile_options)
        return self._compiled

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_compiled", None)  # a copy compiles its own
        return state
