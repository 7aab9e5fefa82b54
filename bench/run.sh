#!/usr/bin/env bash
# Installs the benchmark's peers and tools, builds bucketmount, and runs the
# benchmark. Arguments go to dist/bench/run.js (`bench/run.sh --quick` for a
# smoke run, `bench/run.sh --help` for the options). Needs root: FUSE mounts,
# apt-get, and dropping the page cache.

set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"

bash test/env/install.sh --bench
export PATH=$REPO_DIR/node_modules/.bin:$PATH
npm run build >&2

# An explicit environment, so that the machine's AWS and CA variables reach
# neither the benchmark nor the mounts it starts.
exec env -i \
  PATH="$PATH" \
  HOME="$HOME" \
  ${BUCKETMOUNT_CACHE_DIR:+BUCKETMOUNT_CACHE_DIR="$BUCKETMOUNT_CACHE_DIR"} \
  node dist/bench/run.js "$@"
