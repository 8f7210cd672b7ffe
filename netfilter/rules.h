// The node's nftables rules: a pure generator from the desired state to nft script text, and
// the small interface that applies a script (libnftables for real, a recording fake in tests).
//
// Everything lives in one table, `ip qufop`. A full apply is one atomic transaction that first
// deletes the table (creating it empty first so the delete cannot fail) and then defines it
// whole, so applying the same state twice changes nothing and a restart leaves no duplicate or
// stale rule. Published ports live in a map, so attaching or detaching one instance is a
// one-element transaction.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "netfilter/ipam.h"

struct nft_ctx;

namespace qufop::netfilter {

inline constexpr std::string_view kTable = "qufop";

// host port -> instance ip:port (TCP).
struct Published {
  uint16_t host_port = 0;
  Ipv4 ip;
  uint16_t port = 0;
  auto operator<=>(const Published&) const = default;
};

// Destinations no instance may reach: a network and its ports (TCP and UDP); no ports means
// every port and protocol.
struct ClosedRange {
  Cidr net;
  std::vector<PortRange> ports;
  auto operator<=>(const ClosedRange&) const = default;
};
// "192.168.0.0/16", "10.0.0.0/8:22,80-90". Errors name the input.
Result<ClosedRange> parse_closed_range(std::string_view text);

struct RulesState {
  std::string bridge;  // "qf0"
  Cidr subnet;         // 10.88.0.0/24
  Ipv4 bridge_addr;    // 10.88.0.1
  std::vector<Published> published;
  std::vector<PortRange> allowed_node_ports;  // what instances may reach on the node itself
  std::vector<ClosedRange> closed;
};

// The whole table as one atomic replacement. Published entries are written ordered by host
// port, so the text depends on the state only.
//
// What the rules do, chain by chain:
//   prerouting/output (nat): a TCP packet to a local address whose port is published is DNATed
//     to the instance; output makes it work from the node itself, 127.0.0.1 included (which
//     needs net.ipv4.conf.<bridge>.route_localnet=1: the rewritten packet leaves through the
//     bridge with source 127.0.0.1, and its replies come back to 127.0.0.1 through it).
//   postrouting (nat): instance egress leaving through another link is masqueraded; a DNATed
//     connection from 127.0.0.0/8 gets the bridge address as source (an instance cannot answer
//     127.0.0.1).
//   forward (filter): from the bridge, nothing reaches the bridge or the subnet again (instance
//     to instance, also through a published port), nor a closed range.
//   input (filter): from the bridge, only replies and the allowed node ports; never 127.0.0.0/8
//     (route_localnet would otherwise let an instance forge packets to the node's loopback).
std::string render_ruleset(const RulesState& state);
// One published port added to or removed from the live table (one transaction each).
std::string render_publish(const Published& p);
std::string render_unpublish(uint16_t host_port);
// Removes the table if present (never fails for a missing table).
std::string render_delete_table();

// Applies nft scripts. Implementations act in the network namespace they were created in.
class NftOps {
 public:
  virtual ~NftOps() = default;
  // Runs one script as one transaction: all of it or nothing.
  virtual Result<void> run(std::string_view script) = 0;
  // `nft list table ip qufop`, or "" when there is no such table.
  virtual Result<std::string> list_table() = 0;
};

// libnftables. Its netlink socket is opened by create(), in the calling thread's namespace.
class LibNftables final : public NftOps {
 public:
  static Result<std::unique_ptr<LibNftables>> create();
  ~LibNftables() override;
  LibNftables(const LibNftables&) = delete;
  LibNftables& operator=(const LibNftables&) = delete;

  Result<void> run(std::string_view script) override;
  Result<std::string> list_table() override;

 private:
  explicit LibNftables(nft_ctx* ctx) : ctx_(ctx) {}
  Result<std::string> run_buffered(std::string_view script);
  nft_ctx* ctx_;
};

}  // namespace qufop::netfilter
