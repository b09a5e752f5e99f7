#!/bin/sh
# The buckets named in S3_BUCKETS (space or comma separated) exist on the SeaweedFS at WEED_MASTER.
# Idempotent: a bucket that is already there is fine. compose.yaml runs it as the `buckets` job;
# tests/test_deploy_compose.py runs it against a local `weed server`.
set -eu
WEED=${WEED:-weed}
for bucket in $(echo "${S3_BUCKETS:?name the buckets}" | tr ',' ' '); do
  out=$(echo "s3.bucket.create -name $bucket" | "$WEED" shell -master="${WEED_MASTER:?host:port of the master}" 2>&1) || true
  case "$out" in
    *"created bucket"*) echo "bucket $bucket: created" ;;
    *"already exists"*) echo "bucket $bucket: already there" ;;
    *) echo "bucket $bucket: failed: $out" >&2; exit 1 ;;
  esac
done
