# The gridshare project image: the `gridshare` command with the compiled contract artifacts
# (they ship inside the package; no Node or solc needed at run time).
#   docker build -t gridshare:dev .        (docker-compose.yml builds it for its services)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gridshare ./gridshare
COPY capacity ./capacity
COPY market ./market
COPY oracle ./oracle
RUN pip install . && rm -rf /src

WORKDIR /work
# /state: the compose services' named volume for deployment.json (inherits this ownership)
RUN useradd --create-home --uid 10001 gridshare && mkdir -p /state && chown gridshare /work /state
USER gridshare
ENTRYPOINT ["gridshare"]
CMD ["--help"]
