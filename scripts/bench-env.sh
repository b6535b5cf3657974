# Sourced by the bench-*.sh scripts: goes to the repository, reads
# [benchtime] [count] from the arguments, makes ${OUT:-bench-out}/, and
# prepares Docker and the PostgreSQL image like make test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
benchtime=${1:-3s}
count=${2:-1}
out=${OUT:-bench-out}
mkdir -p "$out"
export TESTCONTAINERS_RYUK_DISABLED=${TESTCONTAINERS_RYUK_DISABLED:-true}
export TESTCONTAINERS_HOST_OVERRIDE=${TESTCONTAINERS_HOST_OVERRIDE:-127.0.0.1}
PGTENANT_POSTGRES_IMAGE=$(scripts/ensure-postgres.sh)
export PGTENANT_POSTGRES_IMAGE
