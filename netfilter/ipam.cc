#include "netfilter/ipam.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <filesystem>

#include "common/files.h"

namespace qufop::netfilter {
namespace {

std::string squote(std::string_view s) { return "'" + std::string(s) + "'"; }

// A decimal number in [0, max], all of `text`.
std::optional<uint32_t> parse_uint(std::string_view text, uint32_t max) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v > max) return std::nullopt;
  return v;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t pos = text.find(sep, start);
    out.push_back(text.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

constexpr const char* kStateFile = "ipam";
constexpr const char* kHeader =
    "# qufop node network leases: lease <instance> <ip> <host port> <port>";

}  // namespace

std::string Ipv4::str() const {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", value >> 24, (value >> 16) & 0xff,
                (value >> 8) & 0xff, value & 0xff);
  return buf;
}

Result<Ipv4> parse_ipv4(std::string_view text) {
  auto parts = split(text, '.');
  if (parts.size() != 4) return Error::invalid("bad IPv4 address " + squote(text));
  uint32_t v = 0;
  for (auto part : parts) {
    // No leading zeros ("010" is octal to inet_aton): refuse rather than guess.
    if (part.size() > 1 && part[0] == '0')
      return Error::invalid("bad IPv4 address " + squote(text));
    auto octet = parse_uint(part, 255);
    if (!octet) return Error::invalid("bad IPv4 address " + squote(text));
    v = (v << 8) | *octet;
  }
  return Ipv4{v};
}

std::string Cidr::str() const { return addr.str() + "/" + std::to_string(prefix); }

Result<Cidr> parse_cidr(std::string_view text, bool allow_host_bits) {
  size_t slash = text.find('/');
  Cidr c;
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip) return Error::invalid("bad CIDR " + squote(text) + ": expected A.B.C.D/N");
  c.addr = *ip;
  if (slash != std::string_view::npos) {
    auto prefix = parse_uint(text.substr(slash + 1), 32);
    if (!prefix) return Error::invalid("bad CIDR " + squote(text) + ": prefix must be 0..32");
    c.prefix = static_cast<int>(*prefix);
  }
  if (!allow_host_bits && c.network() != c.addr) {
    return Error::invalid("bad CIDR " + squote(text) + ": host bits set (did you mean " +
                          Cidr{c.network(), c.prefix}.str() + "?)");
  }
  return c;
}

bool overlaps(const Cidr& a, const Cidr& b) {
  int p = std::min(a.prefix, b.prefix);
  uint32_t mask = p == 0 ? 0 : ~uint32_t{0} << (32 - p);
  return (a.addr.value & mask) == (b.addr.value & mask);
}

std::optional<Cidr> first_overlap(const Cidr& subnet, std::span<const Cidr> routes) {
  for (const Cidr& r : routes) {
    if (r.prefix > 0 && overlaps(subnet, r)) return r;
  }
  return std::nullopt;
}

std::string PortRange::str() const {
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

Result<PortRange> parse_port_range(std::string_view text) {
  text = trim(text);
  size_t dash = text.find('-');
  auto first = parse_uint(text.substr(0, dash), 65535);
  auto last = dash == std::string_view::npos ? first : parse_uint(text.substr(dash + 1), 65535);
  if (!first || !last || *first == 0 || *last == 0) {
    return Error::invalid("bad port range " + squote(text) +
                          ": expected PORT or FIRST-LAST, 1..65535");
  }
  if (*first > *last) return Error::invalid("bad port range " + squote(text) + ": first > last");
  return PortRange{static_cast<uint16_t>(*first), static_cast<uint16_t>(*last)};
}

Result<std::vector<PortRange>> parse_port_list(std::string_view text) {
  std::vector<PortRange> ranges;
  if (trim(text).empty()) return ranges;
  for (auto item : split(text, ',')) {
    auto r = parse_port_range(item);
    if (!r) return r.error().wrap("port list " + squote(text));
    ranges.push_back(*r);
  }
  std::sort(ranges.begin(), ranges.end());
  std::vector<PortRange> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().last + 1) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

Result<void> validate_instance_id(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return Error::invalid("instance id " + squote(id) + ": must be 1..128 characters");
  }
  for (char ch : id) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '-';
    if (!ok) {
      return Error::invalid("instance id " + squote(id) +
                            ": only letters, digits and _ . : - are allowed");
    }
  }
  return ok();
}

Ipam::Ipam(Cidr subnet, PortRange ports) : subnet_(subnet), ports_(ports) {
  subnet_.addr = subnet_.network();
  if (subnet_.prefix > 30) std::abort();  // invariant: callers validate the subnet
}

size_t Ipam::capacity() const {
  // Network, bridge (.1) and broadcast addresses are not handed out.
  return (size_t{1} << (32 - subnet_.prefix)) - 3;
}

Result<Lease> Ipam::allocate(std::string_view instance_id, uint16_t instance_port,
                             uint16_t requested_host_port, const PortProbe& probe) {
  QF_TRY(validate_instance_id(instance_id));
  if (find(instance_id)) {
    return Error{"conflict", "instance " + squote(instance_id) + " already holds an address", 0};
  }
  if (instance_port == 0 && requested_host_port != 0) {
    return Error::invalid("host port " + std::to_string(requested_host_port) +
                          " given without an instance port");
  }
  Lease lease{std::string(instance_id), {}, 0, instance_port};

  // Next-fit over the instance addresses: after the bridge's, before the broadcast address.
  const uint32_t first_ip = gateway().value + 1;
  const uint32_t count_ip = static_cast<uint32_t>(capacity());
  uint32_t start =
      last_ip_ >= first_ip && last_ip_ - first_ip < count_ip ? last_ip_ - first_ip + 1 : 0;
  std::optional<uint32_t> ip;
  for (uint32_t i = 0; i < count_ip; ++i) {
    uint32_t candidate = first_ip + (start + i) % count_ip;
    if (!ips_.contains(candidate)) {
      ip = candidate;
      break;
    }
  }
  if (!ip) {
    return Error{"unavailable",
                 "no free address left in " + subnet_.str() + " (" + std::to_string(size()) +
                     " in use); widen the subnet or stop instances",
                 0};
  }
  lease.ip = {*ip};

  if (instance_port != 0 && requested_host_port != 0) {
    if (host_ports_.contains(requested_host_port)) {
      return Error{"conflict",
                   "host port " + std::to_string(requested_host_port) +
                       " is already published for another instance",
                   0};
    }
    if (probe) {
      if (auto r = probe(requested_host_port); !r) {
        return Error{"conflict",
                     "host port " + std::to_string(requested_host_port) +
                         " is already in use on the node (" + r.error().message + ")",
                     r.error().sys_errno};
      }
    }
    lease.host_port = requested_host_port;
  } else if (instance_port != 0) {
    size_t busy = 0;
    const uint32_t count = uint32_t{ports_.last} - ports_.first + 1;
    const uint32_t from = ports_.contains(last_port_) ? last_port_ - ports_.first + 1u : 0u;
    for (uint32_t i = 0; i < count; ++i) {
      auto port = static_cast<uint16_t>(ports_.first + (from + i) % count);
      if (host_ports_.contains(port)) continue;
      if (probe && !probe(port).ok()) {
        ++busy;
        continue;
      }
      lease.host_port = port;
      break;
    }
    if (lease.host_port == 0) {
      return Error{"unavailable",
                   "no free host port left in " + ports_.str() + " (" +
                       std::to_string(host_ports_.size()) + " published, " + std::to_string(busy) +
                       " bound by other programs); widen the range",
                   0};
    }
  }
  QF_TRY(insert(lease));
  last_ip_ = lease.ip.value;
  if (requested_host_port == 0 && lease.host_port != 0) last_port_ = lease.host_port;
  return lease;
}

Result<void> Ipam::insert(Lease lease) {
  QF_TRY(validate_instance_id(lease.instance_id));
  const uint32_t ip = lease.ip.value;
  if (!subnet_.contains(lease.ip) || ip <= gateway().value || ip >= subnet_.broadcast().value) {
    return Error::invalid("lease of " + squote(lease.instance_id) + ": address " + lease.ip.str() +
                          " is not an instance address of " + subnet_.str());
  }
  if (by_id_.contains(lease.instance_id)) {
    return Error{"conflict", "instance " + squote(lease.instance_id) + " leased twice", 0};
  }
  if (ips_.contains(ip)) {
    return Error{"conflict", "address " + lease.ip.str() + " leased twice", 0};
  }
  if (lease.host_port != 0 && host_ports_.contains(lease.host_port)) {
    return Error{"conflict", "host port " + std::to_string(lease.host_port) + " leased twice", 0};
  }
  if (lease.host_port != 0 && lease.instance_port == 0) {
    return Error::invalid("lease of " + squote(lease.instance_id) +
                          ": host port without an instance port");
  }
  ips_.insert(ip);
  if (lease.host_port != 0) host_ports_.insert(lease.host_port);
  std::string id = lease.instance_id;
  by_id_.emplace(std::move(id), std::move(lease));
  return ok();
}

std::optional<Lease> Ipam::release(std::string_view instance_id) {
  auto it = by_id_.find(instance_id);
  if (it == by_id_.end()) return std::nullopt;
  Lease lease = std::move(it->second);
  by_id_.erase(it);
  ips_.erase(lease.ip.value);
  if (lease.host_port != 0) host_ports_.erase(lease.host_port);
  return lease;
}

void Ipam::clear() {
  last_ip_ = 0;
  last_port_ = 0;
  by_id_.clear();
  ips_.clear();
  host_ports_.clear();
}

const Lease* Ipam::find(std::string_view instance_id) const {
  auto it = by_id_.find(instance_id);
  return it == by_id_.end() ? nullptr : &it->second;
}

std::vector<Lease> Ipam::leases() const {
  std::vector<Lease> out;
  out.reserve(by_id_.size());
  for (const auto& [id, lease] : by_id_) out.push_back(lease);
  std::sort(out.begin(), out.end(), [](const Lease& a, const Lease& b) { return a.ip < b.ip; });
  return out;
}

std::string Ipam::serialize() const {
  std::string out = std::string(kHeader) + "\nsubnet " + subnet_.str() + "\n";
  if (last_ip_ != 0) {
    out += "cursor " + Ipv4{last_ip_}.str() + " " + std::to_string(last_port_) + "\n";
  }
  for (const Lease& l : leases()) {
    out += "lease " + l.instance_id + " " + l.ip.str() + " " + std::to_string(l.host_port) + " " +
           std::to_string(l.instance_port) + "\n";
  }
  return out;
}

Result<Ipam> Ipam::parse(std::string_view text, Cidr subnet, PortRange ports,
                         std::string_view source) {
  Ipam ipam(subnet, ports);
  std::optional<Cidr> file_subnet;
  int line_no = 0;
  for (auto raw : split(text, '\n')) {
    ++line_no;
    auto line = trim(raw);
    if (line.empty() || line[0] == '#') continue;
    const std::string where = std::string(source) + ":" + std::to_string(line_no) + ": ";
    std::vector<std::string_view> f;
    for (auto w : split(line, ' ')) {
      if (!w.empty()) f.push_back(w);
    }
    if (f[0] == "subnet" && f.size() == 2) {
      auto c = parse_cidr(f[1]);
      if (!c) return Error::invalid(where + c.error().message);
      file_subnet = *c;
      continue;
    }
    if (f[0] == "cursor" && f.size() == 3) {
      auto last = parse_ipv4(f[1]);
      auto port = parse_uint(f[2], 65535);
      if (!last || !port) return Error::invalid(where + "bad cursor");
      ipam.last_ip_ = last->value;
      ipam.last_port_ = static_cast<uint16_t>(*port);
      continue;
    }
    if (f[0] != "lease" || f.size() != 5) {
      return Error::invalid(where + "expected 'lease <instance> <ip> <host port> <port>'");
    }
    auto ip = parse_ipv4(f[2]);
    auto host_port = parse_uint(f[3], 65535);
    auto port = parse_uint(f[4], 65535);
    if (!ip) return Error::invalid(where + ip.error().message);
    if (!host_port || !port) return Error::invalid(where + "bad port number");
    Lease lease{std::string(f[1]), *ip, static_cast<uint16_t>(*host_port),
                static_cast<uint16_t>(*port)};
    if (!subnet.contains(lease.ip)) {
      return Error::invalid(
          where + "instance " + squote(lease.instance_id) + " holds " + lease.ip.str() +
          " outside the configured subnet " + subnet.str() +
          (file_subnet ? " (the state was written for " + file_subnet->str() + ")" : "") +
          "; stop those instances or go back to the old subnet");
    }
    if (auto r = ipam.insert(std::move(lease)); !r)
      return Error::invalid(where + r.error().message);
  }
  return ipam;
}

namespace {

// The whole file, or "" when it does not exist.
// The state file's text; a missing file is an empty state.
Result<std::string> read_text(const std::string& path) {
  auto text = read_text_file(path);
  if (!text && text.error().code == "not_found") return std::string();
  return text;
}

}  // namespace

Result<IpamStore> IpamStore::open(const std::string& state_dir, Cidr subnet, PortRange ports) {
  if (subnet.prefix > 30 || subnet.prefix < 1) {
    return Error::invalid("subnet " + subnet.str() + ": prefix must be 1..30");
  }
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return Error{"io", "mkdir(" + state_dir + "): " + ec.message(), ec.value()};
  std::string path = (std::filesystem::path(state_dir) / kStateFile).string();
  const std::string lock_path = (std::filesystem::path(state_dir) / "lock").string();
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return Error::sys("open(" + lock_path + ")", errno);
  IpamStore store(std::move(path), lock_fd, Ipam(subnet, ports));
  auto locked = store.lock();  // loads the file
  if (!locked) return locked.error();
  return store;
}

IpamStore::~IpamStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

IpamStore::IpamStore(IpamStore&& o) noexcept
    : path_(std::move(o.path_)),
      lock_fd_(std::exchange(o.lock_fd_, -1)),
      ipam_(std::move(o.ipam_)) {}

IpamStore& IpamStore::operator=(IpamStore&& o) noexcept {
  if (this != &o) {
    if (lock_fd_ >= 0) ::close(lock_fd_);
    path_ = std::move(o.path_);
    lock_fd_ = std::exchange(o.lock_fd_, -1);
    ipam_ = std::move(o.ipam_);
  }
  return *this;
}

IpamStore::Lock::~Lock() {
  if (fd_ >= 0) ::flock(fd_, LOCK_UN);
}

Result<IpamStore::Lock> IpamStore::lock() {
  while (::flock(lock_fd_, LOCK_EX) != 0) {
    if (errno != EINTR) return Error::sys("flock(" + path_ + " lock)", errno);
  }
  Lock held(lock_fd_);
  auto text = read_text(path_);
  if (!text) return text.error();
  auto ipam = Ipam::parse(*text, ipam_.subnet(), ipam_.ports(), path_);
  if (!ipam) return ipam.error();
  ipam_ = std::move(*ipam);
  return held;
}

Result<void> IpamStore::save() const {
  return qufop::write_file_atomic(path_, ipam_.serialize(), 0600);
}

Result<Lease> IpamStore::allocate(std::string_view instance_id, uint16_t instance_port,
                                  uint16_t requested_host_port, const Ipam::PortProbe& probe) {
  auto lease = ipam_.allocate(instance_id, instance_port, requested_host_port, probe);
  if (!lease) return lease;
  if (auto r = save(); !r) {
    ipam_.release(instance_id);
    return r.error().wrap("saving the address lease");
  }
  return lease;
}

Result<void> IpamStore::release(std::string_view instance_id) {
  auto lease = ipam_.release(instance_id);
  if (!lease) return ok();
  if (auto r = save(); !r) {
    (void)ipam_.insert(std::move(*lease));
    return r.error().wrap("saving the released address lease");
  }
  return ok();
}

Result<void> IpamStore::clear() {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    return Error::sys("unlink(" + path_ + ")", errno);
  }
  ipam_.clear();
  return ok();
}

}  // namespace qufop::netfilter
