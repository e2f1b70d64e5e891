# One image for every service; the command chooses it: `python -m services.intake`, `… dispatch`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 GRIDFLOW_HTTP_HOST=0.0.0.0
WORKDIR /app

COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

COPY libs ./libs
COPY services ./services
COPY deploy ./deploy
COPY config ./config

RUN useradd --system --uid 10001 gridflow
USER gridflow

ENTRYPOINT ["python", "-m"]
CMD ["services.intake"]
