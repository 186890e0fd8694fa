# The installer image of installer.yaml: the shim's two binaries and a
# shell with nsenter. Build from the repository root:
#   docker build -f deploy/kubernetes/installer.Dockerfile -t ghcr.io/kindling-dev/kindling-shim-installer:v0.1.0 .
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ \
      ./cmd/containerd-shim-kindling-v1 ./cmd/containerd-shim-kindling-v1/kindling-shim-server

FROM debian:12-slim
COPY --from=build /out/containerd-shim-kindling-v1 /out/kindling-shim-server /opt/kindling/
