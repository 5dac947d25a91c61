#!/usr/bin/env bash
# Deploy the AsterAI signal service (`asterai serve`) to Google Cloud Run.
#
# Training stays on your machine; this ships one exported model (models/{model}/onnx,
# from `asterai export-onnx`) in a small CPU container that follows the market itself.
#
#   cloud_deploy/deploy_inference.sh --project my-project --region europe-west1 \
#       --data-root ~/asterai-project [--model confluence] [--service asterai-signals] \
#       [--repository asterai] [--secret asterai-serve-token] [--dry-run]
#
# What it does, in order (each command is printed before it runs; --dry-run only prints):
#   1. stages a build context: pyproject.toml, README.md, src/, cloud_deploy/ and the
#      model's export folder (nothing else of your data root leaves your machine);
#   2. builds the image with Cloud Build into Artifact Registry
#      (REGION-docker.pkg.dev/PROJECT/REPOSITORY/asterai-serve:TAG);
#   3. deploys it to Cloud Run: 1 vCPU, 512 MiB, exactly one instance, CPU always
#      allocated (the service polls the exchange between requests: with request-based
#      billing Cloud Run would freeze it), the bearer token from Secret Manager.
#
# The token is never passed on the command line or printed. Create the secret once:
#   printf %s "$(openssl rand -hex 32)" | gcloud secrets create asterai-serve-token \
#       --project my-project --data-file=-
# and give the Cloud Run service account roles/secretmanager.secretAccessor on it.
set -euo pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

die() { echo "deploy_inference.sh: error: $1" >&2; exit "${2:-2}"; }

PROJECT="" REGION="" DATA_ROOT="" MODEL="confluence" SERVICE="asterai-signals"
REPOSITORY="asterai" SECRET="asterai-serve-token" DRY_RUN=0 MEMORY="512Mi" CPU="1"
while [ $# -gt 0 ]; do
    case "$1" in
        --project) PROJECT="${2:-}"; shift 2 ;;
        --region) REGION="${2:-}"; shift 2 ;;
        --data-root) DATA_ROOT="${2:-}"; shift 2 ;;
        --model) MODEL="${2:-}"; shift 2 ;;
        --service) SERVICE="${2:-}"; shift 2 ;;
        --repository) REPOSITORY="${2:-}"; shift 2 ;;
        --secret) SECRET="${2:-}"; shift 2 ;;
        --memory) MEMORY="${2:-}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[ -n "$PROJECT" ] || die "--project is required (the Google Cloud project id)"
[ -n "$REGION" ] || die "--region is required (for example europe-west1)"
[ -n "$DATA_ROOT" ] || die "--data-root is required (the folder holding models/)"
case "$MODEL" in
    confluence) FOLDER="confluence" ;;
    aster-native|aster_native) FOLDER="aster_native"; MODEL="aster-native" ;;
    *) die "--model must be confluence or aster-native, not $MODEL" ;;
esac
[[ "$SERVICE" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
    || die "--service must be lowercase letters, digits and dashes (Cloud Run's rule): $SERVICE"
EXPORT="$DATA_ROOT/models/$FOLDER/onnx"
[ -f "$EXPORT/manifest.json" ] \
    || die "$EXPORT/manifest.json not found: run \`asterai export-onnx --model $MODEL\` first" 1
grep -q '"service"' "$EXPORT/manifest.json" \
    || die "$EXPORT was exported before the service facts were recorded: export again" 1

HERE="$(cd "$(dirname "$0")" && pwd -P)"
PROJECT_DIR="$(dirname "$HERE")"
TAG="$(date -u +%Y%m%d-%H%M%S)"
IMAGE="$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/asterai-serve:$TAG"

run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

if [ "$DRY_RUN" -eq 0 ]; then
    command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install)" 1
fi

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
cp "$PROJECT_DIR/pyproject.toml" "$PROJECT_DIR/README.md" "$STAGE/"
cp -r "$PROJECT_DIR/src" "$PROJECT_DIR/cloud_deploy" "$STAGE/"
mkdir -p "$STAGE/models/$FOLDER"
cp -r "$EXPORT" "$STAGE/models/$FOLDER/onnx"
find "$STAGE" -name '__pycache__' -type d -prune -exec rm -rf {} +
echo "staged $(du -sh "$STAGE" | cut -f1) in $STAGE (model $MODEL from $EXPORT)"

cat > "$STAGE/cloudbuild.yaml" <<YAML
steps:
  - name: gcr.io/cloud-builders/docker
    args: [build, -f, cloud_deploy/Dockerfile, --build-arg, MODEL=$FOLDER, -t, $IMAGE, .]
images: [$IMAGE]
YAML

if [ "$DRY_RUN" -eq 1 ] || ! gcloud artifacts repositories describe "$REPOSITORY" \
        --project "$PROJECT" --location "$REGION" >/dev/null 2>&1; then
    run gcloud artifacts repositories create "$REPOSITORY" --project "$PROJECT" \
        --location "$REGION" --repository-format docker  # once, when it does not exist
fi
run gcloud builds submit "$STAGE" --project "$PROJECT" --region "$REGION" \
    --config "$STAGE/cloudbuild.yaml"
run gcloud run deploy "$SERVICE" --project "$PROJECT" --region "$REGION" --image "$IMAGE" \
    --cpu "$CPU" --memory "$MEMORY" --min-instances 1 --max-instances 1 --no-cpu-throttling \
    --concurrency 80 --port 8080 --timeout 60 \
    --set-secrets "ASTERAI_SERVE_TOKEN=$SECRET:latest" --allow-unauthenticated
echo "deployed $SERVICE: check it with"
echo "  curl \"\$(gcloud run services describe $SERVICE --project $PROJECT --region $REGION --format 'value(status.url)')/health\""
