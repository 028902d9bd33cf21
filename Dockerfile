# iochost: one container, one daemon, one soft IOC process per plugin.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 iochost

WORKDIR /opt/iochost
COPY pyproject.toml README.md ./
COPY src ./src
COPY plugins-example ./plugins-example
RUN pip install --no-cache-dir .

USER iochost
ENV IOCHOST_HOST=0.0.0.0 \
    IOCHOST_PORT=8080 \
    IOCHOST_DATA_DIR=/data \
    OPENBLAS_NUM_THREADS=1
VOLUME ["/data"]
# REST API, CA search (UDP) + CA server range (TCP), PVA.
EXPOSE 8080 5064/udp 5064/tcp 5075/tcp 5076/udp
ENTRYPOINT ["iochost", "serve"]
