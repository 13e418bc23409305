# The Lambda image: inference only (LiteRT, Pillow, NumPy, Powertools). No TensorFlow, no training code.
# The base is pinned by digest (a multi-architecture index: x86_64 and arm64). To move to a newer one:
#   docker buildx imagetools inspect public.ecr.aws/lambda/python:3.12   (the "Digest:" line)
FROM public.ecr.aws/lambda/python:3.12@sha256:beae84cc45e41c80aa709a11f702b452a8aea4141700cdbab47ac4a6c181113f

# Every transitive dependency is pinned too (requirements/constraints.txt), and each has a CPython
# 3.12 manylinux wheel for both architectures (`make image-check` verifies this against PyPI).
COPY requirements/runtime.txt requirements/constraints.txt ${LAMBDA_TASK_ROOT}/requirements/
RUN pip install --no-cache-dir --only-binary :all: \
        -r "${LAMBDA_TASK_ROOT}/requirements/runtime.txt" -c "${LAMBDA_TASK_ROOT}/requirements/constraints.txt"

# The bundled default model (models/DEFAULT names the version), then the code: code changes
# most often, so it is the last layer.
COPY models/ ${LAMBDA_TASK_ROOT}/models/
COPY handler/ ${LAMBDA_TASK_ROOT}/handler/

ENV MODEL_CACHE_DIR=/tmp/models \
    POWERTOOLS_SERVICE_NAME=handwriting-ocr \
    POWERTOOLS_METRICS_NAMESPACE=HandwritingOCR

# The upload handler; the template points the bulk and summary functions at handler.app.bulk
# and handler.app.summarize. For a folder of local images:
#   docker run --rm -v "$PWD/images:/images" --entrypoint python IMAGE -m handler label /images
CMD ["handler.app.on_upload"]
