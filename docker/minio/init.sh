#!/bin/sh
# One-shot MinIO setup of the docker-compose stack (the minio-init service, minio/mc image):
#   * a bucket per sample duckling of docker/ducklings.yaml;
#   * the user Airflow signs in as (the aws_default connection). MinIO's STS AssumeRole refuses the root
#     user; a plain user's sessions get that user's policy, here duckling-writer (the duckling buckets only).
# Safe to run again: existing buckets, policy and user are kept or updated.
set -eu

until mc alias set duckling http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO at http://minio:9000 ..."
  sleep 2
done

for bucket in duckling-team-1 duckling-team-2 duckling-team-3; do
  mc mb --ignore-existing "duckling/$bucket"
done

mc admin policy create duckling duckling-writer /duckling/minio/duckling-writer-policy.json
mc admin user add duckling "$DUCKLING_AWS_ACCESS_KEY_ID" "$DUCKLING_AWS_SECRET_ACCESS_KEY"
if ! mc admin user info duckling "$DUCKLING_AWS_ACCESS_KEY_ID" | grep -q duckling-writer; then
  mc admin policy attach duckling duckling-writer --user "$DUCKLING_AWS_ACCESS_KEY_ID"
fi
echo "MinIO ready: duckling buckets and user $DUCKLING_AWS_ACCESS_KEY_ID (policy duckling-writer)"
