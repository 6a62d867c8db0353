"""Builds the optional native multi-scalar multiplication (``referendum_core._secp256k1``).

Everything else is configured in pyproject.toml. The extension is optional: without a C
compiler the build goes on and the core uses its pure-Python verification path
(``REFERENDUM_VERIFY_BACKEND``, docs/crypto.md §8).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "referendum_core._secp256k1",
            sources=["native/secp256k1_msm.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,
        )
    ]
)
