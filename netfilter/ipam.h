// IPAM of the node network: IPv4 CIDR parsing, instance addresses from the node subnet and host
// ports from a range, each keyed by instance id. `Ipam` is the pure core (no IO); `IpamStore`
// persists it in the node's state dir (one small line file, written tmp + fsync + rename) so a
// restart reuses every lease and never hands out one in use.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qufop::netfilter {

// An IPv4 address in host byte order.
struct Ipv4 {
  uint32_t value = 0;
  std::string str() const;
  auto operator<=>(const Ipv4&) const = default;
};
// "10.88.0.1"; the error names the input.
Result<Ipv4> parse_ipv4(std::string_view text);

struct Cidr {
  Ipv4 addr;  // as written: an interface address keeps its host bits (10.88.0.1/24)
  int prefix = 32;

  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
  Ipv4 network() const { return {addr.value & mask()}; }
  Ipv4 broadcast() const { return {network().value | ~mask()}; }
  bool contains(Ipv4 ip) const { return (ip.value & mask()) == network().value; }
  std::string str() const;  // "10.88.0.0/24"
  auto operator<=>(const Cidr&) const = default;
};
// "10.88.0.0/24" (a bare address is a /32). Host bits are refused unless allow_host_bits.
Result<Cidr> parse_cidr(std::string_view text, bool allow_host_bits = false);

// True when the two networks share at least one address.
bool overlaps(const Cidr& a, const Cidr& b);
// The first of `routes` that overlaps `subnet`, if any (default routes, prefix 0, are skipped:
// every subnet "overlaps" them and they do not make an address ambiguous).
std::optional<Cidr> first_overlap(const Cidr& subnet, std::span<const Cidr> routes);

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;
  bool contains(uint16_t p) const { return p >= first && p <= last; }
  std::string str() const;  // "53" or "20000-29999"
  auto operator<=>(const PortRange&) const = default;
};
// "20000-29999" or "53"; ports 1..65535.
Result<PortRange> parse_port_range(std::string_view text);
// "53,7300-7310" -> sorted, merged ranges. Empty text -> empty list.
Result<std::vector<PortRange>> parse_port_list(std::string_view text);

// Instance ids: 1..128 characters of [A-Za-z0-9_.:-] (they become part of a link alias and of
// a line of the state file).
Result<void> validate_instance_id(std::string_view id);

struct Lease {
  std::string instance_id;
  Ipv4 ip;
  uint16_t host_port = 0;      // 0: nothing published
  uint16_t instance_port = 0;  // the port host_port forwards to
  auto operator<=>(const Lease&) const = default;
};

class Ipam {
 public:
  // The subnet must hold at least one instance address (prefix <= 30).
  Ipam(Cidr subnet, PortRange ports);

  const Cidr& subnet() const { return subnet_; }
  const PortRange& ports() const { return ports_; }
  // The bridge's address: the first host address of the subnet (10.88.0.1).
  Ipv4 gateway() const { return {subnet_.network().value + 1}; }

  // Asks the host whether a candidate host port is free (a bind() probe); allocation skips
  // ports it refuses, an explicitly requested port it refuses is an error.
  using PortProbe = std::function<Result<void>(uint16_t)>;

  // A new lease for `instance_id`: the next free address after the last one handed out
  // (next-fit, wrapping: a released address is not reused right away, so neighbour caches and
  // conntrack entries of its previous holder have time to go), and when instance_port is not 0
  // a host port (requested_host_port, or the next free one of the range, likewise, when 0).
  Result<Lease> allocate(std::string_view instance_id, uint16_t instance_port,
                         uint16_t requested_host_port, const PortProbe& probe);
  // Adds a lease as it is (loading state). Refuses duplicates and addresses outside the subnet.
  Result<void> insert(Lease lease);
  std::optional<Lease> release(std::string_view instance_id);
  void clear();

  const Lease* find(std::string_view instance_id) const;
  std::vector<Lease> leases() const;  // ordered by address
  size_t size() const { return by_id_.size(); }
  size_t capacity() const;  // instance addresses in the subnet

  // The state file text, and back. Errors name `source` and the line.
  std::string serialize() const;
  static Result<Ipam> parse(std::string_view text, Cidr subnet, PortRange ports,
                            std::string_view source);

 private:
  Cidr subnet_;
  PortRange ports_;
  std::map<std::string, Lease, std::less<>> by_id_;
  std::set<uint32_t> ips_;
  std::set<uint16_t> host_ports_;
  // Next-fit cursors: the last address and range port handed out (0: none yet).
  uint32_t last_ip_ = 0;
  uint16_t last_port_ = 0;
};

// The persisted IPAM: every change is written before it returns; a failed write leaves the
// in-memory state as it was.
//
// Processes may share a state dir (say several `qufop-noded run` at once): lock() takes an
// exclusive flock on `<state_dir>/lock` and reloads the file, so each change is made on the
// current state and no two processes hand out the same address or port.
//
// The state only matters while the node's namespaces exist: on tmpfs (/run) it is gone with a
// reboot exactly when they are, and writing it costs microseconds; on a disk every change pays
// an fsync (about 10 ms here).
class IpamStore {
 public:
  // Loads `<state_dir>/ipam` when present (state_dir is created if missing).
  static Result<IpamStore> open(const std::string& state_dir, Cidr subnet, PortRange ports);
  ~IpamStore();
  IpamStore(IpamStore&& other) noexcept;
  IpamStore& operator=(IpamStore&& other) noexcept;

  // Holds the state dir's lock while alive.
  class Lock {
   public:
    explicit Lock(int fd) : fd_(fd) {}
    ~Lock();
    Lock(Lock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Lock& operator=(Lock&&) = delete;

   private:
    int fd_;
  };
  // Blocks until no other process holds the lock, then reloads the state from the file.
  Result<Lock> lock();

  Result<Lease> allocate(std::string_view instance_id, uint16_t instance_port,
                         uint16_t requested_host_port, const Ipam::PortProbe& probe);
  Result<void> release(std::string_view instance_id);
  Result<void> clear();  // every lease gone, the file removed

  const Ipam& ipam() const { return ipam_; }
  const std::string& path() const { return path_; }

 private:
  IpamStore(std::string path, int lock_fd, Ipam ipam)
      : path_(std::move(path)), lock_fd_(lock_fd), ipam_(std::move(ipam)) {}
  Result<void> save() const;

  std::string path_;
  int lock_fd_ = -1;
  Ipam ipam_;
};

}  // namespace qufop::netfilter
