"""Build script for pocketrec.

The top-level folders ``core/ native/ runtime/ converter/ storage/ server/`` install as
subpackages of ``pocketrec`` through ``package_dir``; nothing installs a top-level ``core``.
The C top-k kernel is a cffi extension built from ``native/csrc`` against Python's stable ABI, so
``pip wheel .`` gives one ``cp310-abi3`` wheel per platform that installs on CPython 3.10 and later
without a compiler. The extension is optional: where it cannot be compiled the package still
installs and ``auto`` falls back (with one warning at run time) to numba when the ``numba`` extra is
installed, else to the numpy reference.
"""

from pathlib import Path

from setuptools import setup

SUBPACKAGES = ["core", "native", "runtime", "converter", "storage", "server"]

setup(
    name="pocketrec",
    version="0.1.0",
    description="Embedded on-device recommender: a TFLite step model and native top-k kernels.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["pocketrec"]
    + [f"pocketrec.{name}" for name in SUBPACKAGES]
    + ["pocketrec.runtime.sync"],
    package_dir={"pocketrec": "pocketrec", **{f"pocketrec.{n}": n for n in SUBPACKAGES}},
    package_data={"pocketrec": ["py.typed"]},
    include_package_data=False,
    zip_safe=False,
    setup_requires=["cffi>=1.17"],
    cffi_modules=["native/csrc/build_cffi.py:ffibuilder"],
    install_requires=[
        "numpy>=1.23",
        "cffi>=1.17",
        "sqlite-utils>=3.35",
        # verifies the Ed25519 signature of bundle updates (imported only by sync)
        "cryptography>=42",
        # TFLite interpreter: ai-edge-litert by default. tflite-runtime (numpy<2 only) is accepted
        # instead when it is installed; the runtime tries ai_edge_litert, then tflite_runtime.
        "ai-edge-litert>=1.0; platform_system != 'Windows'",
    ],
    extras_require={
        # the compiled fallback top-k backend where the C extension cannot be built (~210 MB with
        # llvmlite; the device install does without it)
        "numba": ["numba>=0.58"],
        # pyarrow: `pocketrec train --data` reads a Parquet feedback export
        "convert": ["tensorflow-cpu>=2.16", "pyarrow>=15"],
        # pyarrow: `pocketrec export-feedback --format parquet`; orjson: reads upload bodies and
        # writes each batch's rows for PostgreSQL (ten times faster than the json module)
        "server": [
            "starlette>=0.40",
            "uvicorn>=0.30",
            "prometheus-client>=0.20",
            "cryptography>=42",
            "pyarrow>=15",
            "orjson>=3.9",
        ],
        # `pocketrec serve --db postgresql://...`: psycopg 3 and its connection pool
        "postgres": ["psycopg[binary]>=3.1", "psycopg-pool>=3.2", "orjson>=3.9"],
        # `pocketrec demo`: trains, serves and plots the whole loop
        "demo": [
            "tensorflow-cpu>=2.16",
            "starlette>=0.40",
            "uvicorn>=0.30",
            "prometheus-client>=0.20",
            "matplotlib>=3.8",
            "pyarrow>=15",
            "orjson>=3.9",
        ],
        "dev": [
            # the kernel tests compare every backend
            "numba>=0.58",
            # the converter's tests train and convert real models
            "tensorflow-cpu>=2.16",
            # the sync tests run the real server on loopback, on SQLite and PostgreSQL
            "starlette>=0.40",
            "uvicorn>=0.30",
            "prometheus-client>=0.20",
            # property-based tests of the server against its OpenAPI document
            "schemathesis>=4",
            "psycopg[binary]>=3.1",
            "psycopg-pool>=3.2",
            "orjson>=3.9",
            "matplotlib>=3.8",
            # the Parquet export and its readers (a feature job reads it with DuckDB)
            "pyarrow>=15",
            "duckdb>=1.0",
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
        ],
        "bench": ["faiss-cpu>=1.8"],
    },
    # cffi compiles the extension with Py_LIMITED_API; this tags the wheel abi3 to match.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    entry_points={"console_scripts": ["pocketrec=pocketrec.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C",
        "Operating System :: POSIX :: Linux",
        "Operating System :: MacOS",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
)
