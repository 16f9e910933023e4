#!/usr/bin/env python3
"""The local stack's Kafka chores, done with a stock client (confluent-kafka, in the venv that
`make tools` makes; scripts/stack.sh runs this file with it).

  kafka.py metadata HOST:PORT
      print the topics the broker holds, one a line (internal ones left out). Exit 0 only if the
      broker answered a Metadata request: the stack's health check.
  kafka.py scram HOST:PORT USER PASSWORD_FILE
      create or update USER's SCRAM-SHA-512 credential with the password in PASSWORD_FILE.

Exit status: 0 on success, 1 on a failure (the message says what failed), 2 on usage errors.
"""

import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

TIMEOUT = 10


def admin(address):
    return AdminClient({"bootstrap.servers": address, "socket.timeout.ms": TIMEOUT * 1000})


def metadata(address):
    md = admin(address).list_topics(timeout=TIMEOUT)
    if not md.brokers:
        raise KafkaException(f"{address} answered with no brokers")
    for name in sorted(md.topics):
        if not name.startswith("__"):
            print(name)


def scram(address, user, password_file):
    with open(password_file, encoding="utf-8") as f:
        password = f.read().strip()
    if not password:
        raise ValueError(f"{password_file} is empty")
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upsert = UserScramCredentialUpsertion(user, info, password.encode())
    client = admin(address)  # kept alive until every future is done
    for fut in client.alter_user_scram_credentials([upsert], request_timeout=TIMEOUT).values():
        fut.result()


def main(argv):
    try:
        if len(argv) == 2 and argv[0] == "metadata":
            metadata(argv[1])
        elif len(argv) == 4 and argv[0] == "scram":
            scram(argv[1], argv[2], argv[3])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (KafkaException, OSError, ValueError) as e:
        print(f"kafka.py {argv[0]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
