#include "netfilter/network.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <thread>

#include "common/fd.h"

namespace qufop::netfilter {
namespace {

std::string sysctl_path(const std::string& key) { return "/proc/sys/" + key; }

Attachment to_attachment(const Lease& l) {
  return {l.instance_id, l.ip, l.host_port, l.instance_port, host_link_name(l.instance_id)};
}

}  // namespace

// --- SystemHostOps ---------------------------------------------------------------------------

Result<std::string> SystemHostOps::read_sysctl(const std::string& key) {
  const std::string path = sysctl_path(key);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Error::sys("open(" + path + ")", errno);
  char buf[256];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n < 0) return Error::sys("read(" + path + ")", errno);
  std::string value(buf, static_cast<size_t>(n));
  while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) value.pop_back();
  return value;
}

Result<void> SystemHostOps::write_sysctl(const std::string& key, const std::string& value) {
  const std::string path = sysctl_path(key);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return Error::sys("open(" + path + ")", errno);
  const std::string line = value + "\n";
  if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    return Error::sys("write(" + path + ", " + value + ")", errno);
  }
  return ok();
}

Result<PortHold> SystemHostOps::hold_port(uint16_t port) {
  // No SO_REUSEADDR: with it on both sides, another program could still bind and listen.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::sys("socket(AF_INET)", errno);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    ::close(fd);
    return Error::sys("bind(0.0.0.0:" + std::to_string(port) + ")", err);
  }
  return PortHold([fd] { ::close(fd); });
}

Result<int> create_netns() {
  Result<int> fd = Error{"internal", "netns thread did not run", 0};
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      fd = Error::sys("unshare(CLONE_NEWNET)", errno);
      return;
    }
    int f = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (f < 0) {
      fd = Error::sys("open(/proc/thread-self/ns/net)", errno);
      return;
    }
    fd = f;
  }).join();
  return fd;
}

// --- configuration -----------------------------------------------------------------------------

Result<NetworkSettings> parse_network_config(const NetworkConfig& c) {
  NetworkSettings s;
  QF_TRY(validate_link_name(c.bridge));
  if (c.bridge.starts_with(kVethPrefix)) {
    return Error::invalid("bridge name '" + c.bridge + "': the prefix '" +
                          std::string(kVethPrefix) + "' is reserved for instance links");
  }
  s.bridge = c.bridge;
  auto subnet = parse_cidr(c.subnet);
  if (!subnet) return subnet.error().wrap("node subnet");
  if (subnet->prefix < 8 || subnet->prefix > 30) {
    return Error::invalid("node subnet " + subnet->str() + ": prefix must be 8..30");
  }
  s.subnet = *subnet;
  auto ports = parse_port_range(c.host_ports);
  if (!ports) return ports.error().wrap("host port range");
  s.host_ports = *ports;
  auto allowed = parse_port_list(c.allowed_node_ports);
  if (!allowed) return allowed.error().wrap("allowed node ports");
  s.allowed_node_ports = std::move(*allowed);
  for (const auto& text : c.closed_ranges) {
    auto r = parse_closed_range(text);
    if (!r) return r.error();
    s.closed.push_back(std::move(*r));
  }
  if (c.state_dir.empty()) return Error::invalid("node network: no state dir given");
  s.state_dir = c.state_dir;
  return s;
}

std::vector<FlagSpec> network_flags() {
  return {
      {"net-bridge", "NAME", "the node's bridge for instance networks", "qf0"},
      {"net-subnet", "CIDR", "instance addresses (the bridge takes the first)", "10.88.0.0/24"},
      {"net-host-ports", "FIRST-LAST", "host ports published ports are allocated from",
       "20000-29999"},
      {"net-allow-node-ports", "PORTS",
       "ports of the node itself instances may reach, e.g. 53,7300-7310 (default: none)", ""},
      {"net-closed", "CIDR[:PORTS]", "a destination no instance may reach (repeatable)", "", true},
  };
}

NetworkConfig network_config_from_flags(const Flags& f, std::string state_dir) {
  NetworkConfig c;
  c.bridge = f.get("net-bridge");
  c.subnet = f.get("net-subnet");
  c.host_ports = f.get("net-host-ports");
  c.allowed_node_ports = f.get("net-allow-node-ports");
  c.closed_ranges = f.get_all("net-closed");
  c.state_dir = std::move(state_dir);
  return c;
}

// --- NodeNetwork -------------------------------------------------------------------------------

struct NodeNetwork::Owned {
  std::unique_ptr<NetlinkLinkOps> links;
  std::unique_ptr<LibNftables> nft;
  SystemHostOps host;
};

NodeNetwork::NodeNetwork(NetworkSettings settings, IpamStore ipam, LinkOps& links, NftOps& nft,
                         HostOps& host)
    : settings_(std::move(settings)),
      ipam_(std::move(ipam)),
      links_(links),
      nft_(nft),
      host_(host) {}

NodeNetwork::~NodeNetwork() = default;

Result<std::unique_ptr<NodeNetwork>> NodeNetwork::open(const NetworkConfig& config) {
  auto owned = std::make_unique<Owned>();
  auto links = NetlinkLinkOps::open();
  if (!links) return links.error().wrap("opening rtnetlink");
  owned->links = std::move(*links);
  auto nft = LibNftables::create();
  if (!nft) return nft.error().wrap("opening nftables");
  owned->nft = std::move(*nft);
  auto net = open(config, *owned->links, *owned->nft, owned->host);
  if (!net) return net.error();
  (*net)->owned_ = std::move(owned);
  return net;
}

Result<std::unique_ptr<NodeNetwork>> NodeNetwork::open(const NetworkConfig& config, LinkOps& links,
                                                       NftOps& nft, HostOps& host) {
  auto settings = parse_network_config(config);
  if (!settings) return settings.error();
  auto ipam = IpamStore::open(settings->state_dir, settings->subnet, settings->host_ports);
  if (!ipam) return ipam.error().wrap("loading the node network state");
  return std::unique_ptr<NodeNetwork>(
      new NodeNetwork(std::move(*settings), std::move(*ipam), links, nft, host));
}

Ipv4 NodeNetwork::bridge_address() const { return ipam_.ipam().gateway(); }

RulesState NodeNetwork::desired_rules() const {
  std::lock_guard lock(mu_);
  return desired_rules_locked();
}

RulesState NodeNetwork::desired_rules_locked() const {
  RulesState s;
  s.bridge = settings_.bridge;
  s.subnet = settings_.subnet;
  s.bridge_addr = ipam_.ipam().gateway();
  s.allowed_node_ports = settings_.allowed_node_ports;
  s.closed = settings_.closed;
  for (const Lease& l : ipam_.ipam().leases()) {
    if (l.host_port != 0) s.published.push_back({l.host_port, l.ip, l.instance_port});
  }
  return s;
}

std::vector<Attachment> NodeNetwork::attachments() const {
  std::lock_guard lock(mu_);
  std::vector<Attachment> out;
  for (const Lease& l : ipam_.ipam().leases()) out.push_back(to_attachment(l));
  return out;
}

std::optional<Attachment> NodeNetwork::find(const std::string& instance_id) const {
  std::lock_guard lock(mu_);
  const Lease* l = ipam_.ipam().find(instance_id);
  if (!l) return std::nullopt;
  return to_attachment(*l);
}

Result<void> NodeNetwork::apply_rules() {
  if (auto r = nft_.run(render_ruleset(desired_rules_locked())); !r) {
    return r.error().wrap("applying table ip " + std::string(kTable));
  }
  return ok();
}

bool NodeNetwork::is_instance_link(const LinkInfo& link) const {
  // Ours: a veth named qfv..., with our alias (or none: a crash between creating it and
  // setting the alias).
  return link.kind == "veth" && link.name.starts_with(kVethPrefix) &&
         (link.alias.empty() || link.alias.starts_with(kVethAliasPrefix));
}

Result<void> NodeNetwork::check_subnet_free(int bridge_ifindex) {
  auto routes = links_.list_routes();
  if (!routes) return routes.error().wrap("reading the host's routes");
  for (const RouteInfo& r : *routes) {
    if (bridge_ifindex != 0 && r.oif == bridge_ifindex) continue;  // ours
    Cidr dst[] = {r.dst};
    if (auto hit = first_overlap(settings_.subnet, dst)) {
      return Error{"conflict",
                   "node subnet " + settings_.subnet.str() + " overlaps the host route " +
                       Cidr{hit->network(), hit->prefix}.str() +
                       (r.oif ? " (ifindex " + std::to_string(r.oif) + ")" : "") +
                       "; choose another subnet (--net-subnet)",
                   0};
    }
  }
  return ok();
}

Result<int> NodeNetwork::ensure_bridge(Rollback& rollback) {
  const std::string& name = settings_.bridge;
  const Cidr address{ipam_.ipam().gateway(), settings_.subnet.prefix};
  auto existing = links_.find_link(name);
  if (!existing) return existing.error().wrap("looking up bridge " + name);
  int ifindex = 0;
  bool up = false;
  if (*existing) {
    const LinkInfo& l = **existing;
    if (l.kind != "bridge" || l.alias != kBridgeAlias) {
      return Error{"already_exists",
                   "link " + name + " exists and is not a bridge made by qufop (kind '" + l.kind +
                       "', alias '" + l.alias + "'); choose another bridge name (--net-bridge) " +
                       "or delete that link",
                   0};
    }
    ifindex = l.ifindex;
    up = l.up;
    bridge_mtu_ = l.mtu;
    QF_TRY(check_subnet_free(ifindex));
  } else {
    QF_TRY(check_subnet_free(0));
    auto created = links_.create_bridge(name);
    if (!created) return created.error().wrap("creating bridge " + name);
    ifindex = *created;
    up = true;
    rollback.add("create bridge " + name, [this, name] { return links_.delete_link(name); });
    auto info = links_.find_link(name);
    if (!info) return info.error();
    bridge_mtu_ = *info ? (*info)->mtu : 0;
  }
  if (auto r = links_.add_address(ifindex, address); !r) {
    return r.error().wrap("addressing bridge " + name);
  }
  if (!up) {
    if (auto r = links_.set_up(ifindex); !r) return r.error().wrap("bringing up bridge " + name);
  }
  return ifindex;
}

Result<void> NodeNetwork::set_sysctls(Rollback& rollback) {
  struct Knob {
    std::string key;
    std::string value;
    bool optional;  // absent (no IPv6) is fine
  };
  const std::string& br = settings_.bridge;
  const Knob knobs[] = {
      {"net/ipv4/ip_forward", "1", false},
      // DNAT of 127.0.0.1:hostport sends a packet with a loopback source out of the bridge and
      // takes its replies back: the kernel drops both as martians unless route_localnet.
      {"net/ipv4/conf/" + br + "/route_localnet", "1", false},
      // No IPv6 on the bridge: no link-local address through which instances reach the node.
      {"net/ipv6/conf/" + br + "/disable_ipv6", "1", true},
  };
  for (const Knob& k : knobs) {
    auto old = host_.read_sysctl(k.key);
    if (!old) {
      if (k.optional && old.error().code == "not_found") continue;
      return old.error();
    }
    if (*old == k.value) continue;
    QF_TRY(host_.write_sysctl(k.key, k.value));
    rollback.add("sysctl " + k.key,
                 [this, key = k.key, value = *old] { return host_.write_sysctl(key, value); });
  }
  return ok();
}

Result<void> NodeNetwork::setup_node() {
  std::lock_guard lock(mu_);
  auto state_lock = ipam_.lock();  // other processes sharing the state dir wait
  if (!state_lock) return state_lock.error().wrap("setting up the node network");
  Rollback rollback("setting up the node network");
  auto ifindex = ensure_bridge(rollback);
  if (!ifindex) return ifindex.error();
  QF_TRY(set_sysctls(rollback));
  QF_TRY(apply_rules());
  rollback.commit();
  bridge_ifindex_ = *ifindex;
  return ok();
}

std::vector<uint16_t> NodeNetwork::hold_published_ports() {
  std::vector<uint16_t> conflicts;
  for (const Lease& l : ipam_.ipam().leases()) {
    if (l.host_port == 0 || holds_.contains(l.host_port)) continue;
    auto h = host_.hold_port(l.host_port);
    if (!h) {
      spdlog::warn("host port {} of instance {} is published but another program bound it: {}",
                   l.host_port, l.instance_id, h.error().message);
      conflicts.push_back(l.host_port);
      continue;
    }
    holds_[l.host_port] = std::move(*h);
  }
  return conflicts;
}

Result<Attachment> NodeNetwork::attach(const std::string& instance_id, const NetnsRef& netns,
                                       uint16_t instance_port, uint16_t host_port) {
  std::lock_guard lock(mu_);
  auto state_lock = ipam_.lock();  // other processes sharing the state dir wait
  if (!state_lock) return state_lock.error().wrap("attaching an instance");
  QF_TRY(validate_instance_id(instance_id));
  const std::string what = "attaching instance " + instance_id;
  if (bridge_ifindex_ == 0) {
    return Error{"internal", what + ": the node network is not set up (setup_node)", 0};
  }
  if (ipam_.ipam().find(instance_id)) {
    return Error{"conflict", what + ": it is already attached", 0};
  }
  Fd opened;
  int ns_fd = netns.fd;
  if (ns_fd < 0) {
    opened.reset(::open(netns.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (opened.get() < 0) return Error::sys("open(" + netns.path + ")", errno).wrap(what);
    ns_fd = opened.get();
  }

  Rollback rollback(what);
  PortHold hold;  // of the port the allocation settles on (the probe stops at the first it gets)
  auto lease = ipam_.allocate(instance_id, instance_port, host_port, [&](uint16_t p) {
    auto h = host_.hold_port(p);
    if (!h) return Result<void>(h.error());
    hold = std::move(*h);
    return ok();
  });
  if (!lease) return lease.error().wrap(what);
  rollback.add("address lease", [this, instance_id] { return ipam_.release(instance_id); });

  const std::string link = host_link_name(instance_id);
  VethSpec veth{link, bridge_ifindex_, bridge_mtu_, "eth0", ns_fd};
  if (auto r = links_.create_veth(veth); !r) {
    Error e = r.error().wrap(what);
    if (e.code == "already_exists") {
      e.message += " (either " + link + " exists on the node: reconcile removes stale links; " +
                   "or the instance's namespace already has an eth0)";
    }
    return e;
  }
  rollback.add("veth " + link, [this, link] { return links_.delete_link(link); });

  if (auto r = links_.set_bridge_port(link, std::string(kVethAliasPrefix) + instance_id); !r) {
    return r.error().wrap(what);
  }
  InsideSpec inside{"eth0", Cidr{lease->ip, settings_.subnet.prefix}, ipam_.ipam().gateway()};
  if (auto r = links_.configure_inside(ns_fd, inside); !r) return r.error().wrap(what);

  if (lease->host_port != 0) {
    const Published p{lease->host_port, lease->ip, lease->instance_port};
    if (auto r = nft_.run(render_publish(p)); !r) {
      // The table may be missing or differ (someone flushed it): rewrite it whole.
      spdlog::warn("{}: publishing port {} failed ({}); rewriting the table", what, p.host_port,
                   r.error().message);
      if (auto full = apply_rules(); !full) return full.error().wrap(what);
    }
    rollback.add("publish " + std::to_string(p.host_port),
                 [this, p] { return nft_.run(render_unpublish(p.host_port)); });
  }
  rollback.commit();
  if (lease->host_port != 0) holds_[lease->host_port] = std::move(hold);
  return to_attachment(*lease);
}

Result<void> NodeNetwork::detach(const std::string& instance_id, LinkTeardown link_teardown) {
  std::lock_guard lock(mu_);
  auto state_lock = ipam_.lock();  // other processes sharing the state dir wait
  if (!state_lock) return state_lock.error().wrap("detaching an instance");
  const Lease* found = ipam_.ipam().find(instance_id);
  if (!found) return ok();
  const Lease lease = *found;
  const std::string what = "detaching instance " + instance_id;
  std::optional<Error> first;

  if (lease.host_port != 0) {
    if (auto r = nft_.run(render_unpublish(lease.host_port)); !r) {
      // The element may be missing or the table differ: rewrite it whole without this port.
      spdlog::warn("{}: unpublishing port {} failed ({}); rewriting the table", what,
                   lease.host_port, r.error().message);
      RulesState desired = desired_rules_locked();
      std::erase_if(desired.published,
                    [&](const Published& p) { return p.host_port == lease.host_port; });
      if (auto full = nft_.run(render_ruleset(desired)); !full) first = full.error().wrap(what);
    }
  }
  const std::string link = host_link_name(instance_id);
  if (!first && link_teardown == LinkTeardown::kDelete) {
    if (auto r = links_.delete_link(link); !r && r.error().code != "not_found") {
      first = r.error().wrap(what);
    }
  }
  if (first) return *first;
  if (auto r = ipam_.release(instance_id); !r) return r.error().wrap(what);
  holds_.erase(lease.host_port);
  return ok();
}

Result<void> NodeNetwork::teardown_node() {
  std::lock_guard lock(mu_);
  auto state_lock = ipam_.lock();  // other processes sharing the state dir wait
  if (!state_lock) return state_lock.error().wrap("tearing down the node network");
  std::optional<Error> first;
  auto note = [&](Result<void> r, const std::string& step) {
    if (r) return;
    spdlog::warn("tearing down the node network: {}: {}", step, r.error().message);
    if (!first) first = r.error().wrap("tearing down the node network: " + step);
  };
  note(nft_.run(render_delete_table()), "deleting table ip " + std::string(kTable));
  auto links = links_.list_links();
  if (!links) {
    note(links.error(), "listing links");
  } else {
    for (const LinkInfo& l : *links) {
      if (!is_instance_link(l)) continue;
      auto r = links_.delete_link(l.name);
      if (!r && r.error().code != "not_found") note(r, "deleting " + l.name);
    }
  }
  auto bridge = links_.find_link(settings_.bridge);
  if (!bridge) {
    note(bridge.error(), "looking up bridge " + settings_.bridge);
  } else if (*bridge && (*bridge)->kind == "bridge" && (*bridge)->alias == kBridgeAlias) {
    note(links_.delete_link(settings_.bridge), "deleting bridge " + settings_.bridge);
  }
  note(ipam_.clear(), "clearing the address leases");
  holds_.clear();
  bridge_ifindex_ = 0;
  if (first) return *first;
  return ok();
}

Result<ReconcileReport> NodeNetwork::reconcile(const std::vector<std::string>& live_instances) {
  std::lock_guard lock(mu_);
  auto state_lock = ipam_.lock();  // other processes sharing the state dir wait
  if (!state_lock) return state_lock.error().wrap("reconcile");
  ReconcileReport report;
  const std::set<std::string> live(live_instances.begin(), live_instances.end());
  for (const Lease& l : ipam_.ipam().leases()) {
    if (live.contains(l.instance_id)) continue;
    if (auto r = ipam_.release(l.instance_id); !r) return r.error().wrap("reconcile");
    holds_.erase(l.host_port);
    report.released.push_back(l.instance_id);
  }
  auto links = links_.list_links();
  if (!links) return links.error().wrap("reconcile: listing links");
  std::set<std::string> present;
  for (const LinkInfo& l : *links) {
    if (!is_instance_link(l)) continue;
    const std::string id = l.alias.empty() ? "" : l.alias.substr(kVethAliasPrefix.size());
    const bool wanted = !id.empty() && ipam_.ipam().find(id) && host_link_name(id) == l.name;
    if (wanted) {
      present.insert(id);
      continue;
    }
    auto r = links_.delete_link(l.name);
    if (!r && r.error().code != "not_found") return r.error().wrap("reconcile");
    report.deleted_links.push_back(l.name);
  }
  for (const Lease& l : ipam_.ipam().leases()) {
    if (!present.contains(l.instance_id)) report.missing_links.push_back(l.instance_id);
  }
  if (auto r = apply_rules(); !r) return r.error().wrap("reconcile");
  report.port_conflicts = hold_published_ports();
  return report;
}

}  // namespace qufop::netfilter
