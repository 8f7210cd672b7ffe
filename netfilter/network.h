// NodeNetwork: the node network as noded uses it. One bridge per node, a veth pair per
// instance (the peer created directly inside the instance's network namespace as eth0), an
// address and a host port from the persisted IPAM, and the nftables table `ip qufop`
// (rules.h: DNAT of published ports, also from the node itself; masquerade for egress;
// isolation between instances, from the node's ports and from closed ranges).
//
// Every multi-step change is guarded: on failure the completed steps are undone in reverse and
// the original error is returned; nothing is left half-built.
//
// Several processes may share one state dir (and so one bridge and table): every change takes
// the dir's lock and works on the current state (IpamStore::lock).
//
// Namespaces: the real operations act in the network namespace of the thread that opened them
// (links, nftables) or that calls (sysctls, host port holds). noded runs in the host's
// namespace; tests run a NodeNetwork on a thread inside a namespace they made.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "netfilter/ipam.h"
#include "netfilter/link.h"
#include "netfilter/rollback.h"
#include "netfilter/rules.h"

namespace qufop::netfilter {

// A host port kept bound while it is published, so that no other program on the node can
// take it (its connections would be DNATed away from it); released on destruction.
class PortHold {
 public:
  PortHold() = default;
  explicit PortHold(std::function<void()> release) : release_(std::move(release)) {}
  ~PortHold() { reset(); }
  PortHold(PortHold&& o) noexcept : release_(std::exchange(o.release_, nullptr)) {}
  PortHold& operator=(PortHold&& o) noexcept {
    if (this != &o) {
      reset();
      release_ = std::exchange(o.release_, nullptr);
    }
    return *this;
  }
  void reset() {
    if (release_) std::exchange(release_, nullptr)();
  }

 private:
  std::function<void()> release_;
};

// Host-level knobs: sysctls and host ports.
class HostOps {
 public:
  virtual ~HostOps() = default;
  // Keys are paths under /proc/sys: "net/ipv4/ip_forward" (slashes, since link names may
  // contain dots). not_found when the key does not exist (e.g. no IPv6).
  virtual Result<std::string> read_sysctl(const std::string& key) = 0;
  virtual Result<void> write_sysctl(const std::string& key, const std::string& value) = 0;
  // Binds a TCP socket to 0.0.0.0:port and keeps it (bound, not listening) in the hold; fails
  // when another program has the port.
  virtual Result<PortHold> hold_port(uint16_t port) = 0;
};

// /proc/sys and bind(), in the calling thread's network namespace.
class SystemHostOps final : public HostOps {
 public:
  Result<std::string> read_sysctl(const std::string& key) override;
  Result<void> write_sysctl(const std::string& key, const std::string& value) override;
  Result<PortHold> hold_port(uint16_t port) override;
};

// As given by flags or a config file.
struct NetworkConfig {
  std::string bridge = "qf0";
  std::string subnet = "10.88.0.0/24";
  std::string host_ports = "20000-29999";
  std::string allowed_node_ports;          // "53,7300-7310": what instances may reach on the node
  std::vector<std::string> closed_ranges;  // "CIDR" or "CIDR:PORTS": no instance reaches these
  std::string state_dir;                   // the IPAM file lives here (required)
};

// Parsed and validated.
struct NetworkSettings {
  std::string bridge;
  Cidr subnet;
  PortRange host_ports;
  std::vector<PortRange> allowed_node_ports;
  std::vector<ClosedRange> closed;
  std::string state_dir;
};
Result<NetworkSettings> parse_network_config(const NetworkConfig& config);

// --net-bridge, --net-subnet, --net-host-ports, --net-allow-node-ports, --net-closed (repeatable)
// for a daemon's or the runner's flag table, and the config they describe.
std::vector<FlagSpec> network_flags();
NetworkConfig network_config_from_flags(const Flags& flags, std::string state_dir);

// An instance's network namespace: an open fd (borrowed) or a path (/proc/PID/ns/net,
// /run/netns/NAME) opened for the call.
struct NetnsRef {
  int fd = -1;
  std::string path;
  static NetnsRef from_fd(int fd) { return {fd, {}}; }
  static NetnsRef from_path(std::string path) { return {-1, std::move(path)}; }
};

// A fresh network namespace, held by the returned fd (O_CLOEXEC; the caller closes it: the
// namespace lives while the fd or a process in it does). Made on a short-lived thread, so the
// calling thread never changes namespace. For a sandbox to join: /proc/self/fd/<fd>.
Result<int> create_netns();

struct Attachment {
  std::string instance_id;
  Ipv4 ip;
  uint16_t host_port = 0;  // 0: nothing published
  uint16_t instance_port = 0;
  std::string link;  // host end of the veth: qfv...
};

// How detach() gets rid of the veth.
enum class LinkTeardown {
  kDelete,         // delete the host end now (the peer goes with it)
  kGoesWithNetns,  // the instance's namespace is being destroyed: its veth goes with it, for
                   // free; deleting a link explicitly costs tens of ms of RCU grace periods
};

struct ReconcileReport {
  std::vector<std::string> released;       // leases of instances that are not live
  std::vector<std::string> deleted_links;  // stale qfv links
  std::vector<std::string> missing_links;  // live instances whose veth is gone
  std::vector<uint16_t> port_conflicts;    // published ports another program bound meanwhile
};

class NodeNetwork {
 public:
  // The real operations (libnl, libnftables, /proc/sys), opened in the calling thread's
  // namespace. Loads the IPAM state.
  static Result<std::unique_ptr<NodeNetwork>> open(const NetworkConfig& config);
  // With given operations (fakes in tests); they must outlive the NodeNetwork.
  static Result<std::unique_ptr<NodeNetwork>> open(const NetworkConfig& config, LinkOps& links,
                                                   NftOps& nft, HostOps& host);
  ~NodeNetwork();

  // Bridge (created, or reused when it is ours), its address, up; sysctls ip_forward and
  // route_localnet (and IPv6 off on the bridge: no link-local path to the node's services);
  // the rules for the current leases. Idempotent. Refuses a subnet
  // overlapping a host route and a bridge name taken by a link that is not ours.
  Result<void> setup_node();

  // Networks one instance: IPAM lease, veth into its namespace (eth0, address, default route
  // via the bridge, lo up), isolated bridge port, and when instance_port is not 0 its host
  // port published (host_port, or one allocated from the range when 0) and held. A requested
  // port bound by another program on the node is refused.
  Result<Attachment> attach(const std::string& instance_id, const NetnsRef& netns,
                            uint16_t instance_port, uint16_t host_port);
  // Unpublishes, removes the veth, releases the lease. Detaching an unknown id is a no-op.
  // When a step fails the lease is kept (reconcile() finishes the job) and the error returned.
  Result<void> detach(const std::string& instance_id, LinkTeardown link = LinkTeardown::kDelete);
  // Table, every instance veth, the bridge and the IPAM state gone. ip_forward is left as is
  // (other software on the host may rely on it).
  Result<void> teardown_node();
  // After a restart or crash, given every instance still alive on the node: releases other
  // leases, deletes qfv links that belong to no live lease, rewrites the table in full and
  // holds the published ports again. Only the node's owner (noded) may call it: processes
  // sharing the state dir (runners) would lose each other's leases.
  Result<ReconcileReport> reconcile(const std::vector<std::string>& live_instances);

  std::vector<Attachment> attachments() const;
  std::optional<Attachment> find(const std::string& instance_id) const;
  const NetworkSettings& settings() const { return settings_; }
  Ipv4 bridge_address() const;
  // What the table should hold now.
  RulesState desired_rules() const;

 private:
  NodeNetwork(NetworkSettings settings, IpamStore ipam, LinkOps& links, NftOps& nft, HostOps& host);
  RulesState desired_rules_locked() const;
  Result<void> check_subnet_free(int bridge_ifindex);
  Result<int> ensure_bridge(Rollback& rollback);
  Result<void> set_sysctls(Rollback& rollback);
  Result<void> apply_rules();
  bool is_instance_link(const LinkInfo& link) const;
  // Holds the published ports of the current leases not held yet; returns those it cannot.
  std::vector<uint16_t> hold_published_ports();

  struct Owned;  // the real operations when opened without given ones
  std::unique_ptr<Owned> owned_;

  NetworkSettings settings_;
  IpamStore ipam_;
  LinkOps& links_;
  NftOps& nft_;
  HostOps& host_;

  mutable std::mutex mu_;
  int bridge_ifindex_ = 0;  // set by setup_node()
  uint32_t bridge_mtu_ = 0;
  std::map<uint16_t, PortHold> holds_;  // by host port
};

}  // namespace qufop::netfilter
