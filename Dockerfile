# One image for every SmartRoute process; the command picks the part (api, worker, relay, beat,
# db upgrade). Production only: the embedded PostgreSQL and Redis (the `embedded` extra) stay
# out, so DATABASE_URL and REDIS_URL are required; the load tools (the `smartroute-sim`
# distribution in sim/: demo, bench, simulate) are not even in the build context.

# The wheel is built in its own stage so the sources and build tools stay out of the image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SMARTROUTE_LOG_FORMAT=json \
    SMARTROUTE_DATA_DIR=/home/smartroute/data
RUN useradd --create-home --uid 10001 smartroute
WORKDIR /home/smartroute

# requirements.txt pins every version for the laptop path; used as constraints here it pins the
# production dependencies to the same versions without installing the extras' packages. pip
# refuses extras in a constraints file, so celery[redis] is read as celery (its redis extra's
# packages, redis and packaging, are pinned on their own lines).
COPY requirements.txt /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN sed 's/\[[^]]*\]//' /tmp/requirements.txt > /tmp/constraints.txt \
 && pip install --no-cache-dir -c /tmp/constraints.txt /tmp/wheels/smartroute-*.whl \
 && rm -rf /tmp/wheels /tmp/requirements.txt /tmp/constraints.txt

USER smartroute
RUN mkdir -p /home/smartroute/data
EXPOSE 8000 8001 9808
CMD ["smartroute", "api", "--host", "0.0.0.0", "--port", "8000"]
