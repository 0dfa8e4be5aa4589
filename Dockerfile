# faultlined's image: one static binary on an empty base.
#   docker build -t ghcr.io/faultline-dev/faultlined .
# The e2e harness (test/e2e) builds the same image without Docker: the
# same static build, the binary at /faultlined, the same entrypoint.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/faultlined ./cmd/faultlined

FROM scratch
COPY --from=build /out/faultlined /faultlined
USER 0
ENTRYPOINT ["/faultlined"]
