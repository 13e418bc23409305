# The Lambda image: inference only (LiteRT, Pillow, NumPy, Powertools). No TensorFlow, no training code.
FROM public.ecr.aws/lambda/python:3.12

COPY requirements/runtime.txt ${LAMBDA_TASK_ROOT}/requirements.txt
RUN pip install --no-cache-dir -r "${LAMBDA_TASK_ROOT}/requirements.txt"

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
