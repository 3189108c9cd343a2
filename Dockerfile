# CPU image that serves a trained checkpoint: the page at /, POST /predict, /health and /ready.
#   docker build -t pointseg .
#   docker run --rm -p 8080:8080 -v "$PWD/runs/x/checkpoints:/models:ro" -e CHECKPOINT=/models/best.ckpt pointseg
# PORT (default 8080, as Cloud Run sets it) and CHECKPOINT (default /models/model.ckpt) come from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build

# The CPU build of PyTorch first (its index also has the matching CPU torchvision), so that the
# package install below finds torch already there and pulls no CUDA packages.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 torchvision==0.28.0

# Then the package, as the README's local install does (not editable: nothing runs from /build).
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install -c constraints.txt .

RUN groupadd --gid 10001 pointseg && useradd --uid 10001 --gid 10001 --create-home pointseg
USER 10001:10001
WORKDIR /home/pointseg

ENV PORT=8080 \
    CHECKPOINT=/models/model.ckpt
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=4)"]

# A shell expands the variables; exec hands it PID 1 so it gets the container's SIGTERM.
CMD ["sh", "-c", "exec pointseg serve --checkpoint \"${CHECKPOINT:-/models/model.ckpt}\" --host 0.0.0.0 --port \"${PORT:-8080}\""]
