# Image for the api and worker services of docker-compose.yml (not exercised by CI: no Docker engine there).
FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY indexer indexer
COPY api api
COPY workers workers
COPY mappings mappings
RUN pip install --no-cache-dir -e .
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "api:create_app()"]
