# syntax=docker/dockerfile:1
#
# One image with every command: /ingress, /worker, /reconciler and /sandbox.
# Pick one with the entrypoint (docker run --entrypoint /worker …, or
# `command:` in Kubernetes); the default is the ingress.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t wxpay-notify .
#
# The final image is distroless (no shell, no package manager, no wget or
# curl), so the long-running commands check themselves: `/ingress health` and
# `/worker health` ask the admin listener on ADMIN_ADDR for /readyz and exit
# 0 only on 200 (docker-compose.yml uses them as health checks). There is no
# HEALTHCHECK here because the image serves every command and the reconciler
# is a one-off with no admin listener; Kubernetes probes /healthz and /readyz
# over HTTP (deploy/k8s).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
# Static binaries (no libc in the final image); -trimpath keeps the build
# machine's paths out of them; -s -w drops the symbol tables.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/bin/ ./cmd/... \
 && mkdir -p /out/var/lib/wxpay/bills

FROM gcr.io/distroless/static-debian12:nonroot
# distroless/static holds the CA certificates (HTTPS to WeChat Pay) and the
# time zone data (the reconciler's China dates).
# ./cmd/... above: every command there, one binary each, at the root.
COPY --from=build /out/bin/ /
# The reconciler's RECONCILE_BILL_DIR: owned by the nonroot user so that a
# named volume mounted there starts writable.
COPY --from=build --chown=65532:65532 /out/var/lib/wxpay /var/lib/wxpay
USER 65532:65532
# The ingress's public listener (LISTEN_ADDR) and every command's admin
# listener (ADMIN_ADDR: /healthz, /readyz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/ingress"]
