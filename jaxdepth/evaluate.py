"""``python -m jaxdepth.evaluate``: the evaluate command line (`jaxdepth.cli.evaluate`; also ``jaxdepth-evaluate``).

The library lives in `jaxdepth.inference` (predictor, resizing) and `jaxdepth.evaluation` (the protocol);
the names below are re-exported for code written against the old module.
"""
from .cli.evaluate import build_parser, main  # noqa: F401
from .evaluation import evaluate  # noqa: F401
from .inference import Predictor, make_predictor, resize_batch, upsample_depth  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
