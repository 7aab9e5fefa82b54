#!/usr/bin/env bash
# The main job: installs what is missing, builds bucketmount, starts a local
# object server and OIDC issuer on 127.0.0.1, seeds a bucket, mounts it with
# web-identity credentials only, runs the Python sandbox check against /data,
# then unmounts and stops everything. Needs root (FUSE mount, mount namespace).
#
# Usage: test/demo.sh [s3|gcs]   (default s3)
set -euo pipefail

repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repository"

test/env/install.sh

export PATH="$repository/node_modules/.bin:$PATH"
npm run --silent build

exec node dist/test/demo/main.js "${1:-s3}"
