// IPAM: CIDR and port parsing, overlap checks, allocation, exhaustion, release, and the state
// file (round trip, reuse after a restart, failed writes).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "netfilter/ipam.h"

namespace qufop::netfilter {
namespace {

Cidr cidr(std::string_view text) {
  auto c = parse_cidr(text);
  EXPECT_TRUE(c.ok()) << text;
  return c.ok() ? *c : Cidr{};
}

Ipv4 ip(std::string_view text) { return *parse_ipv4(text); }

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/qufop-netfilter-test.XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Cidr, ParsesAddressesAndNetworks) {
  EXPECT_EQ(ip("10.88.0.1").value, 0x0a580001u);
  EXPECT_EQ(ip("10.88.0.1").str(), "10.88.0.1");
  auto c = cidr("10.88.0.0/24");
  EXPECT_EQ(c.prefix, 24);
  EXPECT_EQ(c.network().str(), "10.88.0.0");
  EXPECT_EQ(c.broadcast().str(), "10.88.0.255");
  EXPECT_TRUE(c.contains(ip("10.88.0.77")));
  EXPECT_FALSE(c.contains(ip("10.88.1.1")));
  EXPECT_EQ(cidr("192.168.1.7").prefix, 32);
  EXPECT_EQ(cidr("0.0.0.0/0").str(), "0.0.0.0/0");
  auto host = parse_cidr("10.88.0.1/24", true);
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->str(), "10.88.0.1/24");
}

TEST(Cidr, ErrorsNameTheInput) {
  for (std::string_view bad : {"10.88.0/24", "10.88.0.256/24", "10.88.0.0/33", "10.88.0.0/",
                               "a.b.c.d/8", "", "10.088.0.0/16", "10.88.0.0/24/1"}) {
    auto r = parse_cidr(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, "invalid_argument");
    EXPECT_NE(r.error().message.find("'" + std::string(bad) + "'"), std::string::npos)
        << r.error().message;
  }
  auto r = parse_cidr("10.88.0.1/24");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("host bits set (did you mean 10.88.0.0/24?)"), std::string::npos)
      << r.error().message;
}

TEST(Cidr, Overlaps) {
  EXPECT_TRUE(overlaps(cidr("10.88.0.0/24"), cidr("10.0.0.0/8")));
  EXPECT_TRUE(overlaps(cidr("10.0.0.0/8"), cidr("10.88.0.0/24")));
  EXPECT_TRUE(overlaps(cidr("10.88.0.0/24"), cidr("10.88.0.128/25")));
  EXPECT_TRUE(overlaps(cidr("10.88.0.0/24"), cidr("10.88.0.9")));
  EXPECT_FALSE(overlaps(cidr("10.88.0.0/24"), cidr("10.88.1.0/24")));
  EXPECT_FALSE(overlaps(cidr("10.88.0.0/24"), cidr("192.168.0.0/16")));
  EXPECT_TRUE(overlaps(cidr("10.88.0.0/24"), cidr("0.0.0.0/0")));

  std::vector<Cidr> routes = {cidr("0.0.0.0/0"), cidr("192.168.1.0/24"), cidr("10.80.0.0/12")};
  auto hit = first_overlap(cidr("10.88.0.0/24"), routes);
  ASSERT_TRUE(hit.has_value());  // the default route is skipped, the /12 is not
  EXPECT_EQ(hit->str(), "10.80.0.0/12");
  EXPECT_FALSE(first_overlap(cidr("172.30.0.0/24"), routes).has_value());
}

TEST(Ports, RangesAndLists) {
  auto r = parse_port_range("20000-29999");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, 20000);
  EXPECT_EQ(r->last, 29999);
  EXPECT_EQ(r->str(), "20000-29999");
  EXPECT_EQ(parse_port_range("53")->str(), "53");
  for (std::string_view bad : {"0", "65536", "2-1", "x", "", "1-", "-5"}) {
    auto e = parse_port_range(bad);
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_NE(e.error().message.find("'" + std::string(bad) + "'"), std::string::npos);
  }
  auto list = parse_port_list("7300-7310,53, 7305-7320,22");
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].str(), "22");
  EXPECT_EQ((*list)[1].str(), "53");
  EXPECT_EQ((*list)[2].str(), "7300-7320");
  EXPECT_TRUE(parse_port_list("")->empty());
  EXPECT_FALSE(parse_port_list("53,,54").ok());
}

TEST(InstanceId, Validated) {
  EXPECT_TRUE(validate_instance_id("ufop-demo.3:a_b").ok());
  EXPECT_FALSE(validate_instance_id("").ok());
  EXPECT_FALSE(validate_instance_id("a b").ok());
  EXPECT_FALSE(validate_instance_id("a/b").ok());
  EXPECT_FALSE(validate_instance_id(std::string(129, 'a')).ok());
}

TEST(Ipam, AllocatesLowestFreeAddressAndPort) {
  Ipam ipam(cidr("10.88.0.0/24"), *parse_port_range("20000-29999"));
  EXPECT_EQ(ipam.gateway().str(), "10.88.0.1");
  EXPECT_EQ(ipam.capacity(), 253u);
  auto a = ipam.allocate("a", 9100, 0, nullptr);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->ip.str(), "10.88.0.2");
  EXPECT_EQ(a->host_port, 20000);
  EXPECT_EQ(a->instance_port, 9100);
  auto b = ipam.allocate("b", 9100, 0, nullptr);
  EXPECT_EQ(b->ip.str(), "10.88.0.3");
  EXPECT_EQ(b->host_port, 20001);
  auto c = ipam.allocate("c", 0, 0, nullptr);  // nothing published
  EXPECT_EQ(c->ip.str(), "10.88.0.4");
  EXPECT_EQ(c->host_port, 0);
  auto d = ipam.allocate("d", 80, 8080, nullptr);  // an explicit port, outside the range too
  EXPECT_EQ(d->host_port, 8080);

  EXPECT_EQ(ipam.allocate("a", 9100, 0, nullptr).error().code, "conflict");
  auto taken = ipam.allocate("e", 9100, 20001, nullptr);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.error().code, "conflict");
  EXPECT_NE(taken.error().message.find("20001"), std::string::npos);
  EXPECT_FALSE(ipam.allocate("e", 0, 20005, nullptr).ok());  // host port without a target
  EXPECT_EQ(ipam.size(), 4u);
}

TEST(Ipam, ProbeSkipsBoundPortsAndRefusesARequestedOne) {
  Ipam ipam(cidr("10.88.0.0/24"), *parse_port_range("20000-20010"));
  std::vector<uint16_t> probed;
  auto probe = [&](uint16_t p) -> Result<void> {
    probed.push_back(p);
    if (p == 20000 || p == 20001 || p == 20005) return Error::sys("bind", EADDRINUSE);
    return ok();
  };
  auto a = ipam.allocate("a", 9100, 0, probe);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host_port, 20002);
  EXPECT_EQ(probed, (std::vector<uint16_t>{20000, 20001, 20002}));
  auto b = ipam.allocate("b", 9100, 20005, probe);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, "conflict");
  EXPECT_NE(b.error().message.find("host port 20005 is already in use on the node"),
            std::string::npos)
      << b.error().message;
  EXPECT_EQ(ipam.size(), 1u);  // nothing half-allocated
}

TEST(Ipam, ExhaustionIsAClearErrorAndReleaseFreesForReuse) {
  Ipam ipam(cidr("10.88.0.0/29"), *parse_port_range("20000-20009"));  // .2 .. .6
  EXPECT_EQ(ipam.capacity(), 5u);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(ipam.allocate("i" + std::to_string(i), 9100, 0, nullptr).ok());
  }
  auto full = ipam.allocate("i5", 9100, 0, nullptr);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, "unavailable");
  EXPECT_NE(full.error().message.find("no free address left in 10.88.0.0/29"), std::string::npos)
      << full.error().message;

  auto released = ipam.release("i1");
  ASSERT_TRUE(released.has_value());
  EXPECT_EQ(released->ip.str(), "10.88.0.3");
  EXPECT_FALSE(ipam.release("i1").has_value());
  auto again = ipam.allocate("i5", 9100, 0, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ip.str(), "10.88.0.3");  // the only free one (after wrapping around)
  EXPECT_EQ(again->host_port, 20005);       // next-fit: not 20001, released a moment ago

  Ipam ports(cidr("10.88.0.0/24"), *parse_port_range("20000-20001"));
  ASSERT_TRUE(ports.allocate("a", 1, 0, nullptr).ok());
  ASSERT_TRUE(ports.allocate("b", 1, 0, nullptr).ok());
  auto none = ports.allocate("c", 1, 0, nullptr);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, "unavailable");
  EXPECT_NE(none.error().message.find("no free host port left in 20000-20001"), std::string::npos);
  EXPECT_TRUE(ports.allocate("c", 0, 0, nullptr).ok());  // an address without a port is fine
}

TEST(Ipam, NextFitWrapsAroundAndSkipsTakenOnes) {
  Ipam ipam(cidr("10.88.0.0/29"), *parse_port_range("20000-20002"));  // .2 .. .6
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(ipam.allocate(id, 1, 0, nullptr).ok());
  ipam.release("a");
  ipam.release("b");
  auto d = ipam.allocate("d", 1, 0, nullptr);  // after c (.4, 20002): .5 and, wrapping, 20000
  EXPECT_EQ(d->ip.str(), "10.88.0.5");
  EXPECT_EQ(d->host_port, 20000);
  auto e = ipam.allocate("e", 1, 0, nullptr);
  EXPECT_EQ(e->ip.str(), "10.88.0.6");
  EXPECT_EQ(e->host_port, 20001);
  auto f = ipam.allocate("f", 0, 0, nullptr);
  EXPECT_EQ(f->ip.str(), "10.88.0.2");
}

TEST(Ipam, SerializeParseRoundTrip) {
  Ipam ipam(cidr("10.88.0.0/24"), *parse_port_range("20000-29999"));
  ASSERT_TRUE(ipam.allocate("b", 9100, 0, nullptr).ok());
  ASSERT_TRUE(ipam.allocate("a", 0, 0, nullptr).ok());
  ASSERT_TRUE(ipam.allocate("c", 80, 8080, nullptr).ok());
  const std::string text = ipam.serialize();
  EXPECT_EQ(text,
            "# qufop node network leases: lease <instance> <ip> <host port> <port>\n"
            "subnet 10.88.0.0/24\n"
            "cursor 10.88.0.4 20000\n"
            "lease b 10.88.0.2 20000 9100\n"
            "lease a 10.88.0.3 0 0\n"
            "lease c 10.88.0.4 8080 80\n");
  auto back = Ipam::parse(text, cidr("10.88.0.0/24"), *parse_port_range("20000-29999"), "f");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->leases(), ipam.leases());
  EXPECT_EQ(back->serialize(), text);
}

TEST(Ipam, ParseErrorsNameFileAndLine) {
  const auto subnet = cidr("10.88.0.0/24");
  const auto ports = *parse_port_range("20000-29999");
  auto bad = Ipam::parse("subnet 10.88.0.0/24\nlease a 10.88.0.2 20000\n", subnet, ports, "st");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message.rfind("st:2: ", 0), 0u) << bad.error().message;
  auto dup = Ipam::parse("lease a 10.88.0.2 0 0\nlease b 10.88.0.2 0 0\n", subnet, ports, "st");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().message.find("st:2: address 10.88.0.2 leased twice"), std::string::npos)
      << dup.error().message;
  auto moved = Ipam::parse("subnet 10.77.0.0/24\nlease a 10.77.0.2 0 0\n", subnet, ports, "st");
  ASSERT_FALSE(moved.ok());
  EXPECT_NE(moved.error().message.find("outside the configured subnet 10.88.0.0/24 (the state "
                                       "was written for 10.77.0.0/24)"),
            std::string::npos)
      << moved.error().message;
  // A changed subnet with no leases left is fine.
  EXPECT_TRUE(Ipam::parse("subnet 10.77.0.0/24\n", subnet, ports, "st").ok());
}

TEST(IpamStore, PersistsAndReusesAfterRestart) {
  TempDir dir;
  const auto subnet = cidr("10.88.0.0/24");
  const auto ports = *parse_port_range("20000-29999");
  {
    auto store = IpamStore::open(dir.path() + "/state", subnet, ports);
    ASSERT_TRUE(store.ok()) << store.error().message;
    ASSERT_TRUE(store->allocate("a", 9100, 0, nullptr).ok());
    ASSERT_TRUE(store->allocate("b", 9100, 0, nullptr).ok());
    ASSERT_TRUE(store->allocate("c", 9100, 0, nullptr).ok());
    ASSERT_TRUE(store->release("b").ok());
    EXPECT_EQ(read_file(store->path()), store->ipam().serialize());
    EXPECT_FALSE(std::filesystem::exists(store->path() + ".tmp"));
  }
  // "Restart": a new store over the same dir reuses the leases and hands out none in use.
  auto store = IpamStore::open(dir.path() + "/state", subnet, ports);
  ASSERT_TRUE(store.ok()) << store.error().message;
  ASSERT_NE(store->ipam().find("a"), nullptr);
  EXPECT_EQ(store->ipam().find("a")->ip.str(), "10.88.0.2");
  EXPECT_EQ(store->ipam().find("c")->host_port, 20002);
  EXPECT_EQ(store->ipam().find("b"), nullptr);
  // The cursors survive the restart too: b's address and port are not reused right away.
  auto d = store->allocate("d", 9100, 0, nullptr);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ip.str(), "10.88.0.5");
  EXPECT_EQ(d->host_port, 20003);
  auto e = store->allocate("e", 9100, 0, nullptr);
  EXPECT_EQ(e->ip.str(), "10.88.0.6");
  EXPECT_EQ(e->host_port, 20004);

  ASSERT_TRUE(store->clear().ok());
  EXPECT_EQ(store->ipam().size(), 0u);
  EXPECT_FALSE(std::filesystem::exists(store->path()));
  auto empty = IpamStore::open(dir.path() + "/state", subnet, ports);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->ipam().size(), 0u);
}

TEST(IpamStore, ProcessesSharingADirSeeEachOthersLeases) {
  TempDir dir;
  const auto subnet = cidr("10.88.0.0/24");
  const auto ports = *parse_port_range("20000-29999");
  auto one = IpamStore::open(dir.path(), subnet, ports);
  auto two = IpamStore::open(dir.path(), subnet, ports);  // its own lock fd, like a process
  ASSERT_TRUE(one.ok() && two.ok());
  {
    auto held = one->lock();
    ASSERT_TRUE(held.ok());
    ASSERT_TRUE(one->allocate("a", 9100, 0, nullptr).ok());
  }
  {
    auto held = two->lock();  // reloads: a is there
    ASSERT_TRUE(held.ok());
    ASSERT_NE(two->ipam().find("a"), nullptr);
    auto b = two->allocate("b", 9100, 0, nullptr);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->ip.str(), "10.88.0.3");
    EXPECT_EQ(b->host_port, 20001);
  }
  auto held = one->lock();
  ASSERT_TRUE(held.ok());
  EXPECT_NE(one->ipam().find("b"), nullptr);
}

TEST(IpamStore, AFailedWriteLeavesTheStateAsItWas) {
  TempDir dir;
  auto store = IpamStore::open(dir.path() + "/state", cidr("10.88.0.0/24"),
                               *parse_port_range("20000-29999"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->allocate("a", 9100, 0, nullptr).ok());
  std::filesystem::remove_all(dir.path() + "/state");  // the next write cannot succeed
  auto b = store->allocate("b", 9100, 0, nullptr);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("saving the address lease: open("), std::string::npos)
      << b.error().message;
  EXPECT_EQ(store->ipam().find("b"), nullptr);
  EXPECT_FALSE(store->release("a").ok());
  EXPECT_NE(store->ipam().find("a"), nullptr);
}

TEST(IpamStore, CorruptStateIsAClearError) {
  TempDir dir;
  std::ofstream(dir.path() + "/ipam") << "lease a 10.88.0.2 20000\n";
  auto store = IpamStore::open(dir.path(), cidr("10.88.0.0/24"), *parse_port_range("1-2"));
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().message.find(dir.path() + "/ipam:1: expected 'lease "), std::string::npos)
      << store.error().message;
}

}  // namespace
}  // namespace qufop::netfilter
