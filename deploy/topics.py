"""`python -m deploy.topics`: create every topic of the catalogue with its partition count — the
one-shot job of docker-compose.yml and deploy/k8s (the services also create missing topics at
start, so this only makes the counts explicit before anything runs).

Reads KAFKA_BOOTSTRAP_SERVERS, GRIDFLOW_TOPIC_PREFIX, GRIDFLOW_KAFKA_PARTITIONS and
GRIDFLOW_KAFKA_REPLICATION_FACTOR (defaults: none, "", 4, 1); retries until the broker answers.
"""

from __future__ import annotations

import asyncio
import os
import sys

from libs.common.kafka import TopicNames, ensure_topics
from libs.common.runtime import wait_for
from libs.common.topics import CATALOGUE


async def create(*, bootstrap: str, prefix: str, partitions: int, replication: int) -> list[str]:
    names = TopicNames(prefix)
    wanted = [names(topic) for topic in CATALOGUE]
    await wait_for(
        "the Kafka broker",
        lambda: ensure_topics(
            bootstrap_servers=bootstrap,
            names=wanted,
            partitions=partitions,
            replication_factor=replication,
        ),
        within=300,
    )
    return wanted


def main() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    created = asyncio.run(
        create(
            bootstrap=bootstrap,
            prefix=os.environ.get("GRIDFLOW_TOPIC_PREFIX", ""),
            partitions=int(os.environ.get("GRIDFLOW_KAFKA_PARTITIONS", "4")),
            replication=int(os.environ.get("GRIDFLOW_KAFKA_REPLICATION_FACTOR", "1")),
        )
    )
    print("topics ready: " + ", ".join(created))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
