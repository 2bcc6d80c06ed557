"""The C extensions: the OTLP decoder and the mapping's look-ups. setuptools has no stable pyproject.toml
form for extensions yet, so they are declared here; everything else is in pyproject.toml.

Optional: without a C compiler the install still succeeds, and decode/reference.py and mapping/lookup.py are their
Python reference versions (about 40% of the speed; `serve` says which it uses at startup).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "otel_bridge.decode._decode",
            ["otel_bridge/decode/_decode.c"],
            depends=["otel_bridge/decode/_text.h", "otel_bridge/decode/_otlp_fields.h"],
            optional=True,
        ),
        Extension(
            "otel_bridge.mapping._lookup",
            ["otel_bridge/mapping/_lookup.c"],
            include_dirs=["otel_bridge/decode"],  # _text.h, shared with the decoder
            depends=["otel_bridge/decode/_text.h"],
            optional=True,
        ),
    ]
)
