# The operator image: `docker build -t runbook-operator .`
# Dependencies come from requirements.lock (exact versions with hashes, regenerated
# with `make lock`), so a rebuild next month installs the same bits; the package
# itself is then installed without resolving anything.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --prefix=/install --require-hashes --only-binary=:all: \
        -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install --no-deps --no-build-isolation .

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 65532:65532
ENTRYPOINT ["runbook-operator"]
CMD ["run"]
