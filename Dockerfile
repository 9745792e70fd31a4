# A local Delta to practice on: minidelta (a real single-node SLURM cluster shaped like NCSA
# Delta) plus deltajobs with CPU PyTorch. The build and the entrypoint call the same scripts CI
# runs (scripts/install, scripts/minidelta), never copies of them.
#
#   docker build -t deltajobs .
#   docker run -it --rm -v /path/to/data:/data -e DELTAJOBS_DATA_ROOT=/data deltajobs
#   # inside: deltajobs submit mnist --wait && deltajobs results last
#   docker run -it --rm --privileged -e MINIDELTA_NODES=3 deltajobs   # three nodes, `minidelta fail`
#
# Also usable as the base of an Apptainer image for Delta:
#   apptainer build deltajobs.sif docker-daemon://deltajobs:latest
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHON=python3.11 \
    TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    DELTAJOBS_ACCOUNT=bgvu-delta-gpu \
    DELTAJOBS_CLUSTER=minidelta

RUN apt-get update \
    && apt-get install -y --no-install-recommends procps hostname bash-completion \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/deltajobs
COPY . .
RUN scripts/minidelta install && rm -rf /var/lib/apt/lists/*
RUN scripts/install
ENV PATH=/opt/deltajobs/.venv/bin:$PATH

ENTRYPOINT ["/opt/deltajobs/scripts/docker-entrypoint"]
CMD ["bash", "-l"]
