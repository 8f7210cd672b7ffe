#include "netfilter/link.h"

#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sched.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

namespace qufop::netfilter {
namespace {

// RAII for every libnl object this file touches.
struct SockFree {
  void operator()(nl_sock* p) const { nl_socket_free(p); }
};
struct MsgFree {
  void operator()(nl_msg* p) const { nlmsg_free(p); }
};
struct LinkPut {
  void operator()(rtnl_link* p) const { rtnl_link_put(p); }
};
struct AddrPut {
  void operator()(nl_addr* p) const { nl_addr_put(p); }
};
struct RtnlAddrPut {
  void operator()(rtnl_addr* p) const { rtnl_addr_put(p); }
};
struct CacheFree {
  void operator()(nl_cache* p) const { nl_cache_free(p); }
};
using SockPtr = std::unique_ptr<nl_sock, SockFree>;
using MsgPtr = std::unique_ptr<nl_msg, MsgFree>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkPut>;
using AddrPtr = std::unique_ptr<nl_addr, AddrPut>;
using RtnlAddrPtr = std::unique_ptr<rtnl_addr, RtnlAddrPut>;
using CachePtr = std::unique_ptr<nl_cache, CacheFree>;

// libnl returns -NLE_* codes (it folds errno into its own set).
Error nl_error(const std::string& call, int nlerr) {
  if (nlerr < 0) nlerr = -nlerr;
  std::string code = "io";
  switch (nlerr) {
    case NLE_EXIST:
      code = "already_exists";
      break;
    case NLE_PERM:
    case NLE_NOACCESS:
      code = "permission_denied";
      break;
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
      code = "not_found";
      break;
    case NLE_INVAL:
    case NLE_RANGE:
      code = "invalid_argument";
      break;
    case NLE_BUSY:
    case NLE_AGAIN:
    case NLE_OPNOTSUPP:
      code = "unavailable";
      break;
    default:
      break;
  }
  return {std::move(code), call + ": " + nl_geterror(nlerr), 0};
}

bool is_not_found(int nlerr) { return nlerr == -NLE_OBJ_NOTFOUND || nlerr == -NLE_NODEV; }

Result<SockPtr> open_socket() {
  SockPtr sock(nl_socket_alloc());
  if (!sock) return Error{"internal", "nl_socket_alloc: out of memory", ENOMEM};
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return nl_error("nl_connect(NETLINK_ROUTE)", err);
  }
  return sock;
}

Result<AddrPtr> make_ipv4(Ipv4 ip, int prefix) {
  uint32_t be = htonl(ip.value);
  AddrPtr a(nl_addr_build(AF_INET, &be, sizeof be));
  if (!a) return Error{"internal", "nl_addr_build: out of memory", ENOMEM};
  nl_addr_set_prefixlen(a.get(), prefix);
  return a;
}

Ipv4 to_ipv4(const nl_addr* a) {
  uint32_t be = 0;
  if (nl_addr_get_len(a) == sizeof be) std::memcpy(&be, nl_addr_get_binary_addr(a), sizeof be);
  return {ntohl(be)};
}

// An RTM_NEWLINK request for an existing link, by index or (index 0) by name.
Result<MsgPtr> link_request(int ifindex, const std::string& name, unsigned flags, unsigned change) {
  MsgPtr msg(nlmsg_alloc_simple(RTM_NEWLINK, 0));
  if (!msg) return Error{"internal", "nlmsg_alloc: out of memory", ENOMEM};
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  ifi.ifi_flags = flags;
  ifi.ifi_change = change;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      (ifindex == 0 && nla_put_string(msg.get(), IFLA_IFNAME, name.c_str()) < 0)) {
    return Error{"internal", "nlmsg_append: message too long", 0};
  }
  return msg;
}

// Sends and waits for the kernel's acknowledgement (nl_send_sync frees the message).
Result<void> send_sync(nl_sock* sock, MsgPtr msg, const std::string& what) {
  if (int err = nl_send_sync(sock, msg.release()); err < 0) return nl_error(what, err);
  return ok();
}

LinkInfo to_info(rtnl_link* link) {
  LinkInfo info;
  info.ifindex = rtnl_link_get_ifindex(link);
  if (const char* n = rtnl_link_get_name(link)) info.name = n;
  if (const char* k = rtnl_link_get_type(link)) info.kind = k;
  if (const char* a = rtnl_link_get_ifalias(link)) info.alias = a;
  info.mtu = rtnl_link_get_mtu(link);
  info.master = rtnl_link_get_master(link);
  info.up = (rtnl_link_get_flags(link) & IFF_UP) != 0;
  return info;
}

}  // namespace

std::string host_link_name(std::string_view instance_id) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : instance_id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "%012llx", static_cast<unsigned long long>(h >> 16));
  return std::string(kVethPrefix) + buf;
}

Result<void> validate_link_name(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return Error::invalid("link name '" + std::string(name) + "': must be 1.." +
                          std::to_string(IFNAMSIZ - 1) + " characters");
  }
  for (char c : name) {
    if (c == '/' || c == ':' || c <= ' ' || c > '~' || c == '"' || c == '\\') {
      return Error::invalid("link name '" + std::string(name) +
                            "': no '/', ':', quotes or whitespace allowed");
    }
  }
  return ok();
}

Result<std::unique_ptr<NetlinkLinkOps>> NetlinkLinkOps::open() {
  auto sock = open_socket();
  if (!sock) return sock.error();
  return std::unique_ptr<NetlinkLinkOps>(new NetlinkLinkOps(sock->release()));
}

NetlinkLinkOps::~NetlinkLinkOps() { nl_socket_free(sock_); }

Result<std::optional<LinkInfo>> NetlinkLinkOps::find_link(const std::string& name) {
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sock_, 0, name.c_str(), &raw);
  LinkPtr link(raw);
  if (is_not_found(err)) return std::optional<LinkInfo>();
  if (err < 0) return nl_error("RTM_GETLINK(" + name + ")", err);
  LinkInfo info = to_info(link.get());

  nl_cache* cache_raw = nullptr;
  if ((err = rtnl_addr_alloc_cache(sock_, &cache_raw)) < 0) {
    return nl_error("RTM_GETADDR", err);
  }
  CachePtr cache(cache_raw);
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    if (rtnl_addr_get_ifindex(a) != info.ifindex || rtnl_addr_get_family(a) != AF_INET) continue;
    const nl_addr* local = rtnl_addr_get_local(a);
    if (!local) continue;
    info.addresses.push_back(Cidr{to_ipv4(local), static_cast<int>(nl_addr_get_prefixlen(local))});
  }
  return std::optional<LinkInfo>(std::move(info));
}

Result<std::vector<LinkInfo>> NetlinkLinkOps::list_links() {
  nl_cache* raw = nullptr;
  if (int err = rtnl_link_alloc_cache(sock_, AF_UNSPEC, &raw); err < 0) {
    return nl_error("RTM_GETLINK dump", err);
  }
  CachePtr cache(raw);
  std::vector<LinkInfo> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    out.push_back(to_info(reinterpret_cast<rtnl_link*>(o)));
  }
  return out;
}

Result<std::vector<RouteInfo>> NetlinkLinkOps::list_routes() {
  nl_cache* raw = nullptr;
  if (int err = rtnl_route_alloc_cache(sock_, AF_INET, 0, &raw); err < 0) {
    return nl_error("RTM_GETROUTE dump", err);
  }
  CachePtr cache(raw);
  std::vector<RouteInfo> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* r = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_family(r) != AF_INET || rtnl_route_get_table(r) != RT_TABLE_MAIN ||
        rtnl_route_get_type(r) != RTN_UNICAST) {
      continue;
    }
    RouteInfo info;
    if (const nl_addr* dst = rtnl_route_get_dst(r)) {
      info.dst = Cidr{to_ipv4(dst), static_cast<int>(nl_addr_get_prefixlen(dst))};
    } else {
      info.dst = Cidr{{0}, 0};
    }
    if (rtnl_route_get_nnexthops(r) > 0) {
      info.oif = rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(r, 0));
    }
    out.push_back(info);
  }
  return out;
}

Result<int> NetlinkLinkOps::create_bridge(const std::string& name) {
  LinkPtr link(rtnl_link_bridge_alloc());
  if (!link) return Error{"internal", "rtnl_link_bridge_alloc: out of memory", ENOMEM};
  // A fixed, locally administered unicast MAC: with one set explicitly the kernel no longer
  // takes the lowest port MAC, so the gateway's MAC stays put for the instances.
  unsigned char mac[6];
  if (getrandom(mac, sizeof mac, 0) != sizeof mac) return Error::sys("getrandom", errno);
  mac[0] = static_cast<unsigned char>((mac[0] & 0xfe) | 0x02);
  AddrPtr lladdr(nl_addr_build(AF_LLC, mac, sizeof mac));
  if (!lladdr) return Error{"internal", "nl_addr_build: out of memory", ENOMEM};
  rtnl_link_set_name(link.get(), name.c_str());
  rtnl_link_set_addr(link.get(), lladdr.get());
  rtnl_link_set_flags(link.get(), IFF_UP);
  if (int err = rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return nl_error("RTM_NEWLINK(bridge " + name + ")", err);
  }
  // The kernel ignores IFLA_IFALIAS when creating a link: set it on the new link.
  auto undo = [&](Error e) -> Error {
    (void)delete_link(name);
    return e;
  };
  auto msg = link_request(0, name, 0, 0);
  if (!msg) return undo(msg.error());
  if (nla_put_string(msg->get(), IFLA_IFALIAS, std::string(kBridgeAlias).c_str()) < 0) {
    return undo(Error{"internal", "nla_put: message too long", 0});
  }
  if (auto r = send_sync(sock_, std::move(*msg), "RTM_NEWLINK(" + name + " alias)"); !r) {
    return undo(r.error());
  }
  auto info = find_link(name);
  if (!info) return undo(info.error());
  if (!*info) return undo(Error{"not_found", "bridge " + name + " vanished after creation", 0});
  return (*info)->ifindex;
}

Result<void> NetlinkLinkOps::add_address(int ifindex, const Cidr& address) {
  RtnlAddrPtr addr(rtnl_addr_alloc());
  if (!addr) return Error{"internal", "rtnl_addr_alloc: out of memory", ENOMEM};
  auto local = make_ipv4(address.addr, address.prefix);
  if (!local) return local.error();
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_family(addr.get(), AF_INET);
  if (int err = rtnl_addr_set_local(addr.get(), local->get()); err < 0) {
    return nl_error("rtnl_addr_set_local", err);
  }
  int err = rtnl_addr_add(sock_, addr.get(), 0);
  if (err == -NLE_EXIST) return ok();
  if (err < 0) return nl_error("RTM_NEWADDR(" + address.str() + ")", err);
  return ok();
}

Result<void> NetlinkLinkOps::set_up(int ifindex) {
  auto msg = link_request(ifindex, "", IFF_UP, IFF_UP);
  if (!msg) return msg.error();
  return send_sync(sock_, std::move(*msg),
                   "RTM_NEWLINK(ifindex " + std::to_string(ifindex) + " up)");
}

Result<void> NetlinkLinkOps::delete_link(const std::string& name) {
  MsgPtr msg(nlmsg_alloc_simple(RTM_DELLINK, 0));
  if (!msg) return Error{"internal", "nlmsg_alloc: out of memory", ENOMEM};
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      nla_put_string(msg.get(), IFLA_IFNAME, name.c_str()) < 0) {
    return Error{"internal", "nlmsg_append: message too long", 0};
  }
  return send_sync(sock_, std::move(msg), "RTM_DELLINK(" + name + ")");
}

Result<void> NetlinkLinkOps::create_veth(const VethSpec& spec) {
  LinkPtr link(rtnl_link_veth_alloc());
  if (!link) return Error{"internal", "rtnl_link_veth_alloc: out of memory", ENOMEM};
  rtnl_link_set_name(link.get(), spec.host_name.c_str());
  if (spec.master) rtnl_link_set_master(link.get(), spec.master);
  if (spec.mtu) rtnl_link_set_mtu(link.get(), spec.mtu);
  rtnl_link_set_flags(link.get(), IFF_UP);
  {
    LinkPtr peer(rtnl_link_veth_get_peer(link.get()));  // takes a reference
    rtnl_link_set_name(peer.get(), spec.peer_name.c_str());
    // IFLA_NET_NS_FD on the peer: the kernel creates it inside that namespace.
    rtnl_link_set_ns_fd(peer.get(), spec.peer_netns_fd);
    if (spec.mtu) rtnl_link_set_mtu(peer.get(), spec.mtu);
    // Not IFF_UP here: the kernel configures the peer before it is paired, and opening an
    // unpaired veth fails (ENOTCONN). configure_inside() brings it up.
  }
  if (int err = rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return nl_error("RTM_NEWLINK(veth " + spec.host_name + " peer " + spec.peer_name + ")", err);
  }
  return ok();
}

Result<void> NetlinkLinkOps::set_bridge_port(const std::string& name, const std::string& alias) {
  auto msg = link_request(0, name, 0, 0);
  if (!msg) return msg.error();
  nl_msg* m = msg->get();
  // libnl 3.7 has no setter for IFLA_BRPORT_ISOLATED: the port attribute goes in raw, as the
  // bridge's slave data of IFLA_LINKINFO.
  nlattr* info = nullptr;
  nlattr* data = nullptr;
  if (nla_put_string(m, IFLA_IFALIAS, alias.c_str()) < 0 ||
      !(info = nla_nest_start(m, IFLA_LINKINFO)) ||
      nla_put_string(m, IFLA_INFO_SLAVE_KIND, "bridge") < 0 ||
      !(data = nla_nest_start(m, IFLA_INFO_SLAVE_DATA)) ||
      nla_put_u8(m, IFLA_BRPORT_ISOLATED, 1) < 0) {
    return Error{"internal", "nla_put: message too long", 0};
  }
  nla_nest_end(m, data);
  nla_nest_end(m, info);
  return send_sync(sock_, std::move(*msg), "RTM_NEWLINK(" + name + " isolated bridge port)");
}

Result<void> NetlinkLinkOps::configure_inside(int netns_fd, const InsideSpec& spec) {
  // A netlink socket belongs to the namespace it was opened in: open one on a short-lived
  // thread that entered the target namespace, then use it from here. The calling thread never
  // changes namespace.
  Result<SockPtr> sock = Error{"internal", "netns thread did not run", 0};
  std::thread([&] {
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      sock = Error::sys("setns(netns fd " + std::to_string(netns_fd) + ")", errno);
      return;
    }
    sock = open_socket();
  }).join();
  if (!sock) return sock.error();
  nl_sock* s = sock->get();

  // Loopback up.
  auto lo = link_request(0, "lo", IFF_UP, IFF_UP);
  if (!lo) return lo.error();
  QF_TRY(send_sync(s, std::move(*lo), "RTM_NEWLINK(lo up) in the instance namespace"));

  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(s, 0, spec.ifname.c_str(), &raw);
  LinkPtr link(raw);
  if (err < 0) return nl_error("RTM_GETLINK(" + spec.ifname + ") in the instance namespace", err);
  const int ifindex = rtnl_link_get_ifindex(link.get());
  auto up = link_request(ifindex, "", IFF_UP, IFF_UP);
  if (!up) return up.error();
  QF_TRY(send_sync(s, std::move(*up),
                   "RTM_NEWLINK(" + spec.ifname + " up) in the instance namespace"));

  // The address (its prefix route comes with it).
  MsgPtr addr(nlmsg_alloc_simple(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL));
  if (!addr) return Error{"internal", "nlmsg_alloc: out of memory", ENOMEM};
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = static_cast<unsigned char>(spec.address.prefix);
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = static_cast<unsigned>(ifindex);
  const uint32_t local = htonl(spec.address.addr.value);
  const uint32_t brd = htonl(spec.address.broadcast().value);
  if (nlmsg_append(addr.get(), &ifa, sizeof ifa, NLMSG_ALIGNTO) < 0 ||
      nla_put(addr.get(), IFA_LOCAL, sizeof local, &local) < 0 ||
      nla_put(addr.get(), IFA_ADDRESS, sizeof local, &local) < 0 ||
      nla_put(addr.get(), IFA_BROADCAST, sizeof brd, &brd) < 0) {
    return Error{"internal", "nla_put: message too long", 0};
  }
  QF_TRY(send_sync(
      s, std::move(addr),
      "RTM_NEWADDR(" + spec.address.str() + " dev " + spec.ifname + ") in the instance namespace"));

  // Default route via the bridge.
  MsgPtr route(nlmsg_alloc_simple(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL));
  if (!route) return Error{"internal", "nlmsg_alloc: out of memory", ENOMEM};
  rtmsg rtm{};
  rtm.rtm_family = AF_INET;
  rtm.rtm_table = RT_TABLE_MAIN;
  rtm.rtm_protocol = RTPROT_BOOT;
  rtm.rtm_scope = RT_SCOPE_UNIVERSE;
  rtm.rtm_type = RTN_UNICAST;
  const uint32_t gw = htonl(spec.gateway.value);
  const uint32_t oif = static_cast<uint32_t>(ifindex);
  if (nlmsg_append(route.get(), &rtm, sizeof rtm, NLMSG_ALIGNTO) < 0 ||
      nla_put(route.get(), RTA_GATEWAY, sizeof gw, &gw) < 0 ||
      nla_put_u32(route.get(), RTA_OIF, oif) < 0) {
    return Error{"internal", "nla_put: message too long", 0};
  }
  return send_sync(
      s, std::move(route),
      "RTM_NEWROUTE(default via " + spec.gateway.str() + ") in the instance namespace");
}

}  // namespace qufop::netfilter
