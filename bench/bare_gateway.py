"""The baseline for single-resource PUTs: a bare FastAPI endpoint, no hub code.

It does the least a FHIR gateway on Kafka must do: read the body, validate it with
fhir.resources (R4B), and produce it with aiokafka (acks=all), answering 201 once the broker
acknowledged. No authentication, signing, envelope, consortium rules or dead letters.

    python -m bench.bare_gateway --port 8081 --bootstrap 127.0.0.1:19092 --topic bare.events
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError


def create_app(bootstrap: str, topic: str) -> FastAPI:
    producer: AIOKafkaProducer | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        nonlocal producer
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        yield
        await producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.put("/fhir/{rtype}/{rid}")
    async def put(rtype: str, rid: str, request: Request) -> Response:
        body = await request.body()
        try:
            resource = get_fhir_model_class(rtype).model_validate_json(body)
        except (KeyError, ValidationError) as exc:
            return Response(str(exc), status_code=422)
        subject = getattr(resource, "subject", None)
        key = (subject.reference if subject is not None else f"{rtype}/{rid}").encode()
        assert producer is not None
        await producer.send_and_wait(topic, body, key=key)
        return Response(body, status_code=201, media_type="application/fhir+json")

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    args = ap.parse_args()
    uvicorn.run(create_app(args.bootstrap, args.topic), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
