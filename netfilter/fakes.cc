#include "netfilter/fakes.h"

#include <algorithm>

namespace qufop::netfilter {

std::optional<Error> CallLog::record(std::string call) {
  ++counted_;
  std::optional<Error> fail;
  for (const auto& [prefix, error] : fail_prefixes_) {
    if (call.starts_with(prefix)) fail = error;
  }
  if (fail_at_ && *fail_at_ == counted_) {
    fail = fail_at_error_;
    fail_at_.reset();
  }
  calls_.push_back(fail ? call + " -> FAIL" : std::move(call));
  return fail;
}

void CallLog::fail_nth(size_t n, Error error) {
  fail_at_ = counted_ + n;
  fail_at_error_ = std::move(error);
}

void CallLog::fail_matching(std::string prefix, Error error) {
  fail_prefixes_.emplace_back(std::move(prefix), std::move(error));
}

void CallLog::clear_failures() {
  fail_at_.reset();
  fail_prefixes_.clear();
}

std::vector<std::string> CallLog::take() {
  std::vector<std::string> out;
  out.swap(calls_);
  return out;
}

// --- FakeLinkOps -------------------------------------------------------------------------------

LinkInfo* FakeLinkOps::by_index(int ifindex) {
  for (auto& [name, l] : links) {
    if (l.ifindex == ifindex) return &l;
  }
  return nullptr;
}

Result<std::optional<LinkInfo>> FakeLinkOps::find_link(const std::string& name) {
  if (auto e = log_.record("find_link " + name)) return *e;
  auto it = links.find(name);
  if (it == links.end()) return std::optional<LinkInfo>();
  return std::optional<LinkInfo>(it->second);
}

Result<std::vector<LinkInfo>> FakeLinkOps::list_links() {
  if (auto e = log_.record("list_links")) return *e;
  std::vector<LinkInfo> out;
  for (const auto& [name, l] : links) out.push_back(l);
  return out;
}

Result<std::vector<RouteInfo>> FakeLinkOps::list_routes() {
  if (auto e = log_.record("list_routes")) return *e;
  std::vector<RouteInfo> out = routes;
  // Connected routes of addressed links, as the kernel would have them.
  for (const auto& [name, l] : links) {
    for (const Cidr& a : l.addresses) out.push_back({Cidr{a.network(), a.prefix}, l.ifindex});
  }
  return out;
}

Result<int> FakeLinkOps::create_bridge(const std::string& name) {
  if (auto e = log_.record("create_bridge " + name)) return *e;
  if (links.contains(name)) return Error{"already_exists", "create_bridge: File exists", 17};
  LinkInfo l{next_ifindex++, name, "bridge", std::string(kBridgeAlias), 1500, 0, true, {}};
  links[name] = l;
  return l.ifindex;
}

Result<void> FakeLinkOps::add_address(int ifindex, const Cidr& address) {
  if (auto e = log_.record("add_address " + std::to_string(ifindex) + " " + address.str())) {
    return *e;
  }
  LinkInfo* l = by_index(ifindex);
  if (!l) return Error{"not_found", "add_address: No such device", 19};
  if (std::find(l->addresses.begin(), l->addresses.end(), address) == l->addresses.end()) {
    l->addresses.push_back(address);
  }
  return ok();
}

Result<void> FakeLinkOps::set_up(int ifindex) {
  if (auto e = log_.record("set_up " + std::to_string(ifindex))) return *e;
  LinkInfo* l = by_index(ifindex);
  if (!l) return Error{"not_found", "set_up: No such device", 19};
  l->up = true;
  return ok();
}

Result<void> FakeLinkOps::delete_link(const std::string& name) {
  if (auto e = log_.record("delete_link " + name)) return *e;
  auto it = links.find(name);
  if (it == links.end()) return Error{"not_found", "RTM_DELLINK(" + name + "): No such device", 19};
  const int ifindex = it->second.ifindex;
  links.erase(it);
  if (auto p = peer_netns_.find(name); p != peer_netns_.end()) {
    inside.erase(p->second);
    peer_netns_.erase(p);
  }
  for (auto& [n, l] : links) {
    if (l.master == ifindex) l.master = 0;
  }
  return ok();
}

Result<void> FakeLinkOps::create_veth(const VethSpec& spec) {
  if (auto e =
          log_.record("create_veth " + spec.host_name + " master=" + std::to_string(spec.master) +
                      " mtu=" + std::to_string(spec.mtu) + " peer=" + spec.peer_name +
                      " netns=" + std::to_string(spec.peer_netns_fd))) {
    return *e;
  }
  if (links.contains(spec.host_name)) return Error{"already_exists", "create_veth: exists", 17};
  links[spec.host_name] =
      LinkInfo{next_ifindex++, spec.host_name, "veth", "", spec.mtu, spec.master, true, {}};
  peer_netns_[spec.host_name] = spec.peer_netns_fd;
  return ok();
}

Result<void> FakeLinkOps::set_bridge_port(const std::string& name, const std::string& alias) {
  if (auto e = log_.record("set_bridge_port " + name + " " + alias)) return *e;
  auto it = links.find(name);
  if (it == links.end()) return Error{"not_found", "set_bridge_port: No such device", 19};
  it->second.alias = alias;
  return ok();
}

Result<void> FakeLinkOps::configure_inside(int netns_fd, const InsideSpec& spec) {
  if (auto e = log_.record("configure_inside netns=" + std::to_string(netns_fd) + " " +
                           spec.ifname + " " + spec.address.str() + " via " + spec.gateway.str())) {
    return *e;
  }
  inside[netns_fd] = spec;
  return ok();
}

// --- FakeNft -----------------------------------------------------------------------------------

Result<void> FakeNft::run(std::string_view script) {
  const bool full = script.find(" {\n") != std::string_view::npos;
  const bool delete_table = !full && script.find("delete table") != std::string_view::npos;
  std::string line(script.substr(0, script.find('\n')));
  std::string name = full ? "ruleset" : delete_table ? "delete table" : line;
  if (auto e = log_.record("nft " + name)) return *e;
  if (full) {
    has_table = true;
    ruleset = std::string(script);
    published.clear();
    // The elements of the map, as written by render_ruleset.
    auto at = script.find("elements = { ");
    if (at != std::string_view::npos) {
      auto end = script.find(" }", at);
      std::string_view list = script.substr(at + 13, end - at - 13);
      while (!list.empty()) {
        auto comma = list.find(", ");
        std::string_view item = list.substr(0, comma);
        auto colon = item.find(" : ");
        published[static_cast<uint16_t>(std::stoi(std::string(item.substr(0, colon))))] =
            std::string(item.substr(colon + 3));
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 2);
      }
    }
  } else if (delete_table) {
    has_table = false;
    ruleset.clear();
    published.clear();
  } else if (line.starts_with("add element") || line.starts_with("delete element")) {
    if (!has_table) return Error{"not_found", "nft: No such file or directory", 2};
    auto open = line.find("{ ");
    std::string item = line.substr(open + 2, line.rfind(" }") - open - 2);
    auto colon = item.find(" : ");
    auto port = static_cast<uint16_t>(std::stoi(item.substr(0, colon)));
    if (line.starts_with("add")) {
      if (published.contains(port)) return Error{"already_exists", "nft: File exists", 17};
      published[port] = item.substr(colon + 3);
    } else {
      if (!published.erase(port)) return Error{"not_found", "nft: No such file or directory", 2};
    }
  }
  scripts.emplace_back(script);
  return ok();
}

Result<std::string> FakeNft::list_table() {
  if (auto e = log_.record("nft list")) return *e;
  if (!has_table) return std::string();
  std::string out = "table ip qufop published:";
  for (const auto& [port, target] : published) out += " " + std::to_string(port) + ":" + target;
  return out;
}

// --- FakeHostOps -------------------------------------------------------------------------------

Result<std::string> FakeHostOps::read_sysctl(const std::string& key) {
  if (auto e = log_.record("read_sysctl " + key)) return *e;
  auto it = sysctls.find(key);
  if (it != sysctls.end()) return it->second;
  if (key.starts_with("net/ipv6/")) {
    return Error{"not_found", "open(/proc/sys/" + key + "): No such file or directory", 2};
  }
  return std::string("0");
}

Result<void> FakeHostOps::write_sysctl(const std::string& key, const std::string& value) {
  if (auto e = log_.record("write_sysctl " + key + "=" + value)) return *e;
  sysctls[key] = value;
  return ok();
}

Result<PortHold> FakeHostOps::hold_port(uint16_t port) {
  if (auto e = log_.record("hold_port " + std::to_string(port))) return *e;
  if (bound_ports.contains(port) || held.contains(port)) {
    return Error{"unavailable", "bind(0.0.0.0:" + std::to_string(port) + "): Address in use", 98};
  }
  held.insert(port);
  return PortHold([this, port] { held.erase(port); });
}

}  // namespace qufop::netfilter
