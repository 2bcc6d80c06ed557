"""The C extensions: the OTLP decoder and the mapping's look-ups. setuptools has no stable pyproject.toml
form for extensions yet, so they are declared here; everything else is in pyproject.toml.

Optional: without a C compiler the install still succeeds, and decode.py and mapping/lookup.py use their
Python reference versions (about 40% of the speed; `serve` says which it uses at startup).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("otel_bridge._decode", ["otel_bridge/_decode.c"], depends=["otel_bridge/_text.h"], optional=True),
        Extension("otel_bridge._lookup", ["otel_bridge/_lookup.c"], depends=["otel_bridge/_text.h"], optional=True),
    ]
)
