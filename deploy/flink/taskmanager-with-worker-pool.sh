#!/usr/bin/env bash
# A Flink TaskManager with Beam's Python SDK worker pool beside it, in one container.
#
#   taskmanager-with-worker-pool.sh [-D key=value ...]   (arguments go to taskmanager.sh)
#
# Why one container: for --environment_type=EXTERNAL the TaskManager hands the
# worker pool the addresses of its own gRPC services (control, data, state,
# logging, artifacts, provisioning), and Beam's Java harness advertises them as
# localhost:<port>. The pool must therefore share the TaskManager's network
# namespace, and `docker compose up --scale flink-taskmanager=N` must scale both
# together. Pipelines use --environment_config=localhost:${BEAM_WORKER_POOL_PORT}.
#
# The pool starts each SDK worker through Beam's `boot` binary (as the official
# apache/beam_python3.11_sdk image does with --worker_pool), so every worker
# receives the pipeline options (HDFS settings among them).
# If either process exits, the other is stopped and the container exits with
# the first one's status, so Docker's restart policy restarts the pair.
set -uo pipefail

pool_port="${BEAM_WORKER_POOL_PORT:-50000}"
boot="${BEAM_BOOT:-/opt/apache/beam/boot}"

python -m apache_beam.runners.worker.worker_pool_main \
  --service_port="${pool_port}" --container_executable="${boot}" &
pool_pid=$!

"${FLINK_HOME:-/opt/flink}/bin/taskmanager.sh" start-foreground "$@" &
tm_pid=$!

stop_both() {
  kill -TERM "${pool_pid}" "${tm_pid}" 2>/dev/null || true
}
trap 'stop_both' TERM INT

wait -n "${pool_pid}" "${tm_pid}"
status=$?
echo "taskmanager-with-worker-pool: a process exited with status ${status}; stopping the other" >&2
stop_both
wait
exit "${status}"
