# syntax=docker/dockerfile:1
#
# aiperf as one static binary (musl) on an empty image: the binary, CA certificates and a
# non-root user (65532), nothing else: no shell, no package manager.
#
#   docker build -t aiperf:0.1.0 .            (or podman build / buildah bud)
#   docker run --rm aiperf:0.1.0 --url mock --request-count 20 --ui none
#
# `aiperf kube manifest` (docs/scale-out.md) runs this image's entrypoint with its arguments;
# the shard index reaches them through Kubernetes' own $(VAR) expansion, so no shell is needed.

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
# The musl target of the build machine (x86_64 or aarch64) links statically by default.
# Stripped: the release profile's debug info would make the binary 160 MB instead of 66 MB.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
    && CARGO_PROFILE_RELEASE_STRIP=symbols \
       cargo build --release --locked --target "$target" -p aiperf --bin aiperf \
    && cp "target/$target/release/aiperf" /aiperf
# The user's passwd entry and a home it can write (the Hugging Face tokenizer cache).
RUN mkdir -p /rootfs/etc /rootfs/home/aiperf \
    && echo 'aiperf:x:65532:65532:aiperf:/home/aiperf:/sbin/nologin' > /rootfs/etc/passwd \
    && echo 'aiperf:x:65532:' > /rootfs/etc/group

FROM scratch
COPY --from=build /rootfs/etc/passwd /rootfs/etc/group /etc/
COPY --from=build --chown=65532:65532 /rootfs/home/aiperf /home/aiperf
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /aiperf /aiperf
ENV HOME=/home/aiperf \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/aiperf
ENTRYPOINT ["/aiperf"]
