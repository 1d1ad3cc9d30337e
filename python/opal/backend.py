"""opal as an ONNX backend (`onnx.backend.base.Backend`), so that the official backend tests
run against it:

    import onnx.backend.test, opal.backend
    globals().update(onnx.backend.test.BackendTest(opal.backend, __name__).test_cases)

Models are prepared on one engine with the default deployment's plugins, shared by every
prepared model. opal runs on the CPU only.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from . import Deployment, InferenceSession


@functools.lru_cache(maxsize=None)
def _deployment() -> Deployment:
    """The default deployment's plugins, loaded on first use: they serve every prepared model."""
    return Deployment(models=False)


class OpalRep(BackendRep):
    """A prepared model: its inputs are given in the graph's order."""

    def __init__(self, session: InferenceSession):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feed = dict(zip(self.input_names, inputs))
        # opal reads C-contiguous arrays in place; the backend tests also pass views, numpy
        # scalars, and lists of them for sequences.
        feed = {name: _contiguous(value) for name, value in feed.items()}
        return tuple(self.session.run(None, feed))


def _contiguous(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_contiguous(element) for element in value]
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
        return np.ascontiguousarray(value)
    return value


class OpalBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto | bytes | str, device: str = "CPU", **kwargs: Any) -> OpalRep:
        if not cls.supports_device(device):
            raise ValueError(f"opal runs on the CPU, not on {device}")
        if isinstance(model, onnx.ModelProto):
            model = model.SerializeToString()
        return OpalRep(InferenceSession(model, config=_deployment()))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


is_compatible = OpalBackend.is_compatible
prepare = OpalBackend.prepare
run_model = OpalBackend.run_model
run_node = OpalBackend.run_node
supports_device = OpalBackend.supports_device

__all__: Sequence[str] = ["OpalBackend", "OpalRep", "is_compatible", "prepare", "run_model", "run_node", "supports_device"]
