// Links of the node network (bridge, veth pairs, addresses, routes) behind a small interface:
// the real one speaks rtnetlink through libnl (no `ip` process), the fake (netfilter/fakes.h)
// records calls for unit tests.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "netfilter/ipam.h"

struct nl_sock;

namespace qufop::netfilter {

// The alias qufop sets on its bridge; a link of the bridge's name without it is not ours.
inline constexpr std::string_view kBridgeAlias = "qufop";
// Host ends of instance veths are named kVethPrefix + 12 hex digits and carry the alias
// kVethAliasPrefix + instance id, so a restart can tell whose they are.
inline constexpr std::string_view kVethPrefix = "qfv";
inline constexpr std::string_view kVethAliasPrefix = "qufop:";

// "qfv" + 12 hex digits of a hash of the id: at most 15 characters (IFNAMSIZ - 1), stable.
std::string host_link_name(std::string_view instance_id);
// Link names: 1..15 characters, no '/', ':' or whitespace.
Result<void> validate_link_name(std::string_view name);

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  std::string kind;  // rtnetlink kind: "bridge", "veth", ... ("" for a physical link)
  std::string alias;
  uint32_t mtu = 0;
  int master = 0;  // ifindex of the bridge it is a port of, 0 for none
  bool up = false;
  std::vector<Cidr> addresses;  // IPv4 (filled by find_link only)
};

struct RouteInfo {
  Cidr dst;
  int oif = 0;
};

struct VethSpec {
  std::string host_name;  // qfv..., in the calling namespace, a port of `master`
  int master = 0;
  uint32_t mtu = 0;
  std::string peer_name = "eth0";  // created directly inside peer_netns_fd
  int peer_netns_fd = -1;
};

struct InsideSpec {
  std::string ifname = "eth0";
  Cidr address;  // with host bits: 10.88.0.2/24
  Ipv4 gateway;  // default route via it
};

class LinkOps {
 public:
  virtual ~LinkOps() = default;

  virtual Result<std::optional<LinkInfo>> find_link(const std::string& name) = 0;
  virtual Result<std::vector<LinkInfo>> list_links() = 0;
  // IPv4 unicast routes of the main table.
  virtual Result<std::vector<RouteInfo>> list_routes() = 0;

  // A bridge, up, with a fixed MAC (so it does not change as ports come and go, which would
  // leave instances with a stale gateway neighbour entry) and the alias kBridgeAlias.
  // Returns its ifindex.
  virtual Result<int> create_bridge(const std::string& name) = 0;
  // Adds an IPv4 address; one already present is fine.
  virtual Result<void> add_address(int ifindex, const Cidr& address) = 0;
  virtual Result<void> set_up(int ifindex) = 0;
  // Deletes a link by name (a veth's peer goes with it); not_found when missing.
  virtual Result<void> delete_link(const std::string& name) = 0;

  // One veth pair: the host end up, a port of the bridge; the peer created directly inside
  // the target namespace (moving it there later costs far more), down until configure_inside.
  // Both with the given MTU.
  virtual Result<void> create_veth(const VethSpec& spec) = 0;
  // Turns the host end into an isolated bridge port (IFLA_BRPORT_ISOLATED: no frame goes to
  // another isolated port) and sets its alias, in one message.
  virtual Result<void> set_bridge_port(const std::string& name, const std::string& alias) = 0;
  // Inside the namespace: loopback and `ifname` up, address on `ifname`, default route via the
  // gateway.
  virtual Result<void> configure_inside(int netns_fd, const InsideSpec& spec) = 0;
};

// rtnetlink via libnl. Acts in the network namespace of the thread that called open().
class NetlinkLinkOps final : public LinkOps {
 public:
  static Result<std::unique_ptr<NetlinkLinkOps>> open();
  ~NetlinkLinkOps() override;
  NetlinkLinkOps(const NetlinkLinkOps&) = delete;
  NetlinkLinkOps& operator=(const NetlinkLinkOps&) = delete;

  Result<std::optional<LinkInfo>> find_link(const std::string& name) override;
  Result<std::vector<LinkInfo>> list_links() override;
  Result<std::vector<RouteInfo>> list_routes() override;
  Result<int> create_bridge(const std::string& name) override;
  Result<void> add_address(int ifindex, const Cidr& address) override;
  Result<void> set_up(int ifindex) override;
  Result<void> delete_link(const std::string& name) override;
  Result<void> create_veth(const VethSpec& spec) override;
  Result<void> set_bridge_port(const std::string& name, const std::string& alias) override;
  Result<void> configure_inside(int netns_fd, const InsideSpec& spec) override;

 private:
  explicit NetlinkLinkOps(nl_sock* sock) : sock_(sock) {}
  nl_sock* sock_;
};

}  // namespace qufop::netfilter
