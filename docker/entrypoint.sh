#!/bin/sh
# amqpd image entry point: a drop-in for the rabbitmq:3 image's settings, then `exec amqpd` (so amqpd is PID 1 and
# receives `docker stop`'s SIGTERM). The variables CI jobs already set for rabbitmq:3 become amqpd's:
#
#   RABBITMQ_DEFAULT_USER  -> AMQPD_DEFAULT_USER     RABBITMQ_DEFAULT_VHOST -> AMQPD_DEFAULT_VHOST
#   RABBITMQ_DEFAULT_PASS  -> AMQPD_DEFAULT_PASS     RABBITMQ_NODE_PORT     -> AMQPD_PORT
#
# An AMQPD_* variable that is set wins over its RABBITMQ_* one. Arguments: none, or options (-x/--x), run amqpd
# with them (`docker run IMAGE --log-level debug`); anything else is a command run as it is, with the same
# variables (`docker run IMAGE amqpd --check`, `docker run -it IMAGE sh`). The image's HEALTHCHECK goes through
# this script too, so `amqpd --check` sees the user, password, vhost and port the broker was started with.
set -eu

# from_rabbitmq AMQPD_NAME RABBITMQ_NAME: export the first from the second when only the second is set.
from_rabbitmq() {
    eval "amqpd_set=\${$1+set} rabbitmq_set=\${$2+set}"
    if [ -z "$amqpd_set" ] && [ -n "$rabbitmq_set" ]; then
        eval "export $1=\"\$$2\""
    fi
}

from_rabbitmq AMQPD_DEFAULT_USER RABBITMQ_DEFAULT_USER
from_rabbitmq AMQPD_DEFAULT_PASS RABBITMQ_DEFAULT_PASS
from_rabbitmq AMQPD_DEFAULT_VHOST RABBITMQ_DEFAULT_VHOST
from_rabbitmq AMQPD_PORT RABBITMQ_NODE_PORT

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- amqpd "$@"
fi
exec "$@"
