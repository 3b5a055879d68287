# apitoken-operator: the kubebuilder v4 skeleton, with envtest binaries built
# from Go modules (hack/envtest-binaries.sh) instead of downloaded.

# The image the defaults run (config/, the chart's image.repository and
# appVersion), a fully qualified reference: make image tags what it builds
# with it, so an image imported into a node's runtime is used with no pull.
IMAGE_REPOSITORY ?= ghcr.io/apitoken-operator/apitoken-operator
VERSION ?= $(shell sed -n 's/^appVersion: "\(.*\)"$$/\1/p' charts/apitoken-operator/Chart.yaml)
IMG ?= $(IMAGE_REPOSITORY):$(VERSION)
K8S_VERSION ?= 1.37.2
ETCD_VERSION ?= 3.6.16
export K8S_VERSION ETCD_VERSION

# One build configuration for everything make builds, vets and tests:
# static and -trimpath, as the image, the release and the tools are built.
# The tests, go vet, make image (run by hack/image's test and test/cluster),
# test/e2e's binary and hack/release then share one compiled tree of the
# module's dependencies, and the tools (hack/*.sh) one standard library,
# instead of a tree per configuration (a cold make test compiled the
# dependencies twice). Nothing here needs cgo.
export CGO_ENABLED ?= 0
GOFLAGS := $(strip $(filter-out -trimpath,$(GOFLAGS)) -trimpath)
export GOFLAGS

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0

# -shuffle=on runs plain tests in random order (the seed is printed as
# "-test.shuffle N"); the Ginkgo suites randomize their specs themselves.
# -timeout: a cold run of test/cluster builds the operator's image and may
# build the node's binaries, beyond go test's default of 10 minutes.
GO_TEST_FLAGS ?= -count=1 -shuffle=on -timeout 45m
ENVTEST_DIR := $(shell K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) hack/envtest-binaries.sh --print-dir)

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD, RBAC and webhook manifests.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: chart
chart: manifests ## Copy the CRD, RBAC rules, webhook configurations and alerts of config/ into charts/apitoken-operator; write its README.md from values.yaml and values.schema.json.
	hack/helm-chart.sh
	go run ./hack/chart-readme -chart charts/apitoken-operator

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: manifests generate chart golangci-lint sizes ## Regenerate and fail on a diff; gofmt, vet, lint; no file over 400 lines or function over 80 (make sizes).
	@git diff --exit-code -- api config charts || (echo "generated files are stale (the CRD, RBAC, webhooks, deepcopy, the chart's copies and README.md): run 'make manifests generate chart' and commit"; exit 1)
	@test -z "$$(git status --porcelain -- charts)" || (git status --porcelain -- charts; echo "charts/ has files git does not know: run 'make chart' and commit"; exit 1)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	go vet ./...
	$(GOLANGCI_LINT) run ./...

# make verify runs make sizes: one file, one concern; one function, one step.
.PHONY: sizes
sizes: ## List every non-test, non-generated Go file over 400 lines and function over 80 (hack/sizes; //sizes:table exempts a data table); fail if any.
	@go build -o $(LOCALBIN)/sizes ./hack/sizes && $(LOCALBIN)/sizes .

.PHONY: envtest
envtest: ## Build (once, cached per user) etcd, kube-apiserver and kube-controller-manager; link bin/k8s.
	@hack/envtest-binaries.sh etcd kube-apiserver kube-controller-manager >/dev/null
	@mkdir -p $(LOCALBIN) && ln -sfn $(ENVTEST_DIR) $(LOCALBIN)/k8s

# make prebuild builds, side by side, every program make verify and make
# test need and the module's compiled dependencies, and prints what took how
# long (hack/prebuild.sh): one build at a time left a core idle for most of a
# cold run. Each part is cached; a warm prebuild takes seconds.
.PHONY: prebuild
prebuild: ## Build (cached) every program the tests and make verify need, side by side, and print where the time went.
	@LOCALBIN=$(LOCALBIN) hack/prebuild.sh

.PHONY: test
test: prebuild manifests generate chart envtest tools cluster-binaries ## Run every test: unit, fuzz seeds, envtest suites, real nginx and Caddy, the Helm chart, e2e, the real-node suite (root; APITOKEN_SKIP_CLUSTER=1 skips it).
	KUBEBUILDER_ASSETS=$(ENVTEST_DIR) go test $(GO_TEST_FLAGS) ./...
	@cat $(LOCALBIN)/cluster-suite-timings.txt 2>/dev/null || true

# make test-k8s K8S_VERSION=1.33.13 runs the suites whose outcome the API
# server's version decides (the CRD's schema and CEL rules, the webhooks and
# their matchConditions, the ValidatingAdmissionPolicy, every envtest suite,
# the chart's server-side dry runs and installs) against that version's
# kube-apiserver, built from Go modules like the default's and cached by
# version. Not part of make test: run once per release (docs/releases.md).
K8S_TEST_PACKAGES ?= ./controllers/... ./webhook/... ./cmd/app/... ./internal/authserver/... ./internal/plugin/... ./test/helm/...

.PHONY: test-k8s
test-k8s: ## Run the envtest suites (CRD CEL rules, webhook matchConditions, ValidatingAdmissionPolicy, chart) against another Kubernetes: make test-k8s K8S_VERSION=1.33.13.
	@test "$(origin K8S_VERSION)" = "command line" || (echo "make test-k8s needs K8S_VERSION on the command line, e.g. make test-k8s K8S_VERSION=1.33.13"; exit 1)
	@hack/envtest-binaries.sh etcd kube-apiserver kube-controller-manager kubectl >/dev/null
	@$(ENVTEST_DIR)/kube-apiserver --version
	PATH=$(ENVTEST_DIR):$$PATH KUBEBUILDER_ASSETS=$(ENVTEST_DIR) go test $(GO_TEST_FLAGS) $(K8S_TEST_PACKAGES)

# The real-node suite (test/cluster) runs these besides the envtest binaries.
.PHONY: cluster-binaries
cluster-binaries: ## Build (once, cached per user) kube-scheduler, kubelet, kube-proxy, kubectl and CoreDNS for the real-node cluster.
	@if [ "$$APITOKEN_SKIP_CLUSTER" != 1 ]; then hack/envtest-binaries.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl >/dev/null && hack/coredns.sh >/dev/null; fi

.PHONY: test-cluster
test-cluster: cluster-binaries ## Run only the real-node suite (test/cluster: root; brings a cluster up and down).
	go test $(GO_TEST_FLAGS) -v ./test/cluster/

.PHONY: test-e2e
test-e2e: envtest ## Run the end-to-end tests against the built binary.
	KUBEBUILDER_ASSETS=$(ENVTEST_DIR) go test $(GO_TEST_FLAGS) ./test/e2e/...

.PHONY: fuzz
fuzz: ## Fuzz every fuzz target of the repository (discovered) for FUZZTIME each (default 20s).
	hack/fuzz.sh

# Sizes of the scale curve; make bench SCALE=1k,10k,100k adds 100k (most of an hour here).
SCALE ?= 1k,10k

.PHONY: bench
bench: envtest ## Measure against the alternatives (bench/) and write docs/benchmarks.md (SCALE=1k,10k,100k for the 100k point).
	go test -run '^$$' -bench . -benchmem ./internal/...
	KUBEBUILDER_ASSETS=$(ENVTEST_DIR) go run ./bench -out docs/benchmarks.md -scale $(SCALE)

.PHONY: tools
tools: ## Install (once, cached per user) the real programs the tests run: Caddy, promtool, helm.
	@hack/tools.sh caddy >/dev/null
	@hack/tools.sh promtool >/dev/null
	@hack/tools.sh helm >/dev/null

##@ Build

.PHONY: build
build: manifests generate ## Build the manager binary and the kubectl plugin (bin/kubectl-apitoken).
	go build -o $(LOCALBIN)/manager ./cmd
	go build -o $(LOCALBIN)/kubectl-apitoken ./cmd/kubectl-apitoken

# make run CLUSTER=current uses your kubeconfig's current context instead
# of a local control plane, and removes what it created when it stops. Only
# the make command line counts: a CLUSTER variable in your environment is
# ignored.
ifneq ($(origin CLUSTER),command line)
CLUSTER :=
endif

# make run LISTEN=0.0.0.0 opens the operator's ports (auth, gRPC, metrics,
# probes, webhooks) on every interface instead of 127.0.0.1 only. Only the
# make command line counts, as for CLUSTER.
ifneq ($(origin LISTEN),command line)
LISTEN :=
endif

.PHONY: run
run: manifests generate envtest ## Run the operator on a local control plane (ports on 127.0.0.1; LISTEN=0.0.0.0: every interface); CLUSTER=current: on your kubeconfig's cluster (cleaned up on exit).
	KUBEBUILDER_ASSETS=$(ENVTEST_DIR) CLUSTER=$(CLUSTER) hack/run-local.sh $(if $(LISTEN),-listen-address=$(LISTEN))

.PHONY: docker-build
docker-build: ## Build the container image with Docker (Dockerfile, distroless base).
	docker build -t $(IMG) .

# make image: the same binary and user as the Dockerfile's, built without a
# container daemon and without pulling a base image (hack/image).
IMAGE_ARCH ?= $(shell go env GOARCH)
IMAGE_TAR ?= $(LOCALBIN)/apitoken-operator-image.tar
IMAGE_OCI ?= $(LOCALBIN)/apitoken-operator-image.oci
IMAGE_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

.PHONY: image
image: ## Build the image without Docker: bin/apitoken-operator-image.tar (docker load, crane push) and an OCI layout; IMG names it.
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build -trimpath -ldflags="-s -w" -o $(LOCALBIN)/manager-linux-$(IMAGE_ARCH) ./cmd
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) go run ./hack/image -binary $(LOCALBIN)/manager-linux-$(IMAGE_ARCH) -tag $(IMG) \
		-o $(IMAGE_TAR) -oci-layout $(IMAGE_OCI) -version "$(IMAGE_VERSION)" -revision "$$(git rev-parse HEAD)"

# make release VERSION=v0.1.0 writes DIST (default dist/) from the
# committed files: the image (tarball, OCI layout, digest, SPDX SBOM), the
# chart package pinned to that image, the kubectl plugin's archives and
# krew manifest, and SHA256SUMS (docs/releases.md). Only a VERSION given on
# the make command line counts.
DIST ?= $(CURDIR)/dist

.PHONY: release
release: ## Write a release into dist/ (VERSION=vX.Y.Z): chart package, image tarball and OCI layout with its digest, SBOM, kubectl plugin archives, krew manifest, SHA256SUMS.
	@test "$(origin VERSION)" = "command line" || (echo "make release needs VERSION on the command line, e.g. make release VERSION=v0.1.0"; exit 1)
	go run ./hack/release -version "$(VERSION)" -dist "$(DIST)" -image-repository "$(IMAGE_REPOSITORY)" -arch "$(IMAGE_ARCH)"

##@ Cluster

.PHONY: cluster
cluster: ## Bring up a real single-node cluster on this machine (root; hack/cluster.sh): prints its kubeconfig and nodes.
	hack/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Remove the cluster of make cluster and restore what it changed on the host.
	hack/cluster.sh down

##@ Deployment

.PHONY: install
install: manifests ## Install the CRD into the cluster of the current kubeconfig.
	kubectl apply --server-side -f config/crd/bases

.PHONY: deploy
deploy: manifests ## Deploy the operator (kustomize config/default).
	kubectl apply --server-side -k config/default

# KEEP_CRD=false: make undeploy also deletes the CRD, and so every ApiToken
# and every token Secret in the cluster, and the namespace with the salt.
KEEP_CRD ?= true

.PHONY: undeploy
undeploy: ## Delete the operator but keep the CRD (every token) and its namespace (the salt); KEEP_CRD=false deletes them too.
	KEEP_CRD=$(KEEP_CRD) hack/undeploy.sh

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
