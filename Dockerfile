# One image for every SmartRoute process; the command picks the part (api, worker, beat).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SMARTROUTE_LOG_FORMAT=json \
    SMARTROUTE_DATA_DIR=/home/smartroute/data
WORKDIR /app
RUN useradd --create-home --uid 10001 smartroute

COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps .

USER smartroute
EXPOSE 8000
CMD ["smartroute", "api", "--host", "0.0.0.0", "--port", "8000"]
