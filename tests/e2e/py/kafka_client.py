"""Kafka clients for the e2e tests, on librdkafka (PyPI confluent-kafka, its wheel's own
librdkafka), in /opt/weir-kafka.
  kafka_client.py topic BOOTSTRAP TOPIC PARTITIONS      create a topic
  kafka_client.py consume BOOTSTRAP TOPIC LINES SECONDS  read from the start until LINES JSON
      lines arrived (or SECONDS passed); prints {"records", "partitions", "rows"} as JSON,
      rows being every line parsed."""
import json
import sys
import time


def topic(bootstrap, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap})
    for _, f in a.create_topics([NewTopic(name, num_partitions=partitions,
                                          replication_factor=1)]).items():
        f.result(timeout=30)
    print("created")


def consume(bootstrap, name, lines, seconds):
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-e2e",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([name])
    records, partitions, rows = 0, set(), []
    end = time.time() + seconds
    while time.time() < end and len(rows) < lines:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print(json.dumps({"error": str(m.error())}), file=sys.stderr)
            continue
        records += 1
        partitions.add(m.partition())
        for line in m.value().decode().splitlines():
            rows.append(json.loads(line))
    c.close()
    print(json.dumps({"records": records, "partitions": sorted(partitions), "rows": rows}))


if sys.argv[1] == "topic":
    topic(sys.argv[2], sys.argv[3], int(sys.argv[4]))
else:
    consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
