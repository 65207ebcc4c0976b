"""Real-time traffic forecasting on Apache Beam (METR-LA).

Installs the packages ``cli``, ``pipelines``, ``api``, ``transforms``,
``runners``, ``ml``, ``store``, ``kafka_client``, ``schemas`` and ``config`` and the
``traffic`` console command. Direct
dependencies are pinned here; ``requirements.lock`` pins the whole resolved
environment and is used as a constraints file by ``runners/bootstrap.sh``.
"""

from setuptools import Extension, find_packages, setup

INSTALL_REQUIRES = [
    # The pipeline SDK; gcp for gs:// paths and Dataflow, interactive for
    # analysts' notebooks, hadoop for hdfs:// through WebHDFS.
    "apache-beam[gcp,interactive,hadoop]==2.77.0",
    "confluent-kafka==2.16.1",  # Kafka producer/consumer/admin (librdkafka)
    "fastavro==1.13.1",  # Avro records in the Confluent wire format
    "pyarrow==25.0.1",  # Parquet feature tables and windowed outputs
    "numpy==2.4.6",
    "pandas==2.3.3",
    "tables==3.11.1",  # reads the full dataset's metr-la.h5 (pandas HDFStore)
    "scikit-learn==1.9.1",  # the forecasting models
    "threadpoolctl==3.8.0",  # caps the models' OpenMP threads per inference call
    "skops==0.16.0",  # safe model persistence (no pickle on load)
    "matplotlib==3.11.2",  # evaluation plots
    "pydantic==2.14.3",
    "pydantic-settings==2.16.3",  # typed settings from the environment
    "fastapi==0.165.0",
    "sse-starlette==3.7.0",
    "uvicorn[standard]==0.54.0",
    "prometheus-client==0.26.0",  # /metrics
    "httpx==0.28.1",  # Flink REST and WebHDFS health checks
    "tqdm==4.70.1",  # progress bars for replay, training and backfills
    "psutil==7.2.2",  # the platform's process trees, ports and memory
    "psycopg[binary]==3.3.9",  # the PostgreSQL store of actuals, predictions and scores (libpq in the wheel)
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest==9.2.0",
        "pytest-timeout==2.4.0",
        "hypothesis==6.170.15",  # property-based tests of validation
        "playwright==1.65.2",  # the dashboard's browser test (drives Debian's Chromium)
        "schemathesis==4.32.5",  # fuzzes the live API against its OpenAPI contract (tests/api/test_contract.py)
        "ruff==0.17.5",
        "PyYAML==6.0.3",  # reads generated Flink/compose YAML in tests
        "import-linter==2.17",  # tests/test_import_floors.py: imports run downward only, no cycles
    ],
}

setup(
    name="traffic-forecast",
    version="0.1.0",
    description="Real-time METR-LA traffic forecasting with Apache Beam, Kafka, Flink and scikit-learn",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["cli*", "pipelines*", "api*", "transforms*", "runners*", "ml*", "store*", "kafka_client*",
                 "schemas*", "config*"]
    ),
    package_data={
        "schemas": ["avro/*.avsc", "avro/history/*/*.avsc", "schema_ids.json"],
        "runners": ["pom.xml", "bootstrap.sh", "conf/*"],
        "store": ["migrations/*.sql"],
        "api": ["static/*", "static/**/*"],
    },
    # Every tree of a gradient-boosting model walked in one compiled call (ml/compiled_trees.py), and a
    # perceptron's dense layers summed row by row (ml/rowwise_mlp.py). No fast-math and no contraction into
    # fused multiply-adds: NaN compares as IEEE 754 says, and every sum keeps its order and its roundings.
    ext_modules=[Extension(f"ml.{name}", [f"ml/{name}.c"], extra_compile_args=["-O3", "-ffp-contract=off"])
                 for name in ("_tree_walk", "_row_matmul")],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["traffic=cli.main:main"]},
)
