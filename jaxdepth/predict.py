"""``python -m jaxdepth.predict``: the predict command line (`jaxdepth.cli.predict`; also ``jaxdepth-predict``)."""
from .cli.predict import build_parser, main, predict_images  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
