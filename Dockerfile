# Two stages: build on Debian 12 with the -dev packages, run on Debian 12
# slim with only the shared libraries the binary needs, as uid 65532.
#   docker build --build-arg VERSION=1.2.3 -t pyrycode-relay .
#   docker run --cap-drop=ALL --cap-add=NET_BIND_SERVICE -p 80:80 -p 443:443 \
#     -v relay-certs:/var/lib/relay/autocert pyrycode-relay \
#     --domain relay.example.com --cert-cache /var/lib/relay/autocert
FROM debian:12 AS build
# Empty: a VERSION file in the context, else "dev" (.git is not copied).
ARG VERSION=
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libuv1-dev libssl-dev libhttp-parser-dev \
        libjansson-dev libcurl4-openssl-dev libsystemd-dev libnats-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt VERSION* ./
COPY cmake ./cmake
COPY src ./src
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DRELAY_FUZZ=OFF -DRELAY_VERSION="${VERSION}" \
        -DRELAY_TESTS=OFF \
    && cmake --build /build --target pyrycode-relay -j"$(nproc)" \
    && strip /build/pyrycode-relay

FROM debian:12-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libuv1 libssl3 libhttp-parser2.9 libjansson4 libcurl4 libsystemd0 libnats3.4 \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/relay/autocert && chown 65532:65532 /var/lib/relay/autocert \
    && chmod 0700 /var/lib/relay/autocert
COPY --from=build --chown=65532:65532 /build/pyrycode-relay /pyrycode-relay
USER 65532:65532
ENV PYRYCODE_RELAY_PRODUCTION=1
VOLUME ["/var/lib/relay/autocert"]
EXPOSE 80 443
ENTRYPOINT ["/pyrycode-relay"]
