// NodeNetwork over the recording fakes: call order of setup/attach/detach/reconcile/teardown,
// bad input refused with nothing built, and rollback when any one call fails.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "netfilter/fakes.h"
#include "netfilter/network.h"

namespace qufop::netfilter {
namespace {

using Calls = std::vector<std::string>;

std::string read_file_or_empty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class NetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qufop-netfilter-unit.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    config_.state_dir = dir_ + "/net";
    config_.allowed_node_ports = "7300";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<NodeNetwork> open() {
    auto net = NodeNetwork::open(config_, links_, nft_, host_);
    EXPECT_TRUE(net.ok()) << net.error().message;
    return net.ok() ? std::move(*net) : nullptr;
  }
  std::unique_ptr<NodeNetwork> open_and_setup() {
    auto net = open();
    auto r = net->setup_node();
    EXPECT_TRUE(r.ok()) << r.error().message;
    log_.take();
    return net;
  }
  size_t veth_count() const {
    size_t n = 0;
    for (const auto& [name, l] : links_.links) n += l.kind == "veth";
    return n;
  }
  std::string state_file() const { return config_.state_dir + "/ipam"; }

  std::string dir_;
  NetworkConfig config_;
  CallLog log_;
  FakeLinkOps links_{log_};
  FakeNft nft_{log_};
  FakeHostOps host_{log_};
};

const std::string kLinkA = host_link_name("a");

TEST_F(NetworkTest, HostLinkNamesAreShortAndStable) {
  EXPECT_EQ(kLinkA.size(), 15u);
  EXPECT_EQ(kLinkA.rfind("qfv", 0), 0u);
  EXPECT_EQ(host_link_name("a"), kLinkA);
  EXPECT_NE(host_link_name("b"), kLinkA);
  EXPECT_EQ(host_link_name(std::string(128, 'x')).size(), 15u);
}

TEST_F(NetworkTest, SetupCreatesBridgeSysctlsAndRulesInOrder) {
  auto net = open();
  ASSERT_TRUE(net->setup_node().ok());
  EXPECT_EQ(log_.take(), (Calls{
                             "find_link qf0",
                             "list_routes",
                             "create_bridge qf0",
                             "find_link qf0",
                             "add_address 2 10.88.0.1/24",
                             "read_sysctl net/ipv4/ip_forward",
                             "write_sysctl net/ipv4/ip_forward=1",
                             "read_sysctl net/ipv4/conf/qf0/route_localnet",
                             "write_sysctl net/ipv4/conf/qf0/route_localnet=1",
                             "read_sysctl net/ipv6/conf/qf0/disable_ipv6",
                             "nft ruleset",
                         }));
  EXPECT_TRUE(nft_.has_table);
  EXPECT_EQ(nft_.ruleset, render_ruleset(net->desired_rules()));

  // Again: the bridge is ours, so it is reused; nothing changes but the (identical) table.
  ASSERT_TRUE(net->setup_node().ok());
  EXPECT_EQ(log_.take(), (Calls{
                             "find_link qf0",
                             "list_routes",
                             "add_address 2 10.88.0.1/24",
                             "read_sysctl net/ipv4/ip_forward",
                             "read_sysctl net/ipv4/conf/qf0/route_localnet",
                             "read_sysctl net/ipv6/conf/qf0/disable_ipv6",
                             "nft ruleset",
                         }));
}

TEST_F(NetworkTest, BridgeNameTakenByAnotherLinkIsRefused) {
  links_.links["qf0"] = LinkInfo{7, "qf0", "veth", "", 1500, 0, true, {}};
  auto net = open();
  auto r = net->setup_node();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "already_exists");
  EXPECT_NE(r.error().message.find("link qf0 exists and is not a bridge made by qufop (kind "
                                   "'veth', alias '')"),
            std::string::npos)
      << r.error().message;
  // A bridge of that name that someone else made is not ours either.
  links_.links["qf0"] = LinkInfo{7, "qf0", "bridge", "docker", 1500, 0, true, {}};
  EXPECT_EQ(net->setup_node().error().code, "already_exists");
  EXPECT_EQ(links_.links.size(), 1u);
  EXPECT_FALSE(nft_.has_table);
  EXPECT_EQ(host_.sysctls["net/ipv4/ip_forward"], "0");
}

TEST_F(NetworkTest, SubnetOverlappingAHostRouteIsRefused) {
  links_.links["eth0"] = LinkInfo{1, "eth0", "", "", 1500, 0, true, {}};
  links_.routes = {{*parse_cidr("0.0.0.0/0"), 1}, {*parse_cidr("10.0.0.0/8"), 1}};
  auto net = open();
  auto r = net->setup_node();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "conflict");
  EXPECT_NE(r.error().message.find("node subnet 10.88.0.0/24 overlaps the host route 10.0.0.0/8 "
                                   "(ifindex 1); choose another subnet (--net-subnet)"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(links_.links.size(), 1u);  // no bridge
  EXPECT_FALSE(nft_.has_table);

  config_.subnet = "172.31.0.0/24";  // the default route alone is no conflict
  auto other = open();
  EXPECT_TRUE(other->setup_node().ok());
}

TEST_F(NetworkTest, BadConfigIsRefusedAtOpen) {
  for (auto [field, value] :
       std::vector<std::pair<std::string, std::string>>{{"subnet", "10.88.0.0/31"},
                                                        {"subnet", "10.88.0.1/24"},
                                                        {"ports", "30000-20000"},
                                                        {"bridge", "a-very-long-bridge-name"},
                                                        {"bridge", "qfvbridge"},
                                                        {"allow", "53,x"},
                                                        {"closed", "10.0.0.0/8:0"}}) {
    NetworkConfig c = config_;
    if (field == "subnet") c.subnet = value;
    if (field == "ports") c.host_ports = value;
    if (field == "bridge") c.bridge = value;
    if (field == "allow") c.allowed_node_ports = value;
    if (field == "closed") c.closed_ranges = {value};
    auto net = NodeNetwork::open(c, links_, nft_, host_);
    ASSERT_FALSE(net.ok()) << field << "=" << value;
    EXPECT_EQ(net.error().code, "invalid_argument") << net.error().message;
  }
}

TEST_F(NetworkTest, SetupRollsBackWhenAnyCallFails) {
  // Count the calls of a good setup, then fail each one in turn on a fresh host.
  size_t total = 0;
  {
    CallLog log;
    FakeLinkOps links(log);
    FakeNft nft(log);
    FakeHostOps host(log);
    auto net = NodeNetwork::open(config_, links, nft, host);
    ASSERT_TRUE((*net)->setup_node().ok());
    total = log.count();
  }
  ASSERT_EQ(total, 11u);
  for (size_t n = 1; n <= total; ++n) {
    CallLog log;
    FakeLinkOps links(log);
    FakeNft nft(log);
    FakeHostOps host(log);
    auto net = NodeNetwork::open(config_, links, nft, host);
    log.fail_nth(n);
    auto r = (*net)->setup_node();
    if (n == 10) {  // reading the optional IPv6 knob: its failure is not "missing", so it fails
      ASSERT_FALSE(r.ok());
    }
    if (r.ok()) continue;
    EXPECT_TRUE(links.links.empty()) << "failing call " << n << ": " << log.calls()[n - 1];
    EXPECT_FALSE(nft.has_table) << n;
    EXPECT_EQ(host.sysctls["net/ipv4/ip_forward"], "0") << n;
    EXPECT_EQ(host.sysctls.count("net/ipv4/conf/qf0/route_localnet") == 0 ||
                  host.sysctls["net/ipv4/conf/qf0/route_localnet"] == "0",
              true)
        << n;
  }
}

TEST_F(NetworkTest, AttachCallOrderAndResult) {
  auto net = open_and_setup();
  auto a = net->attach("a", NetnsRef::from_fd(7), 9100, 0);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->ip.str(), "10.88.0.2");
  EXPECT_EQ(a->host_port, 20000);
  EXPECT_EQ(a->link, kLinkA);
  EXPECT_EQ(log_.take(), (Calls{
                             "hold_port 20000",
                             "create_veth " + kLinkA + " master=2 mtu=1500 peer=eth0 netns=7",
                             "set_bridge_port " + kLinkA + " qufop:a",
                             "configure_inside netns=7 eth0 10.88.0.2/24 via 10.88.0.1",
                             "nft add element ip qufop published { 20000 : 10.88.0.2 . 9100 }",
                         }));
  EXPECT_EQ(nft_.published.at(20000), "10.88.0.2 . 9100");
  EXPECT_EQ(host_.held, std::set<uint16_t>{20000});  // no other program can bind it now
  EXPECT_NE(read_file_or_empty(state_file()).find("lease a 10.88.0.2 20000 9100"),
            std::string::npos);

  // No port published: no probe, no rule.
  auto b = net->attach("b", NetnsRef::from_fd(8), 0, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host_port, 0);
  for (const auto& call : log_.take()) {
    EXPECT_EQ(call.find("nft"), std::string::npos) << call;
    EXPECT_EQ(call.find("probe"), std::string::npos) << call;
  }
  EXPECT_EQ(net->attach("a", NetnsRef::from_fd(9), 9100, 0).error().code, "conflict");
  EXPECT_EQ(net->attachments().size(), 2u);
}

TEST_F(NetworkTest, AttachBeforeSetupAndBadNetnsAreErrors) {
  auto net = open();
  EXPECT_FALSE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
  ASSERT_TRUE(net->setup_node().ok());
  auto r = net->attach("a", NetnsRef::from_path(dir_ + "/no-such-netns"), 9100, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "not_found");
  EXPECT_NE(r.error().message.find("no-such-netns"), std::string::npos);
  EXPECT_FALSE(net->attach("bad id", NetnsRef::from_fd(7), 9100, 0).ok());
  EXPECT_EQ(veth_count(), 0u);
  EXPECT_TRUE(net->attachments().empty());
}

TEST_F(NetworkTest, RequestedHostPortBoundOnTheHostIsRefusedWithNothingBuilt) {
  host_.bound_ports = {20000, 21000};
  auto net = open_and_setup();
  auto r = net->attach("a", NetnsRef::from_fd(7), 9100, 21000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "conflict");
  EXPECT_NE(r.error().message.find("host port 21000 is already in use on the node"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(log_.take(), (Calls{"hold_port 21000"}));
  EXPECT_EQ(veth_count(), 0u);
  EXPECT_TRUE(net->attachments().empty());
  // Allocation skips the bound port.
  auto a = net->attach("a", NetnsRef::from_fd(7), 9100, 0);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host_port, 20001);
}

TEST_F(NetworkTest, ExhaustedSubnetIsAClearErrorWithNothingBuilt) {
  config_.subnet = "10.88.0.0/29";
  auto net = open_and_setup();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net->attach("i" + std::to_string(i), NetnsRef::from_fd(10 + i), 9100, 0).ok());
  }
  log_.take();
  auto r = net->attach("i5", NetnsRef::from_fd(20), 9100, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unavailable");
  EXPECT_NE(r.error().message.find("no free address left in 10.88.0.0/29"), std::string::npos);
  EXPECT_TRUE(log_.take().empty());
  EXPECT_EQ(veth_count(), 5u);
}

TEST_F(NetworkTest, AttachRollsBackWhenAnyCallFails) {
  auto net = open_and_setup();
  ASSERT_TRUE(net->attach("keep", NetnsRef::from_fd(6), 9100, 0).ok());
  const auto published_before = nft_.published;
  log_.take();
  // 5 calls on the good path; failing the nft one falls back to a full rewrite (one more).
  for (size_t n = 1; n <= 6; ++n) {
    log_.fail_nth(n);
    if (n == 6) log_.fail_matching("nft add element");  // with the rewrite failing too
    auto r = net->attach("a", NetnsRef::from_fd(7), 9100, 0);
    const Calls calls = log_.take();
    log_.clear_failures();
    if (n == 1 || n == 5) {
      // 1: the port probe said "busy": the next port is taken instead.
      // 5: the element add failed; the full rewrite that follows succeeded.
      ASSERT_TRUE(r.ok()) << r.error().message;
      if (n == 1) {
        EXPECT_EQ(r->host_port, 20002);
      } else {
        EXPECT_EQ(calls.back(), "nft ruleset");
      }
      ASSERT_TRUE(net->detach("a").ok());
      log_.take();
      continue;
    }
    ASSERT_FALSE(r.ok()) << "failing call " << n;
    EXPECT_EQ(r.error().message.rfind("attaching instance a: ", 0), 0u) << r.error().message;
    EXPECT_FALSE(links_.links.contains(kLinkA)) << n;
    EXPECT_EQ(veth_count(), 1u) << n;
    EXPECT_EQ(net->find("a"), std::nullopt) << n;
    EXPECT_EQ(nft_.published, published_before) << n;
    EXPECT_EQ(host_.held, std::set<uint16_t>{20000}) << n;  // keep's only
    EXPECT_EQ(read_file_or_empty(state_file()).find("lease a "), std::string::npos) << n;
    if (n >= 3) {  // the veth was created: the undo deletes it
      EXPECT_NE(std::find(calls.begin(), calls.end(), "delete_link " + kLinkA), calls.end()) << n;
    }
  }
  // And it works once nothing fails.
  ASSERT_TRUE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
}

TEST_F(NetworkTest, DetachCallOrderAndIdempotence) {
  auto net = open_and_setup();
  ASSERT_TRUE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
  log_.take();
  ASSERT_TRUE(net->detach("a").ok());
  EXPECT_EQ(log_.take(), (Calls{
                             "nft delete element ip qufop published { 20000 }",
                             "delete_link " + kLinkA,
                         }));
  EXPECT_TRUE(nft_.published.empty());
  EXPECT_TRUE(host_.held.empty());
  EXPECT_EQ(veth_count(), 0u);
  EXPECT_EQ(net->find("a"), std::nullopt);
  EXPECT_EQ(read_file_or_empty(state_file()).find("lease a"), std::string::npos);
  ASSERT_TRUE(net->detach("a").ok());  // unknown: a no-op
  EXPECT_TRUE(log_.take().empty());

  // The namespace goes away anyway: no explicit (slow) delete.
  ASSERT_TRUE(net->attach("b", NetnsRef::from_fd(8), 9100, 0).ok());
  log_.take();
  ASSERT_TRUE(net->detach("b", LinkTeardown::kGoesWithNetns).ok());
  // (next-fit: b got 20001, not a's 20000 released a moment ago)
  EXPECT_EQ(log_.take(), (Calls{"nft delete element ip qufop published { 20001 }"}));
  EXPECT_TRUE(host_.held.empty());
  EXPECT_EQ(net->find("b"), std::nullopt);
}

TEST_F(NetworkTest, DetachKeepsTheLeaseWhenAStepFails) {
  auto net = open_and_setup();
  ASSERT_TRUE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
  log_.take();
  log_.fail_matching("delete_link");
  auto r = net->detach("a");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.rfind("detaching instance a: ", 0), 0u) << r.error().message;
  EXPECT_NE(net->find("a"), std::nullopt);  // still held: its address is not handed out again
  EXPECT_TRUE(nft_.published.empty());
  log_.clear_failures();
  // Reconcile (say after a restart, with a no longer live) finishes the job.
  auto report = net->reconcile({});
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->released, (Calls{"a"}));
  EXPECT_EQ(report->deleted_links, (Calls{kLinkA}));
  EXPECT_EQ(veth_count(), 0u);

  // A failing element delete falls back to rewriting the table without the port.
  ASSERT_TRUE(net->attach("b", NetnsRef::from_fd(8), 9100, 0).ok());
  nft_.published.clear();  // someone flushed the map
  log_.take();
  ASSERT_TRUE(net->detach("b").ok());
  EXPECT_EQ(log_.take(), (Calls{
                             "nft delete element ip qufop published { 20001 }",
                             "nft ruleset",
                             "delete_link " + host_link_name("b"),
                         }));
}

TEST_F(NetworkTest, ReconcileRemovesStaleLinksLeasesAndIsIdempotent) {
  {
    auto net = open_and_setup();
    ASSERT_TRUE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
    ASSERT_TRUE(net->attach("b", NetnsRef::from_fd(8), 9100, 0).ok());
    // "Crash": the object goes away without detaching anything.
  }
  // Leftovers of older crashes: a qfv link without alias and one of an unknown instance; and
  // links that are not ours.
  links_.links["qfv000000000001"] = LinkInfo{50, "qfv000000000001", "veth", "", 1500, 2, true, {}};
  links_.links["qfv000000000002"] =
      LinkInfo{51, "qfv000000000002", "veth", "qufop:gone", 1500, 2, true, {}};
  links_.links["qfvsomeoneelse"] =
      LinkInfo{52, "qfvsomeoneelse", "veth", "not ours", 1500, 0, true, {}};
  links_.links["eth0"] = LinkInfo{1, "eth0", "", "", 1500, 0, true, {}};
  nft_.published[29999] = "10.88.0.99 . 1";  // a stale rule

  EXPECT_TRUE(host_.held.empty());  // the "crashed" owner's holds went with it
  host_.bound_ports = {20001};      // and someone bound b's port meanwhile
  auto net = open();
  ASSERT_TRUE(net->setup_node().ok());
  log_.take();
  auto report = net->reconcile({"a", "c"});
  EXPECT_EQ(host_.held, std::set<uint16_t>{20000});  // a's port held again
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->released, (Calls{"b"}));
  std::sort(report->deleted_links.begin(), report->deleted_links.end());
  Calls deleted = {"qfv000000000001", "qfv000000000002", host_link_name("b")};
  std::sort(deleted.begin(), deleted.end());
  EXPECT_EQ(report->deleted_links, deleted);
  EXPECT_TRUE(report->missing_links.empty());
  EXPECT_TRUE(report->port_conflicts.empty());  // b's port is no longer published
  EXPECT_TRUE(links_.links.contains(kLinkA));
  EXPECT_TRUE(links_.links.contains("qfvsomeoneelse"));
  EXPECT_EQ(nft_.published, (std::map<uint16_t, std::string>{{20000, "10.88.0.2 . 9100"}}));
  const std::string first = nft_.ruleset;

  auto again = net->reconcile({"a", "c"});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->released.empty());
  EXPECT_TRUE(again->deleted_links.empty());
  EXPECT_EQ(nft_.ruleset, first);

  // A live instance whose veth vanished is reported, its lease kept.
  links_.links.erase(kLinkA);
  auto missing = net->reconcile({"a"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->missing_links, (Calls{"a"}));
  EXPECT_NE(net->find("a"), std::nullopt);
}

TEST_F(NetworkTest, APublishedPortTakenWhileDownIsReported) {
  {
    auto net = open_and_setup();
    ASSERT_TRUE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
  }
  host_.bound_ports = {20000};  // another program took a's port while noded was down
  auto net = open();
  ASSERT_TRUE(net->setup_node().ok());  // still up: the DNAT shadows that program
  auto report = net->reconcile({"a"});
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->port_conflicts, std::vector<uint16_t>{20000});
  EXPECT_EQ(nft_.published.at(20000), "10.88.0.2 . 9100");
}

TEST_F(NetworkTest, TwoProcessesSharingTheStateDirDoNotCollide) {
  // Say two `qufop-noded run` at once: one bridge, one table, one state dir.
  auto one = open_and_setup();
  auto two = open_and_setup();
  auto a = one->attach("a", NetnsRef::from_fd(7), 9100, 0);
  auto b = two->attach("b", NetnsRef::from_fd(8), 9100, 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->ip.str(), "10.88.0.2");
  EXPECT_EQ(b->ip.str(), "10.88.0.3");
  EXPECT_NE(a->host_port, b->host_port);
  ASSERT_TRUE(one->detach("a").ok());
  ASSERT_TRUE(two->detach("b").ok());
  EXPECT_TRUE(nft_.published.empty());
  EXPECT_EQ(veth_count(), 0u);
}

TEST_F(NetworkTest, TeardownRemovesEverything) {
  auto net = open_and_setup();
  ASSERT_TRUE(net->attach("a", NetnsRef::from_fd(7), 9100, 0).ok());
  ASSERT_TRUE(net->attach("b", NetnsRef::from_fd(8), 9100, 0).ok());
  links_.links["eth0"] = LinkInfo{1, "eth0", "", "", 1500, 0, true, {}};
  ASSERT_TRUE(net->teardown_node().ok());
  EXPECT_FALSE(nft_.has_table);
  EXPECT_EQ(links_.links.size(), 1u);  // only eth0
  EXPECT_TRUE(net->attachments().empty());
  EXPECT_FALSE(std::filesystem::exists(state_file()));
  EXPECT_TRUE(host_.held.empty());
  EXPECT_FALSE(net->attach("c", NetnsRef::from_fd(9), 9100, 0).ok());  // needs setup again
  ASSERT_TRUE(net->teardown_node().ok());                              // twice is fine
}

}  // namespace
}  // namespace qufop::netfilter
