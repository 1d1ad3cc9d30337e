"""opal: a CPU inference runtime for ONNX models whose operators are plugins.

    import numpy as np, opal
    session = opal.InferenceSession("model.onnx")
    outputs = session.run(None, {"x": np.zeros((1, 16), np.float32)})

`InferenceSession` is used as onnxruntime's is; `Deployment` loads a deployment file, with
sessions on its models and plugin reloads; `opal.backend` is an ONNX backend
(`onnx.backend.base.Backend`). Plugins come from the deployment (by default the workspace's
plugins, found beside the build this package came from or in $OPAL_PLUGIN_PATH) and from the
`plugins=` argument. Every error is an `OpalError`.
"""

from ._opal import (
    ConfigError,
    Deployment,
    InferenceSession,
    InputError,
    ModelError,
    NodeArg,
    OpalError,
    PluginError,
    RunError,
    plugin_search_path,
)

__all__ = [
    "ConfigError",
    "Deployment",
    "InferenceSession",
    "InputError",
    "ModelError",
    "NodeArg",
    "OpalError",
    "PluginError",
    "RunError",
    "plugin_search_path",
]
