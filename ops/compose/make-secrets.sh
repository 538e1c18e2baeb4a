#!/bin/sh
# Writes the development secrets that compose.yaml mounts, into ops/compose/secrets/ (ignored by git):
#   rabbitmq-default-user.conf  RabbitMQ's administrator "emporium" (a conf.d snippet: RabbitMQ 3.9+
#                               images take no password variables)
#   rabbitmq_url                the same account as an AMQP URL, read by every emporium process
#                               (EMPORIUM_SECRETS_DIR: a file named after a setting holds its value)
#   grafana_admin_password      Grafana's "admin" (GF_SECURITY_ADMIN_PASSWORD__FILE)
#   emporium_metrics_token      the bearer token every emporium /metrics asks for, and Prometheus sends
#   emporium_identity_key_encryption_keys  the Fernet key identity encrypts its signing keys with
# Existing secrets are kept: RabbitMQ and Grafana read theirs only on their first start (empty
# volumes), so new ones would lock everything out. To start over: `docker compose down --volumes`,
# delete ops/compose/secrets, run this again.
set -eu

dir="$(cd "$(dirname "$0")" && pwd)/secrets"

random_hex() {
    # Hex only: the password goes into a URL and a RabbitMQ .conf line without quoting.
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

umask 077
mkdir -p "$dir"
# Read at every start, unlike the accounts below: written when missing, also into an older folder.
[ -e "$dir/emporium_metrics_token" ] || random_hex > "$dir/emporium_metrics_token"
# A Fernet key: 32 random bytes, url-safe base64. Replacing it needs the rotation in the README.
[ -e "$dir/emporium_identity_key_encryption_keys" ] \
    || head -c 32 /dev/urandom | base64 | tr '+/' '-_' > "$dir/emporium_identity_key_encryption_keys"
chmod 0644 "$dir/emporium_metrics_token" "$dir/emporium_identity_key_encryption_keys"

if [ -e "$dir/rabbitmq_url" ] && [ -e "$dir/rabbitmq-default-user.conf" ] && [ -e "$dir/grafana_admin_password" ]; then
    echo "secrets already in $dir; kept"
    exit 0
fi

rabbitmq_password="$(random_hex)"
printf 'default_user = emporium\ndefault_pass = %s\n' "$rabbitmq_password" > "$dir/rabbitmq-default-user.conf"
printf 'amqp://emporium:%s@rabbitmq:5672/\n' "$rabbitmq_password" > "$dir/rabbitmq_url"
random_hex > "$dir/grafana_admin_password"
# Compose bind-mounts each file with its host owner and mode, and the containers run as other users
# (RabbitMQ 999, emporium 10001, Grafana 472): the files must be world-readable; the folder (0700)
# keeps other users of this machine out.
chmod 0700 "$dir"
chmod 0644 "$dir"/*
echo "wrote $dir (RabbitMQ UI: user emporium, password in rabbitmq-default-user.conf; Grafana: admin)"
