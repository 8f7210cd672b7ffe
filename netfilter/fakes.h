// Fakes of the node network's kernel interfaces, for unit tests without root: each records its
// calls in one shared CallLog (so tests see the order across links, rules and sysctls) and any
// call can be made to fail (the Nth, or every one starting with a prefix). The link and rule
// fakes keep a small model of the state so lookups answer consistently.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "netfilter/link.h"
#include "netfilter/network.h"
#include "netfilter/rules.h"

namespace qufop::netfilter {

class CallLog {
 public:
  // Records a call; returns the error it must fail with, if any.
  std::optional<Error> record(std::string call);
  // The nth call from now on (1-based) fails once.
  void fail_nth(size_t n, Error error = {"io", "injected failure", 5});
  // Every call starting with `prefix` fails.
  void fail_matching(std::string prefix, Error error = {"io", "injected failure", 5});
  void clear_failures();
  const std::vector<std::string>& calls() const { return calls_; }
  // Calls recorded so far, then forgotten.
  std::vector<std::string> take();
  size_t count() const { return counted_; }

 private:
  std::vector<std::string> calls_;
  size_t counted_ = 0;
  std::optional<size_t> fail_at_;
  Error fail_at_error_;
  std::vector<std::pair<std::string, Error>> fail_prefixes_;
};

class FakeLinkOps final : public LinkOps {
 public:
  explicit FakeLinkOps(CallLog& log) : log_(log) {}

  // The model: links by name and the host's routes (editable by tests).
  std::map<std::string, LinkInfo> links;
  std::vector<RouteInfo> routes;
  // What configure_inside set up, by netns fd.
  std::map<int, InsideSpec> inside;
  int next_ifindex = 2;

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
  LinkInfo* by_index(int ifindex);
  CallLog& log_;
  std::map<std::string, int> peer_netns_;  // veth host name -> netns fd of its peer
};

// Scripts are logged as "nft ruleset" (a full table), "nft delete table", or their one line.
class FakeNft final : public NftOps {
 public:
  explicit FakeNft(CallLog& log) : log_(log) {}

  bool has_table = false;
  std::string ruleset;                        // the last full script applied
  std::map<uint16_t, std::string> published;  // host port -> "ip . port", as the map holds it
  std::vector<std::string> scripts;           // every script that succeeded

  Result<void> run(std::string_view script) override;
  Result<std::string> list_table() override;

 private:
  CallLog& log_;
};

class FakeHostOps final : public HostOps {
 public:
  explicit FakeHostOps(CallLog& log) : log_(log) {}

  std::map<std::string, std::string> sysctls = {{"net/ipv4/ip_forward", "0"}};
  std::set<uint16_t> bound_ports;  // ports another program holds
  std::set<uint16_t> held;         // ports held by live PortHolds

  Result<std::string> read_sysctl(const std::string& key) override;
  Result<void> write_sysctl(const std::string& key, const std::string& value) override;
  Result<PortHold> hold_port(uint16_t port) override;

 private:
  CallLog& log_;
};

}  // namespace qufop::netfilter
