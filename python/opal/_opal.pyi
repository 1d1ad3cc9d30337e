"""Type stubs of opal's extension module (re-exported by the `opal` package)."""

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

_Path = Union[str, os.PathLike[str]]
_Value = Union[np.ndarray, list[np.ndarray], None]
"""An input or output: a tensor's array, a sequence's arrays, or None for an optional without a value."""

class OpalError(Exception):
    """Base class of every error opal raises."""

class ConfigError(OpalError):
    """A deployment file, or a setting given instead of one, that cannot be used."""

class PluginError(OpalError):
    """A plugin that cannot be loaded, conflicts with another, or whose reload was refused."""

class ModelError(OpalError):
    """A model that cannot be loaded or compiled with the loaded plugins."""

class InputError(OpalError):
    """Inputs or output names a run cannot take: a wrong name, element type or shape, or an
    array that is not C-contiguous."""

class RunError(OpalError):
    """A run that failed in a kernel, or ran out of memory."""

class NodeArg:
    """A model's input or output, as onnxruntime's `NodeArg` describes it."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> list[Union[int, str, None]]:
        """Dims: an int where fixed, the symbol's name where named, None where unknown."""
    @property
    def type(self) -> str:
        """`tensor(float)`, `tensor(int64)`, ..."""

class InferenceSession:
    """A model loaded on an engine, ready to run."""

    def __init__(
        self,
        model: Union[_Path, bytes],
        plugins: Optional[Sequence[_Path]] = None,
        config: Union[_Path, "Deployment", None] = None,
        threads: Optional[int] = None,
    ) -> None:
        """`model`: a path or the model's bytes. `plugins`: plugin files loaded besides the
        deployment's. `config`: a deployment file (the embedded default when absent) or an
        `opal.Deployment`, whose engine the session then shares. `threads`: threads kernels
        may use (the deployment's `engine.threads` when absent)."""
    def run(
        self, output_names: Optional[Sequence[str]], input_feed: dict[str, _Value]
    ) -> list[_Value]:
        """Runs the model on `input_feed` and returns the outputs named in `output_names`
        (all of them when None or empty), in that order, as new arrays. The GIL is released
        while the model runs; C-contiguous inputs are read in place. A sequence is a list of
        arrays; an optional without a value is None."""
    def get_inputs(self) -> list[NodeArg]: ...
    def get_outputs(self) -> list[NodeArg]: ...
    def memory_stats(self) -> dict[str, Any]:
        """The engine's statistics block: `current_bytes`, `peak_bytes`,
        `tracked_allocations`, `pooled_tensors`, `pooled_bytes`, `pool_hits`, `pool_misses`,
        `pool_bypassed`, `pool_hit_rate`, `active_operators`, `owners` and `plugins` (name ->
        bytes now and at peak)."""

class Deployment:
    """A deployment file loaded: its plugins, and a pool of sessions per model it declares."""

    def __init__(self, path: Optional[_Path] = None, *, models: bool = True) -> None:
        """Loads the deployment at `path` (the embedded default when absent): its plugins, and
        every model it declares unless `models` is False."""
    @property
    def path(self) -> os.PathLike[str]: ...
    def models(self) -> list[str]: ...
    def session(self, name: str) -> InferenceSession: ...
    def plugins(self) -> list[dict[str, Any]]:
        """Each loaded plugin: `name`, `version`, `abi`, `file`, `operators`."""
    def reload_plugin(self, name: str) -> dict[str, Any]:
        """Reloads plugin `name` from its file while sessions keep running, once it gives the
        same outputs on the deployment's models: `plugin`, `old_version`, `new_version`,
        `file`, `models_checked`."""
    def memory_stats(self) -> dict[str, Any]: ...

def plugin_search_path() -> list[os.PathLike[str]]:
    """The directories bare plugin file names are searched in."""
