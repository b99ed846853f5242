# Production image: the seed's Dockerfile adapted to the Python platform.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_DEBUG=false VAR_DIR=/app/var PORT=3001
WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
# collectstatic needs settings that pass the production checks; these throwaway values never ship.
RUN DJANGO_SECRET_KEY=build-only-$(python -c 'import secrets;print(secrets.token_urlsafe(50))') \
    JWT_SECRET=build-only-$(python -c 'import secrets;print(secrets.token_urlsafe(32))') \
    ENROLLMENT_MODE=approval python manage.py collectstatic --noinput \
 && useradd --system --uid 10001 --home /app gateway \
 && mkdir -p /app/var && chown -R gateway /app/var
USER gateway
EXPOSE 3001
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz',timeout=2)"
# Several worker processes use every core; shared state lives in Redis. proxyproject/server.py adds the
# HTTP limits and timeouts from settings (HTTP_*), as everywhere else the gateway runs. The client's
# address comes from TRUSTED_PROXIES (proxyproject/client_address.py), never from uvicorn's own reading.
CMD ["sh", "-c", "WEB_CONCURRENCY=${WEB_CONCURRENCY:-4} exec python -m proxyproject.server --host 0.0.0.0 --port ${PORT}"]
