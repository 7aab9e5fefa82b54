#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian packages, npm packages, the
# MinIO and fake-gcs-server binaries), builds the addon and the TypeScript, then
# runs vitest, which starts its own servers on 127.0.0.1 and mounts through
# /dev/fuse. Needs root for the FUSE mounts and the apt-get step.
#
# Arguments are passed to vitest, so `test/all.sh src/fs` runs one folder.
set -euo pipefail

repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repository"

test/env/install.sh

# node_modules/.bin holds the Node.js 24 binary from the npm registry's `node` package.
export PATH="$repository/node_modules/.bin:$PATH"

npm run --silent build

# The JSON report stays after the run, for tools that read test results.
results="${TMPDIR:-/tmp}/bucketmount-test-results.json"
status=0
vitest run --config test/vitest.config.ts --reporter=default --reporter=json --outputFile.json="$results" "$@" || status=$?

# A plain closing line that any CI log reader understands.
node -e '
  const report = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
  const skipped = report.numPendingTests + report.numTodoTests;
  console.log(`${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped`);
' "$results" || true

exit "$status"
