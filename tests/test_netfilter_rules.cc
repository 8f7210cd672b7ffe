// The nftables generator: exact script text for given desired states.
#include <gtest/gtest.h>

#include "netfilter/rules.h"

namespace qufop::netfilter {
namespace {

RulesState base_state() {
  RulesState s;
  s.bridge = "qf0";
  s.subnet = *parse_cidr("10.88.0.0/24");
  s.bridge_addr = *parse_ipv4("10.88.0.1");
  return s;
}

TEST(Rules, FullStateExactText) {
  RulesState s = base_state();
  // Given out of order: the text lists them by host port.
  s.published = {{20001, *parse_ipv4("10.88.0.3"), 9100}, {20000, *parse_ipv4("10.88.0.2"), 9100}};
  s.allowed_node_ports = *parse_port_list("53,7300-7310");
  s.closed = {*parse_closed_range("192.168.0.0/16:22,80-90"), *parse_closed_range("10.0.0.0/8")};
  EXPECT_EQ(render_ruleset(s),
            "table ip qufop\n"
            "delete table ip qufop\n"
            "table ip qufop {\n"
            "\tmap published {\n"
            "\t\ttype inet_service : ipv4_addr . inet_service\n"
            "\t\telements = { 20000 : 10.88.0.2 . 9100, 20001 : 10.88.0.3 . 9100 }\n"
            "\t}\n"
            "\n"
            "\tchain closed {\n"
            "\t\tip daddr 192.168.0.0/16 meta l4proto { tcp, udp } th dport { 22, 80-90 } drop\n"
            "\t\tip daddr 10.0.0.0/8 drop\n"
            "\t}\n"
            "\n"
            "\tchain from_instance {\n"
            "\t\tct state established,related accept\n"
            "\t\toifname \"qf0\" drop\n"
            "\t\tip daddr 10.88.0.0/24 drop\n"
            "\t\tjump closed\n"
            "\t}\n"
            "\n"
            "\tchain to_node {\n"
            "\t\tct state established,related accept\n"
            "\t\tip daddr 127.0.0.0/8 drop\n"
            "\t\tjump closed\n"
            "\t\tmeta l4proto { tcp, udp } th dport { 53, 7300-7310 } accept\n"
            "\t\tdrop\n"
            "\t}\n"
            "\n"
            "\tchain prerouting {\n"
            "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            "\t\tfib daddr type local dnat ip to tcp dport map @published\n"
            "\t}\n"
            "\n"
            "\tchain output {\n"
            "\t\ttype nat hook output priority -100; policy accept;\n"
            "\t\tfib daddr type local dnat ip to tcp dport map @published\n"
            "\t}\n"
            "\n"
            "\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            "\t\toifname != \"qf0\" ip saddr 10.88.0.0/24 masquerade\n"
            "\t\toifname \"qf0\" ip saddr 127.0.0.0/8 snat to 10.88.0.1\n"
            "\t}\n"
            "\n"
            "\tchain forward {\n"
            "\t\ttype filter hook forward priority filter; policy accept;\n"
            "\t\tiifname \"qf0\" jump from_instance\n"
            "\t}\n"
            "\n"
            "\tchain input {\n"
            "\t\ttype filter hook input priority filter; policy accept;\n"
            "\t\tiifname \"qf0\" jump to_node\n"
            "\t}\n"
            "}\n");
}

TEST(Rules, EmptyStateHasNoElementsNoClosedChainAndNoAllowRule) {
  RulesState s = base_state();
  s.bridge = "br-x";
  s.subnet = *parse_cidr("172.30.4.0/22");
  s.bridge_addr = *parse_ipv4("172.30.4.1");
  s.allowed_node_ports = *parse_port_list("7300");
  EXPECT_EQ(render_ruleset(s),
            "table ip qufop\n"
            "delete table ip qufop\n"
            "table ip qufop {\n"
            "\tmap published {\n"
            "\t\ttype inet_service : ipv4_addr . inet_service\n"
            "\t}\n"
            "\n"
            "\tchain from_instance {\n"
            "\t\tct state established,related accept\n"
            "\t\toifname \"br-x\" drop\n"
            "\t\tip daddr 172.30.4.0/22 drop\n"
            "\t}\n"
            "\n"
            "\tchain to_node {\n"
            "\t\tct state established,related accept\n"
            "\t\tip daddr 127.0.0.0/8 drop\n"
            "\t\tmeta l4proto { tcp, udp } th dport 7300 accept\n"
            "\t\tdrop\n"
            "\t}\n"
            "\n"
            "\tchain prerouting {\n"
            "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            "\t\tfib daddr type local dnat ip to tcp dport map @published\n"
            "\t}\n"
            "\n"
            "\tchain output {\n"
            "\t\ttype nat hook output priority -100; policy accept;\n"
            "\t\tfib daddr type local dnat ip to tcp dport map @published\n"
            "\t}\n"
            "\n"
            "\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            "\t\toifname != \"br-x\" ip saddr 172.30.4.0/22 masquerade\n"
            "\t\toifname \"br-x\" ip saddr 127.0.0.0/8 snat to 172.30.4.1\n"
            "\t}\n"
            "\n"
            "\tchain forward {\n"
            "\t\ttype filter hook forward priority filter; policy accept;\n"
            "\t\tiifname \"br-x\" jump from_instance\n"
            "\t}\n"
            "\n"
            "\tchain input {\n"
            "\t\ttype filter hook input priority filter; policy accept;\n"
            "\t\tiifname \"br-x\" jump to_node\n"
            "\t}\n"
            "}\n");
}

TEST(Rules, SameStateSameText) {
  RulesState a = base_state();
  a.published = {{20000, *parse_ipv4("10.88.0.2"), 9100}, {20002, *parse_ipv4("10.88.0.4"), 80}};
  RulesState b = a;
  std::swap(b.published[0], b.published[1]);
  EXPECT_EQ(render_ruleset(a), render_ruleset(b));
}

TEST(Rules, IncrementalScripts) {
  EXPECT_EQ(render_publish({20000, *parse_ipv4("10.88.0.2"), 9100}),
            "add element ip qufop published { 20000 : 10.88.0.2 . 9100 }\n");
  EXPECT_EQ(render_unpublish(20000), "delete element ip qufop published { 20000 }\n");
  EXPECT_EQ(render_delete_table(), "table ip qufop\ndelete table ip qufop\n");
}

TEST(Rules, ClosedRanges) {
  auto all = parse_closed_range("10.0.0.0/8");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->net.str(), "10.0.0.0/8");
  EXPECT_TRUE(all->ports.empty());
  auto some = parse_closed_range("169.254.169.254:80,443");
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->net.str(), "169.254.169.254/32");
  ASSERT_EQ(some->ports.size(), 2u);
  EXPECT_EQ(some->ports[1].str(), "443");
  for (std::string_view bad : {"10.0.0.1/8:22", "10.0.0.0/8:", "10.0.0.0/8:0", "x:22"}) {
    auto r = parse_closed_range(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("closed range '" + std::string(bad) + "'"), std::string::npos)
        << r.error().message;
  }
}

}  // namespace
}  // namespace qufop::netfilter
