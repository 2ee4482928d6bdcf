# The Airflow image of the docker-compose stack: the official Airflow 3 image with this provider installed
# from the repository (build context: the repository root; see docker-compose.yaml).
#
#   docker build -f docker/airflow.Dockerfile -t airflow-provider-duckling:local .
#
# Only the files below are sent to the build (docker/airflow.Dockerfile.dockerignore), not .venv or data.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

# The source tree (pip builds in it), the registry's mount point and the shared state volume's directory
# (a new named volume takes this directory's owner), all owned by the image's airflow user.
USER root
RUN mkdir -p /opt/duckling/src /opt/airflow/duckling /opt/airflow/duckling-state \
 && chown -R airflow:0 /opt/duckling /opt/airflow/duckling /opt/airflow/duckling-state
USER airflow

COPY --chown=airflow:0 setup.cfg pyproject.toml README.md constraints.txt /opt/duckling/src/
COPY --chown=airflow:0 airflow_provider_duckling /opt/duckling/src/airflow_provider_duckling

# pip builds a wheel from /opt/duckling/src (PEP 517, in an isolated environment with pyproject.toml's pinned
# setuptools: the same build, from the same files, as tests/test_wheel_install.py) and installs it non-editably,
# without the embedded engine (the stack has a ClickHouse server), at the exact versions of constraints.txt, the
# set the tests ran. On another Airflow base image, build with --build-arg CONSTRAINTS= (pip then resolves
# setup.cfg's lower bounds against that image's Airflow). Then check that what the stack's one-shot services
# and workers need is importable, so a broken install fails the build, not a task.
ARG CONSTRAINTS=/opt/duckling/src/constraints.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/duckling/src ${CONSTRAINTS:+-c "$CONSTRAINTS"} \
 && python -c "from airflow_provider_duckling.demo.sample_data import schema_statements; assert schema_statements(), 'no schema SQL'" \
 && python -c "from airflow_provider_duckling.hooks.ducklake import connect_duckdb; connect_duckdb().close()"

# The generated DAGs (one file: registry -> factory); the registry itself is mounted by docker-compose.yaml.
COPY --chown=airflow:0 dags/duckling_backfill.py /opt/airflow/dags/duckling_backfill.py
