#!/usr/bin/env bash
# Submit (or resume) an hwnas search as a Ray job.
#
#   cluster/submit.sh RUN_ID [hwnas search flags...]
#   cluster/submit.sh digits-0 --space seed-cnn --dataset digits --targets 0.08,0.2 --seeds 0,1
#
# Environment:
#   RAY_ADDRESS     the cluster's dashboard / Jobs API (default http://127.0.0.1:8265)
#   HWNAS_STORAGE   a folder mounted at the same path on every node (default /mnt/shared/hwnas);
#                   the run folder is $HWNAS_STORAGE/runs/RUN_ID
#   HWNAS_NO_WAIT   1: return once the job is submitted instead of following its logs
#   HWNAS_ENTRYPOINT_NUM_GPUS  GPUs to reserve for the driver process (ray job submit
#                   --entrypoint-num-gpus); not needed for sweeps, whose shards ask Ray for GPUs
#                   themselves (--gpus-per-shard)
#   HWNAS_INSTALL   pip (default): the job installs hwnas and its dependencies from the uploaded
#                   working dir (runtime_env.yaml `pip`), for stock rayproject/ray clusters;
#                   image: the cluster's image already has them (cluster/Dockerfile): nothing is
#                   installed, the code still comes from the upload
#   PYTHON          a Python with ray installed, used to look up existing jobs (default python3)
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token: the cluster's token; when one is
#                   found and RAY_AUTH_MODE is unset, this script sets RAY_AUTH_MODE=token (the Ray
#                   CLI only sends the token when it is set)
#
# The submission id is RUN_ID. Submitting the same RUN_ID again resumes the run: the search reads
# back finished shards and resumes the others from their per-epoch checkpoints in the run folder.
# Ray never reuses a submission id, so while a job of this run is PENDING or RUNNING the script
# follows its logs instead of submitting; once it has ended, the resumed job gets the id RUN_ID-r2,
# RUN_ID-r3, ... (the first free one) and the same run folder.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage 0
[[ $# -ge 1 && -n "$1" && "$1" != -* ]] || usage
RUN_ID="$1"
shift
[[ "$RUN_ID" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || {
  echo "submit.sh: RUN_ID must be letters, digits, '.', '_' or '-' (got '$RUN_ID')" >&2
  exit 2
}
for arg in "$@"; do
  if [[ "$arg" == --out || "$arg" == --out=* ]]; then
    echo "submit.sh: do not pass --out; the run folder is \$HWNAS_STORAGE/runs/$RUN_ID" >&2
    exit 2
  fi
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
HWNAS_STORAGE="${HWNAS_STORAGE:-/mnt/shared/hwnas}"
HWNAS_STORAGE="${HWNAS_STORAGE%/}"
RUN_DIR="$HWNAS_STORAGE/runs/$RUN_ID"
PYTHON="${PYTHON:-python3}"
HWNAS_INSTALL="${HWNAS_INSTALL:-pip}"
[[ "$HWNAS_INSTALL" == pip || "$HWNAS_INSTALL" == image ]] || {
  echo "submit.sh: HWNAS_INSTALL must be pip (stock Ray clusters) or image (got '$HWNAS_INSTALL')" >&2
  exit 2
}

if [[ -z "${RAY_AUTH_MODE:-}" ]] &&
  [[ -n "${RAY_AUTH_TOKEN:-}" || -n "${RAY_AUTH_TOKEN_PATH:-}" || -f "$HOME/.ray/auth_token" ]]; then
  export RAY_AUTH_MODE=token
fi

command -v ray >/dev/null && "$PYTHON" -c 'import ray.job_submission' 2>/dev/null || {
  echo "submit.sh: needs the 'ray' CLI and a \$PYTHON ($PYTHON) that imports ray;" \
    "pip install 'ray[default,train]==2.60.0'" >&2
  exit 1
}

# Decide what to do from the jobs of this run already known to the cluster. Prints one line:
# "follow ID STATUS" (a job of this run is still pending or running) or "submit ID".
plan="$("$PYTHON" - "$RUN_ID" <<'EOF'
import os
import re
import sys

from ray.job_submission import JobStatus, JobSubmissionClient

run_id = sys.argv[1]
try:
    listed = JobSubmissionClient(os.environ["RAY_ADDRESS"]).list_jobs()
except Exception as err:  # connection refused, 401/403 (token), ...
    sys.exit(f"submit.sh: {type(err).__name__}: {err}")
pattern = re.compile(re.escape(run_id) + r"(?:-r(\d+))?")
jobs = {}
for job in listed:
    m = pattern.fullmatch(job.submission_id or "")
    if m:
        jobs[int(m.group(1) or 1)] = job
live = [n for n, job in jobs.items() if job.status in (JobStatus.PENDING, JobStatus.RUNNING)]
if live:
    job = jobs[max(live)]
    print("follow", job.submission_id, job.status.value)
else:
    n = 1
    while n in jobs:
        n += 1
    print("submit", run_id if n == 1 else f"{run_id}-r{n}")
EOF
)" || {
  echo "submit.sh: could not list the jobs at $RAY_ADDRESS (is the cluster up, is the token right?)" >&2
  exit 1
}
read -r action job_id job_status <<<"$plan"

echo "run folder:    $RUN_DIR"
if [[ "$action" == follow ]]; then
  echo "submission id: $job_id (already $job_status; following its logs instead of submitting again)"
  if [[ "${HWNAS_NO_WAIT:-0}" == 1 ]]; then
    exit 0
  fi
  ray job logs --address "$RAY_ADDRESS" --follow "$job_id"
  final="$("$PYTHON" -c 'import os, sys
from ray.job_submission import JobSubmissionClient
print(JobSubmissionClient(os.environ["RAY_ADDRESS"]).get_job_status(sys.argv[1]).value)' "$job_id")"
  echo "job $job_id: $final"
  [[ "$final" == SUCCEEDED ]]
  exit
fi

echo "submission id: $job_id"
# The runtime env: runtime_env.yaml, without `pip` for image clusters; with pip, a comment line naming the
# hash of pyproject.toml, so that Ray builds a new environment when the dependencies change.
runtime_env="$("$PYTHON" - "$HERE/runtime_env.yaml" "$ROOT/pyproject.toml" "$HWNAS_INSTALL" <<'EOF'
import hashlib
import json
import sys

import yaml

env_file, pyproject, install = sys.argv[1:]
with open(env_file) as f:
    env = yaml.safe_load(f)
if install == "image":
    env.pop("pip", None)
else:
    with open(pyproject, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    env["pip"]["packages"].append(f"# hwnas dependencies: pyproject.toml sha256 {digest}")
print(json.dumps(env))
EOF
)"
echo "install:       $HWNAS_INSTALL"
extra=()
if [[ "${HWNAS_NO_WAIT:-0}" == 1 ]]; then
  extra+=(--no-wait)
fi
if [[ -n "${HWNAS_ENTRYPOINT_NUM_GPUS:-}" ]]; then
  extra+=(--entrypoint-num-gpus "$HWNAS_ENTRYPOINT_NUM_GPUS")
fi
ray job submit \
  --address "$RAY_ADDRESS" \
  --submission-id "$job_id" \
  --working-dir "$ROOT" \
  --runtime-env-json "$runtime_env" \
  ${extra[@]+"${extra[@]}"} \
  -- python -m hwnas.cli search "$@" --out "$RUN_DIR" --no-progress
