#!/usr/bin/env bash
# cluster.sh brings up (and removes) a real single-node Kubernetes cluster on
# this machine, the way kind's node image runs one, from parts built here:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy and kubectl from Go modules (hack/envtest-binaries.sh, cached
# by version), and Debian's containerd, runc, CNI plugins, iptables and
# conntrack. The pause image and the test images (hack/cluster/{pause,echo,
# client}, and Caddy's static binary from hack/tools.sh) are static Go
# binaries packed with go-containerregistry (hack/cluster/pack), cached by
# the hash of their sources (and Caddy's version), and imported
# with `ctr images import`: no registry is ever reached. Cluster DNS is
# CoreDNS (hack/coredns.sh: only the plugins it needs, no forward), run as
# a host process on the node's bridge address.
#
# Usage: hack/cluster.sh up|down|status|env|restart-node
#   up      remove what a previous (crashed) cluster left, then start one;
#           prints the kubeconfig path and `kubectl get nodes`
#   down    stop everything, remove every file, mount, netns, cgroup,
#           iptables chain, route and the bridge it created, and restore
#           the sysctls kubelet changes
#   status  print whether a cluster is running
#   env     print the paths a test needs (KUBECONFIG, KUBECTL, CTR, ...), as
#           shell assignments
#   restart-node
#           SIGKILL kubelet and containerd (a node's crash, the pods' shims
#           and containers left running) and start them again; returns once
#           kubelet is healthy and has reported the node Ready
#
# One cluster per machine (kubelet uses fixed paths and ports). Root only.
#
# Network, all on this machine: bridge cni0 10.88.0.1/24 is the node's
# address (the API server, kubelet and NodePorts bind to it or to
# 127.0.0.1); pods get 10.88.0.10-250 with routes only to the pod subnet and
# the service range (no default route, no masquerade); the service range
# 10.96.0.0/16 is routed to the bridge; a chain at the top of FORWARD
# (filter and mangle) accepts only bridge-to-bridge traffic; containerd's
# proxy is a dead loopback port, so an image pull fails at once.
#
# DNS: CoreDNS listens on $NODE_IP:53 (kubelet's clusterDNS) and answers
# cluster.local from the API server (its kubernetes plugin, as the user
# system:coredns with read access to Services, EndpointSlices and
# Namespaces); any other name is refused, never forwarded.
#
# Webhook token authentication: kube-apiserver starts with
# --authentication-token-webhook-config-file pointing at
# https://$AUTH_CLUSTER_IP:8082/v1/tokenreview, the ClusterIP the suite gives
# the auth Service (the chart's auth.service.clusterIP). The API server
# reads the CA of that file at start, before any chart is installed, so up
# makes the auth endpoint's CA and certificate (in $CLUSTER_DIR/auth-tls:
# ca.crt, tls.crt, tls.key, valid for the auth and usage Services' names
# and $AUTH_CLUSTER_IP), and the suite installs the chart with them
# (auth.tls.source=secret). Until a release serves there, a bearer token
# that is not a ServiceAccount token is refused after a failed call.
#
# containerd: Debian's 1.6 (bookworm's containerd 1.6.20), not v2 built
# from github.com/containerd/containerd/v2. It costs nothing to build (v2
# took 163 s here under load, on top of a cold suite that is already long)
# and is what a Debian CI machine has; kubelet 1.37 (K8S_VERSION) logs that
# 1.6 does not implement RuntimeConfig and falls back to its own
# cgroupDriver (cgroupfs, set below). Kubelet 1.38 removes that fallback:
# moving K8S_VERSION to 1.38 means building containerd v2 here instead.
#
# Environment: CLUSTER_DIR (default /tmp/apitoken-cluster: the state, removed
# by down), CLUSTER_CACHE (default ${XDG_DATA_HOME:-$HOME/.local/share}/
# apitoken-operator/cluster: built images, kept), K8S_VERSION, ETCD_VERSION.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/apitoken-cluster}
CLUSTER_CACHE=${CLUSTER_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/cluster}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

NODE_NAME=apitoken-node
BRIDGE=cni0
NODE_IP=10.88.0.1
POD_CIDR=10.88.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
# The cluster DNS server (kubelet's clusterDNS): CoreDNS on the node.
DNS_IP=$NODE_IP
CLUSTER_DOMAIN=cluster.local
COREDNS_HEALTH=127.0.0.1:18080
COREDNS_READY=127.0.0.1:18181
# The auth Service's fixed ClusterIP and namespace in the suite (and the
# certificate up makes for it).
AUTH_CLUSTER_IP=10.96.0.20
AUTH_NAMESPACE=apitoken-system
API_PORT=6443
ETCD_PORT=12379
# Nothing listens on the discard port: every pull through the proxy is refused.
DEAD_PROXY=http://127.0.0.1:9
CNI_BIN=/usr/lib/cni
FORWARD_CHAIN=APITOKEN-FORWARD
# Images the cluster and the suite run (imagePullPolicy: Never).
PAUSE_IMAGE=localhost/apitoken-pause:1
ECHO_IMAGE=localhost/apitoken-echo:1
CLIENT_IMAGE=localhost/apitoken-client:1
# Caddy (hack/tools.sh caddy), the in-cluster proxy of the suite: the image
# of the version hack/tools.sh builds.
CADDY_IMAGE=
# Debian packages: what each provides.
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack)

SOCK=$CLUSTER_DIR/containerd/containerd.sock
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig
# Fixed paths kubelet and containerd use whatever their configuration says.
FIXED_PATHS=(/var/lib/kubelet /var/lib/cni /var/log/containers /var/log/pods /run/containerd)
# The sysctls kubelet (protectKernelDefaults: false), the CNI bridge plugin
# and this script set; down restores their recorded values.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }
LOG_PREFIX=cluster
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1fs", b - a}'; }

# --- prerequisites -----------------------------------------------------------

# prerequisites installs the Debian packages when a command is missing (a
# fresh CI machine) and fails naming what is still missing.
prerequisites() {
  [[ $(id -u) == 0 ]] || die "root is needed (kubelet, containerd, bridges, iptables); run as root, or set APITOKEN_SKIP_CLUSTER=1 to skip the cluster suite"
  local missing=()
  for c in containerd containerd-shim-runc-v2 ctr runc iptables ip6tables iptables-save conntrack ip openssl flock setsid; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  for p in bridge host-local loopback; do
    [[ -x $CNI_BIN/$p ]] || missing+=("$CNI_BIN/$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "missing ${missing[*]}: installing ${PACKAGES[*]} with apt-get"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install ${PACKAGES[*]} (Debian names)"
    run "apt-get update" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive run "apt-get install ${PACKAGES[*]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
    # Debian's package starts containerd with /etc/containerd/config.toml
    # where there is an init system; the cluster runs its own.
    if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
      systemctl stop containerd && systemctl disable -q containerd || true
    fi
  fi
  for c in containerd ctr runc iptables conntrack; do
    command -v "$c" >/dev/null 2>&1 || die "$c is still missing after installing ${PACKAGES[*]}"
  done
  [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] || die "no memory cgroup controller mounted under /sys/fs/cgroup"
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || die "module br_netfilter is not loaded (kube-proxy needs bridged traffic to pass iptables): modprobe br_netfilter"
}

# --- binaries and images -----------------------------------------------------

binaries() {
  local t
  t=$(now)
  K8S_DIR=$(hack/envtest-binaries.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  COREDNS_BIN=$(CLUSTER_CACHE=$CLUSTER_CACHE hack/coredns.sh)
  log "binaries ready in $K8S_DIR and $COREDNS_BIN ($(since "$t"))"
}

# images builds the pause, echo, client and Caddy images once per version
# of their sources (and of Go, and of Caddy) into the cache and prints
# their directory.
images() {
  local key dir t caddy version
  caddy=$(hack/tools.sh caddy)
  # .../caddy-v2.11.9-linux-amd64/caddy
  version=${caddy%/caddy}
  version=${version##*/caddy-}
  CADDY_IMAGE=localhost/apitoken-caddy:${version%%-*}
  key=$( (go version; cat go.sum hack/cluster/*/*.go; echo "$PAUSE_IMAGE $ECHO_IMAGE $CLIENT_IMAGE $CADDY_IMAGE $caddy") | sha256sum | cut -c1-16)
  dir=$CLUSTER_CACHE/images-$key
  IMAGES_DIR=$dir
  [[ -f $dir/.done ]] && return 0
  t=$(now)
  mkdir -p "$dir"
  local arch
  arch=$(go env GOARCH)
  local name tag
  for name in pause echo client; do
    case $name in pause) tag=$PAUSE_IMAGE ;; echo) tag=$ECHO_IMAGE ;; client) tag=$CLIENT_IMAGE ;; esac
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch run "build $name" go build -trimpath -ldflags="-s -w" -o "$dir/$name" "./hack/cluster/$name"
    GOARCH=$arch run "pack $name" go run ./hack/cluster/pack -binary "$dir/$name" -path "/$name" -tag "$tag" -o "$dir/$name.tar"
  done
  GOARCH=$arch run "pack caddy" go run ./hack/cluster/pack -binary "$caddy" -path /caddy -tag "$CADDY_IMAGE" -o "$dir/caddy.tar"
  echo "$CADDY_IMAGE" >"$dir/caddy-image"
  touch "$dir/.done"
  log "images built in $dir ($(since "$t"))"
}

# --- processes ---------------------------------------------------------------

# start NAME CMD...: runs CMD detached from this script (its own session, no
# inherited descriptors), logging to logs/NAME.log, and records its pid.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$CLUSTER_DIR/logs/$name.log" 2>&1 9>&- &
  echo "$! $1" >"$CLUSTER_DIR/pids/$name"
}

# alive NAME: the recorded process still runs the recorded binary.
alive() {
  local f=$CLUSTER_DIR/pids/$1 pid exe
  [[ -f $f ]] || return 1
  read -r pid exe <"$f"
  [[ -e /proc/$pid ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$exe")" ]]
}

# stop NAME: SIGTERM, up to 10 s, then SIGKILL, the recorded process only.
stop() {
  local f=$CLUSTER_DIR/pids/$1 pid exe
  [[ -f $f ]] || return 0
  read -r pid exe <"$f"
  if alive "$1"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$1" || break; sleep 0.1; done
    alive "$1" && kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
  fi
  rm -f "$f"
}

# wait_for WHAT SECONDS CMD...: polls CMD every 0.2 s; on timeout prints the
# end of the logs and fails.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      log "timed out after ${secs}s waiting for $what; the end of each log:"
      for f in "$CLUSTER_DIR"/logs/*.log; do
        echo "--- $f" >&2
        tail -n 15 "$f" >&2
      done
      exit 1
    fi
    sleep 0.2
  done
}

kubectl_() { "$K8S_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# --- PKI ---------------------------------------------------------------------

pki() {
  local d=$CLUSTER_DIR/pki
  mkdir -p "$d"
  (
    cd "$d"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=apitoken-cluster-ca" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # cert NAME SUBJECT USAGE [SANS]
    cert() {
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        [[ -n ${4:-} ]] && echo "subjectAltName=$4"
      } >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    cert apiserver "/CN=kube-apiserver" serverAuth \
      "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    cert admin "/O=system:masters/CN=apitoken-cluster-admin" clientAuth
    cert controller-manager "/CN=system:kube-controller-manager" clientAuth
    cert scheduler "/CN=system:kube-scheduler" clientAuth
    cert kube-proxy "/CN=system:kube-proxy" clientAuth
    cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    cert kubelet-server "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
    cert coredns "/CN=system:coredns" clientAuth
  )
  auth_tls
  local who
  for who in admin controller-manager scheduler kube-proxy kubelet-client coredns; do
    cat >"$CLUSTER_DIR/$who.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: apitoken
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $d/ca.crt
users:
- name: $who
  user:
    client-certificate: $d/$who.crt
    client-key: $d/$who.key
contexts:
- name: apitoken
  context: {cluster: apitoken, user: $who}
current-context: apitoken
EOF
  done
  mv "$CLUSTER_DIR/admin.kubeconfig" "$KUBECONFIG_PATH"
  # kube-apiserver's webhook token authentication: the auth Service by its
  # ClusterIP, trusting the auth endpoint's CA (auth_tls).
  cat >"$CLUSTER_DIR/authn-webhook.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: apitoken
  cluster:
    server: https://$AUTH_CLUSTER_IP:8082/v1/tokenreview
    certificate-authority: $CLUSTER_DIR/auth-tls/ca.crt
users:
- name: kube-apiserver
contexts:
- name: apitoken
  context: {cluster: apitoken, user: kube-apiserver}
current-context: apitoken
EOF
}

# auth_tls makes the auth endpoint's own CA and its serving certificate
# (what the chart's auth.tls.source=secret takes), valid for the auth and
# usage Services in $AUTH_NAMESPACE, for $AUTH_CLUSTER_IP, and for
# 127.0.0.1, the local end of a `kubectl port-forward` to the Service.
auth_tls() {
  local d=$CLUSTER_DIR/auth-tls svc sans=""
  mkdir -p "$d"
  for svc in apitoken-operator-auth apitoken-operator-usage; do
    sans+="DNS:$svc.$AUTH_NAMESPACE.svc,DNS:$svc.$AUTH_NAMESPACE.svc.$CLUSTER_DOMAIN,"
  done
  (
    cd "$d"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=apitoken-operator-auth-ca" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=apitoken-operator-auth.$AUTH_NAMESPACE.svc" -keyout tls.key -out tls.csr 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=${sans}IP:$AUTH_CLUSTER_IP,IP:127.0.0.1" >tls.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile tls.ext -out tls.crt 2>/dev/null
    rm -f tls.csr tls.ext ca.srl ca.key
  )
}

# --- host state: record, network, restore ------------------------------------

record_host() {
  [[ -f $CLUSTER_DIR/host/sysctls ]] && return 0
  mkdir -p "$CLUSTER_DIR/host"
  local s
  for s in "${SYSCTLS[@]}"; do
    if v=$(sysctl -n "$s" 2>/dev/null); then echo "$s=$v"; fi
  done >"$CLUSTER_DIR/host/sysctls.tmp"
  nft list tables 2>/dev/null >"$CLUSTER_DIR/host/nft-tables" || true
  local p
  for p in "${FIXED_PATHS[@]}"; do
    [[ -e $p ]] && echo "$p"
  done >"$CLUSTER_DIR/host/existing-paths" || true
  mv "$CLUSTER_DIR/host/sysctls.tmp" "$CLUSTER_DIR/host/sysctls"
}

network_up() {
  ip link add "$BRIDGE" type bridge
  sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1"
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # The CNI bridge plugin turns on forwarding for its gateway; the chain
  # below keeps it to the bridge.
  sysctl -qw net.ipv4.ip_forward=1
  local t
  for t in filter mangle; do
    iptables -t "$t" -N "$FORWARD_CHAIN"
    iptables -t "$t" -A "$FORWARD_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
    iptables -t "$t" -A "$FORWARD_CHAIN" -j DROP
    iptables -t "$t" -I FORWARD 1 -j "$FORWARD_CHAIN"
  done
  mkdir -p "$CLUSTER_DIR/cni/net.d" "$CLUSTER_DIR/cni/ipam"
  cat >"$CLUSTER_DIR/cni/net.d/10-apitoken.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "apitoken",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": true,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$CLUSTER_DIR/cni/ipam",
      "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.88.0.10", "rangeEnd": "10.88.0.250", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "$SERVICE_CIDR"}]
    }
  }]
}
EOF
}

# remove_chains BINARY: deletes every KUBE-* and APITOKEN-* chain of every
# table, and the rules of the built-in chains that jump to them.
remove_chains() {
  local ipt=$1 save=${1}-save t rule chain
  command -v "$ipt" >/dev/null || return 0
  for t in filter nat mangle raw; do
    "$save" -t "$t" >/dev/null 2>&1 || continue
    while IFS= read -r rule; do
      eval "$ipt -t $t -D ${rule#-A }" 2>/dev/null || true
    done < <("$save" -t "$t" | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|APITOKEN-)' || true)
    for chain in $("$save" -t "$t" | sed -n 's/^:\(\(KUBE-\|APITOKEN-\)[^ ]*\) .*/\1/p'); do
      "$ipt" -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$save" -t "$t" | sed -n 's/^:\(\(KUBE-\|APITOKEN-\)[^ ]*\) .*/\1/p'); do
      "$ipt" -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}

# nft_prune: removes the nft tables iptables-nft created for the cluster
# (absent before up, holding no rule now) and kube-proxy's own.
nft_prune() {
  command -v nft >/dev/null || return 0
  local fam tbl
  while read -r _ fam tbl; do
    [[ -n $tbl ]] || continue
    if [[ $tbl == kube-proxy ]]; then
      nft delete table "$fam" "$tbl" 2>/dev/null || true
      continue
    fi
    grep -qx "table $fam $tbl" "$CLUSTER_DIR/host/nft-tables" 2>/dev/null && continue
    if ! nft list table "$fam" "$tbl" 2>/dev/null | grep -qE '^\s+(counter|meta|ip|iifname|oifname|jump|accept|drop|ct|tcp|udp|mark)'; then
      nft delete table "$fam" "$tbl" 2>/dev/null || true
    fi
  done < <(nft list tables 2>/dev/null)
}

# kill_cgroup_procs: SIGKILLs what still runs in the pods' cgroups.
kill_cgroup_procs() {
  local f pid
  for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $f ]] || continue
    while read -r pid; do
      [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done < <(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
  done
}

remove_cgroups() {
  local f
  for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $f ]] || continue
    for _ in 1 2 3 4 5; do
      find "$f" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [[ -d $f ]] || break
      sleep 0.2
    done
  done
}

# unmount_under PREFIX...: unmounts every mount below the prefixes, deepest first.
unmount_under() {
  local m p
  for _ in 1 2 3; do
    local found=0
    while read -r m; do
      for p in "$@"; do
        if [[ $m == "$p" || $m == "$p"/* ]]; then
          found=1
          umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        fi
      done
    done < <(awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' | sort -r)
    ((found)) || break
  done
}

# --- up and down --------------------------------------------------------------

# down removes everything a cluster (running or crashed) left on the host.
down() {
  local t
  t=$(now)
  [[ -d $CLUSTER_DIR ]] || { log "no cluster state in $CLUSTER_DIR"; cleanup_fixed; return 0; }
  local c
  for c in coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver; do stop "$c"; done
  # Every container and its shim, by the pids they recorded.
  kill_cgroup_procs
  local f pid
  for f in "$CLUSTER_DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid /run/containerd/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */containerd-shim-runc-v2 ]] && kill -KILL "$pid" 2>/dev/null || true
  done
  stop containerd
  local leaked=0
  kill_shims || leaked=1
  stop etcd
  kill_leftovers || leaked=1
  kill_cgroup_procs
  unmount_under "$CLUSTER_DIR" /var/lib/kubelet /run/containerd /var/run/netns /run/netns
  local ns
  for ns in /run/netns/cni-*; do [[ -e $ns ]] && rm -f "$ns"; done
  rmdir /run/netns 2>/dev/null || true
  remove_cgroups
  remove_chains iptables
  remove_chains ip6tables
  # The conntrack entries of the pod subnet and the service range.
  conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
  conntrack -D -d "$POD_CIDR" >/dev/null 2>&1 || true
  conntrack -D -d "$SERVICE_CIDR" >/dev/null 2>&1 || true
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  local veth
  for veth in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    [[ $(ip -o link show "$veth" 2>/dev/null) == *"master $BRIDGE"* ]] && ip link del "$veth" 2>/dev/null || true
  done
  if [[ -f $CLUSTER_DIR/host/sysctls ]]; then
    local kv
    while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null || log "could not restore $kv"; done <"$CLUSTER_DIR/host/sysctls"
  fi
  nft_prune
  cleanup_fixed
  rm -rf "$CLUSTER_DIR"
  if ((leaked)); then
    log "down: removed the cluster, but some of its processes were left running ($(since "$t"))"
    return 1
  fi
  log "down: removed the cluster and restored the host ($(since "$t"))"
}

# kill_shims kills every containerd-shim-runc-v2 of this cluster's
# containerd, found by the socket address on its command line: a shim whose
# task state is already gone (or that outlived containerd) records no pid
# where the loop above looks. Fails if one is left.
kill_shims() {
  local pid pids
  for _ in 1 2 3 4 5; do
    pids=$(cluster_shims)
    [[ -n $pids ]] || return 0
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.2
  done
  pids=$(cluster_shims)
  [[ -z $pids ]] && return 0
  log "containerd shims still running after down: $pids"
  return 1
}

# kill_leftovers SIGKILLs any process of the cluster that no pid file
# named (one started by a crashed up or restart-node): a cluster binary
# (kubelet, kube-*, etcd, containerd*, coredns) whose command line names
# the state directory. It fails (after killing them) if there was one.
kill_leftovers() {
  local p pid exe cmd found=()
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid == "$$" ]] && continue
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case ${exe##*/} in kubelet | kube-* | etcd | containerd | containerd-shim* | coredns) ;; *) continue ;; esac
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    [[ $cmd == *"$CLUSTER_DIR/"* ]] || continue
    found+=("$pid ${exe##*/}")
    kill -KILL "$pid" 2>/dev/null || true
  done
  [[ ${#found[@]} -eq 0 ]] && return 0
  log "killed processes of the cluster that no pid file named: ${found[*]}"
  return 1
}

# cluster_shims prints the pids of this cluster's shims.
cluster_shims() {
  local pid cmd
  for pid in $(pgrep -f containerd-shim-runc-v2 2>/dev/null); do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    [[ $cmd == *"-address $SOCK"* ]] && echo "$pid"
  done
  return 0
}

# cleanup_fixed removes the fixed paths kubelet and containerd create,
# unless they were there before the cluster first came up.
cleanup_fixed() {
  local p
  for p in "${FIXED_PATHS[@]}"; do
    [[ -e $p ]] || continue
    if grep -qx "$p" "$CLUSTER_DIR/host/existing-paths" 2>/dev/null; then continue; fi
    unmount_under "$p"
    rm -rf "$p"
  done
}

containerd_config() {
  mkdir -p "$CLUSTER_DIR/containerd"
  cat >"$CLUSTER_DIR/containerd/config.toml" <<EOF
version = 2
root = "$CLUSTER_DIR/containerd/root"
state = "$CLUSTER_DIR/containerd/state"
# Only what the CRI needs: no /opt/containerd, no other snapshotters.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: without this runc cannot set the
  # pause container's oom_score_adj and every sandbox fails.
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$CLUSTER_DIR/cni/net.d"
    max_conf_num = 1
EOF
}

kubelet_config() {
  cat >"$CLUSTER_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CLUSTER_DIR/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $CLUSTER_DIR/pki/kubelet-server.crt
tlsPrivateKeyFile: $CLUSTER_DIR/pki/kubelet-server.key
# cgroup v1 (hybrid) here; 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
protectKernelDefaults: false
# root lacks CAP_SYS_RESOURCE: leave kubelet's own oom_score_adj alone.
oomScoreAdj: 0
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_IP]
# Pods resolve through the cluster DNS only: nothing of the host's.
resolvConf: ""
podLogsDir: $CLUSTER_DIR/log/pods
failSwapOn: false
serializeImagePulls: false
# The images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
mergeDefaultEvictionSettings: false
rotateCertificates: false
serverTLSBootstrap: false
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 1h
staticPodPath: ""
EOF
  cat >"$CLUSTER_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
# NodePorts only on the node's bridge address.
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
iptables:
  localhostNodePorts: false
  masqueradeAll: false
  syncPeriod: 30s
  minSyncPeriod: 0s
# Zeros: kube-proxy changes no conntrack sysctl.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# coredns_config writes the Corefile and the RBAC that lets CoreDNS (user
# system:coredns) read what it answers from.
coredns_config() {
  cat >"$CLUSTER_DIR/Corefile" <<EOF
# Cluster names only: no forward plugin, so any other name is refused and
# no query ever leaves this machine.
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $DNS_IP
    errors
    health $COREDNS_HEALTH
    ready $COREDNS_READY
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $CLUSTER_DIR/coredns.kubeconfig apitoken
        ttl 5
    }
    cache 5
}
EOF
  cat >"$CLUSTER_DIR/coredns-rbac.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- {apiGroups: [""], resources: [services, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}]
EOF
}

# http_ok HOST:PORT PATH: a plain HTTP GET answers 200 (bash only: no curl
# on a fresh machine).
http_ok() (
  exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "${1%:*}" >&3
  read -r line <&3
  [[ $line == *" 200 "* ]]
)

# start_containerd and start_kubelet are how up and restart-node start them.
start_containerd() {
  HTTP_PROXY=$DEAD_PROXY HTTPS_PROXY=$DEAD_PROXY NO_PROXY="" http_proxy=$DEAD_PROXY https_proxy=$DEAD_PROXY no_proxy="" \
    start containerd "$(command -v containerd)" --config "$CLUSTER_DIR/containerd/config.toml"
}

start_kubelet() {
  start kubelet "$K8S_DIR/kubelet" --config "$CLUSTER_DIR/kubelet.yaml" \
    --kubeconfig "$CLUSTER_DIR/kubelet-client.kubeconfig" --root-dir "$CLUSTER_DIR/kubelet" \
    --cert-dir "$CLUSTER_DIR/pki" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME"
}

ready_node() {
  kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

up() {
  local t0 t
  t0=$(now)
  prerequisites
  if [[ -d $CLUSTER_DIR ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "removing what a previous cluster left"
    down
  fi
  binaries
  images
  mkdir -p "$CLUSTER_DIR"/{logs,pids,etcd,kubelet,log/pods}
  echo "$K8S_DIR" >"$CLUSTER_DIR/k8s-dir"
  echo "$IMAGES_DIR" >"$CLUSTER_DIR/images-dir"
  record_host
  network_up
  pki
  containerd_config
  kubelet_config
  coredns_config
  t=$(now)
  start etcd "$K8S_DIR/etcd" --name node --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "node=http://127.0.0.1:$((ETCD_PORT + 1))" --listen-metrics-urls "" --unsafe-no-fsync --log-level warn
  start_containerd
  local p=$CLUSTER_DIR/pki
  start kube-apiserver "$K8S_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$p/ca.crt" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$p/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --authentication-token-webhook-config-file "$CLUSTER_DIR/authn-webhook.kubeconfig" --authentication-token-webhook-version v1 \
    --allow-privileged=true --profiling=false --anonymous-auth=true
  wait_for "etcd" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"
  wait_for "containerd" 30 ctr --address "$SOCK" version
  import_images
  wait_for "kube-apiserver /readyz" 60 kubectl_ get --raw /readyz
  log "etcd, containerd and kube-apiserver ready ($(since "$t"))"
  run "RBAC of system:coredns" kubectl_ apply -f "$CLUSTER_DIR/coredns-rbac.yaml"
  start coredns "$COREDNS_BIN" -conf "$CLUSTER_DIR/Corefile"
  start kube-controller-manager "$K8S_DIR/kube-controller-manager" \
    --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
  start kube-scheduler "$K8S_DIR/kube-scheduler" \
    --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
  start_kubelet
  start kube-proxy "$K8S_DIR/kube-proxy" --config "$CLUSTER_DIR/kube-proxy.yaml"
  wait_for "node $NODE_NAME Ready" 90 ready_node
  wait_for "CoreDNS ready (http://$COREDNS_READY/ready)" 30 http_ok "$COREDNS_READY" /ready
  # Pods are refused until the controller manager made the ServiceAccount.
  wait_for "ServiceAccount default/default" 60 kubectl_ -n default get serviceaccount default
  log "up: node Ready ($(since "$t0") in all, $(since "$t") after the first process)"
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  kubectl_ get nodes -o wide
}

import_images() {
  local name
  for name in pause echo client caddy; do
    run "import $name" ctr --address "$SOCK" -n k8s.io images import "$IMAGES_DIR/$name.tar"
  done
}

status() {
  local c ok=0
  for c in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns; do
    if alive "$c"; then echo "$c: running"; else echo "$c: not running"; ok=1; fi
  done
  return $ok
}

env_() {
  [[ -f $CLUSTER_DIR/k8s-dir ]] || die "no cluster in $CLUSTER_DIR: hack/cluster.sh up"
  local k
  k=$(cat "$CLUSTER_DIR/k8s-dir")
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  echo "KUBECTL=$k/kubectl"
  echo "CTR_ADDRESS=$SOCK"
  echo "NODE_NAME=$NODE_NAME"
  echo "NODE_IP=$NODE_IP"
  echo "CLUSTER_DIR=$CLUSTER_DIR"
  echo "PAUSE_IMAGE=$PAUSE_IMAGE"
  echo "ECHO_IMAGE=$ECHO_IMAGE"
  echo "CLIENT_IMAGE=$CLIENT_IMAGE"
  echo "CADDY_IMAGE=$(cat "$(cat "$CLUSTER_DIR/images-dir")/caddy-image")"
  echo "DNS_IP=$DNS_IP"
  echo "AUTH_CLUSTER_IP=$AUTH_CLUSTER_IP"
  echo "AUTH_NAMESPACE=$AUTH_NAMESPACE"
  echo "AUTH_TLS_DIR=$CLUSTER_DIR/auth-tls"
}

# heartbeat_since EPOCH: the node's Ready condition is True with a
# heartbeat from kubelet at or after EPOCH (a status from before a restart
# stays True for the node's grace period: it proves nothing).
heartbeat_since() {
  local out
  out=$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}') || return 1
  [[ ${out%% *} == True ]] && (($(date -d "${out#* }" +%s) >= $1))
}

# restart_node SIGKILLs kubelet and containerd, as a node's crash or an OOM
# kill would (the shims, the containers and the pods' network stay), starts
# them again and waits for kubelet's health and for its first heartbeat
# with the node Ready.
restart_node() {
  [[ -f $CLUSTER_DIR/k8s-dir ]] || die "no cluster in $CLUSTER_DIR: hack/cluster.sh up"
  K8S_DIR=$(cat "$CLUSTER_DIR/k8s-dir")
  local t c pid exe killed
  t=$(now)
  killed=$(date +%s)
  for c in kubelet containerd; do
    alive "$c" || die "$c is not running"
    read -r pid exe <"$CLUSTER_DIR/pids/$c"
    kill -KILL "$pid"
  done
  for c in kubelet containerd; do
    for _ in $(seq 50); do alive "$c" || break; sleep 0.1; done
    alive "$c" && die "$c survived SIGKILL"
    rm -f "$CLUSTER_DIR/pids/$c"
    mv "$CLUSTER_DIR/logs/$c.log" "$CLUSTER_DIR/logs/$c.log.$killed"
  done
  log "restart-node: killed kubelet and containerd (SIGKILL)"
  start_containerd
  wait_for "containerd" 30 ctr --address "$SOCK" version
  start_kubelet
  wait_for "kubelet healthz" 60 http_ok 127.0.0.1:10248 /healthz
  log "restart-node: kubelet healthy ($(since "$t"))"
  wait_for "node $NODE_NAME Ready with a heartbeat since the restart" 90 heartbeat_since "$killed"
  log "restart-node: kubelet and containerd running again ($(since "$t"))"
}

# lock: one up or down at a time (the lock lives in the cache, which down keeps).
lock() {
  mkdir -p "$CLUSTER_CACHE"
  exec 9>"$CLUSTER_CACHE/.lock"
  flock 9
}

case "${1:-}" in
  up) lock; up ;;
  down) [[ $(id -u) == 0 ]] || die "root is needed"; lock; down ;;
  status) status ;;
  env) env_ ;;
  restart-node) [[ $(id -u) == 0 ]] || die "root is needed"; lock; restart_node ;;
  *) echo "usage: hack/cluster.sh up|down|status|env|restart-node" >&2; exit 2 ;;
esac
