"""``python -m jaxdepth.train``: the command line lives in `jaxdepth.cli.train`, the library in `jaxdepth.training`."""
from .cli.train import build_parser, main  # noqa: F401
from .training import *  # noqa: F401,F403  (the names this module used to define)

if __name__ == "__main__":
    raise SystemExit(main())
