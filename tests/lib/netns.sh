# netns.sh: several test hosts on one machine, for tests of what crosses a network.
# Source it, then:
#   netns_up TAG HOST...      a switch namespace with a bridge, and one namespace per HOST joined to
#                             it by a veth pair; HOST i gets 169.254.<net>.<i+1>/24 (link-local: the
#                             addresses exist only inside these namespaces)
#   netns_ip TAG HOST         prints HOST's address
#   netns_exec TAG HOST CMD.. runs CMD inside HOST
#   netns_cut TAG HOST / netns_restore TAG HOST   take HOST's link down / up (a cable pulled)
#   netns_down TAG            removes everything netns_up made
# Needs root (CAP_NET_ADMIN) and iproute2. netns_available says whether this machine allows it.

netns_available() {
  [ "$(id -u)" -eq 0 ] || return 1
  command -v ip >/dev/null 2>&1 || return 1
  local probe="ember-probe-$$"
  ip netns add "$probe" 2>/dev/null || return 1
  ip netns del "$probe"
}

# A /24 per TAG so parallel tests never share addresses: 169.254.N.0 with N from the tag's hash.
_netns_net() { echo $(( ( $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 200 ) + 20 )); }

netns_up() {
  local tag=$1; shift
  local net; net=$(_netns_net "$tag")
  ip netns add "${tag}-sw"
  ip -n "${tag}-sw" link add br0 type bridge
  ip -n "${tag}-sw" link set br0 up
  ip -n "${tag}-sw" link set lo up
  local i=0 host
  : > "/tmp/${tag}.hosts"
  for host in "$@"; do
    i=$((i + 1))
    ip netns add "${tag}-${host}"
    ip -n "${tag}-${host}" link set lo up
    # interface names are at most 15 characters: keep them short and unique per host index
    ip link add "e${i}h${tag: -4}" type veth peer name "e${i}s${tag: -4}"
    ip link set "e${i}h${tag: -4}" netns "${tag}-${host}"
    ip link set "e${i}s${tag: -4}" netns "${tag}-sw"
    ip -n "${tag}-${host}" link set "e${i}h${tag: -4}" name eth0
    ip -n "${tag}-${host}" addr add "169.254.${net}.${i}/24" dev eth0
    ip -n "${tag}-${host}" link set eth0 up
    ip -n "${tag}-sw" link set "e${i}s${tag: -4}" master br0
    ip -n "${tag}-sw" link set "e${i}s${tag: -4}" up
    echo "${host} ${i}" >> "/tmp/${tag}.hosts"
  done
}

netns_ip() {
  local tag=$1 host=$2 net i
  net=$(_netns_net "$tag")
  i=$(awk -v h="$host" '$1 == h {print $2}' "/tmp/${tag}.hosts")
  echo "169.254.${net}.${i}"
}

netns_exec() { local tag=$1 host=$2; shift 2; ip netns exec "${tag}-${host}" "$@"; }

netns_cut() { ip -n "${1}-${2}" link set eth0 down; }
netns_restore() { ip -n "${1}-${2}" link set eth0 up; }

netns_down() {
  local tag=$1 host
  if [ -f "/tmp/${tag}.hosts" ]; then
    while read -r host _; do
      ip netns pids "${tag}-${host}" 2>/dev/null | xargs -r kill -9 2>/dev/null
      ip netns del "${tag}-${host}" 2>/dev/null
    done < "/tmp/${tag}.hosts"
    rm -f "/tmp/${tag}.hosts"
  fi
  ip netns del "${tag}-sw" 2>/dev/null
  return 0
}
