"""The operator families of the ONNX bridge; importing this package registers them all in
:data:`.registry.OPS`."""

from pytest_hepguard.models.onnx.ops import (  # noqa: F401  (imported to register their operators)
    attention,
    conv,
    elementwise,
    index,
    math,
    norm,
    reduce,
    rnn,
    shape,
)
