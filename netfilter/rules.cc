#include "netfilter/rules.h"

#include <dlfcn.h>
#include <nftables/libnftables.h>

#include <algorithm>
#include <cstdio>

namespace qufop::netfilter {
namespace {

// "22", or "{ 22, 80-90 }" for more than one.
std::string port_set(const std::vector<PortRange>& ports) {
  if (ports.size() == 1) return ports[0].str();
  std::string out = "{ ";
  for (size_t i = 0; i < ports.size(); ++i) {
    if (i) out += ", ";
    out += ports[i].str();
  }
  return out + " }";
}

std::string element(const Published& p) {
  return std::to_string(p.host_port) + " : " + p.ip.str() + " . " + std::to_string(p.port);
}

std::string table_ref() { return "ip " + std::string(kTable); }

// The first line of libnftables' error text (it adds the offending input and carets after).
std::string first_line(std::string_view text) {
  auto nl = text.find('\n');
  return std::string(text.substr(0, nl));
}

}  // namespace

Result<ClosedRange> parse_closed_range(std::string_view text) {
  size_t colon = text.find(':');
  auto net = parse_cidr(text.substr(0, colon));
  if (!net) return net.error().wrap("closed range '" + std::string(text) + "'");
  ClosedRange r{*net, {}};
  if (colon != std::string_view::npos) {
    auto ports = parse_port_list(text.substr(colon + 1));
    if (!ports) return ports.error().wrap("closed range '" + std::string(text) + "'");
    if (ports->empty()) {
      return Error::invalid("closed range '" + std::string(text) + "': no ports after ':'");
    }
    r.ports = std::move(*ports);
  }
  return r;
}

std::string render_ruleset(const RulesState& s) {
  const std::string br = "\"" + s.bridge + "\"";
  const std::string subnet = Cidr{s.subnet.network(), s.subnet.prefix}.str();
  std::vector<Published> published = s.published;
  std::sort(published.begin(), published.end());

  std::string out;
  // Create (a no-op when it exists) so that the delete cannot fail, then define it whole.
  out += "table " + table_ref() + "\n";
  out += "delete table " + table_ref() + "\n";
  out += "table " + table_ref() + " {\n";

  out += "\tmap published {\n";
  out += "\t\ttype inet_service : ipv4_addr . inet_service\n";
  if (!published.empty()) {
    out += "\t\telements = { ";
    for (size_t i = 0; i < published.size(); ++i) {
      if (i) out += ", ";
      out += element(published[i]);
    }
    out += " }\n";
  }
  out += "\t}\n";

  if (!s.closed.empty()) {
    out += "\n\tchain closed {\n";
    for (const ClosedRange& c : s.closed) {
      out += "\t\tip daddr " + Cidr{c.net.network(), c.net.prefix}.str();
      if (!c.ports.empty()) out += " meta l4proto { tcp, udp } th dport " + port_set(c.ports);
      out += " drop\n";
    }
    out += "\t}\n";
  }

  out += "\n\tchain from_instance {\n";
  out += "\t\tct state established,related accept\n";
  out += "\t\toifname " + br + " drop\n";
  out += "\t\tip daddr " + subnet + " drop\n";
  if (!s.closed.empty()) out += "\t\tjump closed\n";
  out += "\t}\n";

  out += "\n\tchain to_node {\n";
  out += "\t\tct state established,related accept\n";
  out += "\t\tip daddr 127.0.0.0/8 drop\n";
  if (!s.closed.empty()) out += "\t\tjump closed\n";
  if (!s.allowed_node_ports.empty()) {
    out += "\t\tmeta l4proto { tcp, udp } th dport " + port_set(s.allowed_node_ports) + " accept\n";
  }
  out += "\t\tdrop\n";
  out += "\t}\n";

  out += "\n\tchain prerouting {\n";
  out += "\t\ttype nat hook prerouting priority dstnat; policy accept;\n";
  out += "\t\tfib daddr type local dnat ip to tcp dport map @published\n";
  out += "\t}\n";

  out += "\n\tchain output {\n";
  out += "\t\ttype nat hook output priority -100; policy accept;\n";
  out += "\t\tfib daddr type local dnat ip to tcp dport map @published\n";
  out += "\t}\n";

  out += "\n\tchain postrouting {\n";
  out += "\t\ttype nat hook postrouting priority srcnat; policy accept;\n";
  out += "\t\toifname != " + br + " ip saddr " + subnet + " masquerade\n";
  out += "\t\toifname " + br + " ip saddr 127.0.0.0/8 snat to " + s.bridge_addr.str() + "\n";
  out += "\t}\n";

  out += "\n\tchain forward {\n";
  out += "\t\ttype filter hook forward priority filter; policy accept;\n";
  out += "\t\tiifname " + br + " jump from_instance\n";
  out += "\t}\n";

  out += "\n\tchain input {\n";
  out += "\t\ttype filter hook input priority filter; policy accept;\n";
  out += "\t\tiifname " + br + " jump to_node\n";
  out += "\t}\n";

  out += "}\n";
  return out;
}

std::string render_publish(const Published& p) {
  return "add element " + table_ref() + " published { " + element(p) + " }\n";
}

std::string render_unpublish(uint16_t host_port) {
  return "delete element " + table_ref() + " published { " + std::to_string(host_port) + " }\n";
}

std::string render_delete_table() {
  return "table " + table_ref() + "\ndelete table " + table_ref() + "\n";
}

namespace {

// libnftables, opened when the first NftOps is made rather than linked: it and its five
// dependencies cost every start of qufop-noded about a millisecond of symbol resolution, and
// only the node network needs them (a one-shot `run --net none` never does).
struct NftApi {
  nft_ctx* (*ctx_new)(uint32_t);
  void (*ctx_free)(nft_ctx*);
  int (*buffer_output)(nft_ctx*);
  int (*buffer_error)(nft_ctx*);
  const char* (*get_output_buffer)(nft_ctx*);
  const char* (*get_error_buffer)(nft_ctx*);
  int (*run_cmd_from_buffer)(nft_ctx*, const char*);
};

template <class Fn>
bool bind(void* lib, const char* name, Fn*& fn) {
  fn = reinterpret_cast<Fn*>(::dlsym(lib, name));
  return fn != nullptr;
}

Result<const NftApi*> nft_api() {
  static const Result<NftApi> api = []() -> Result<NftApi> {
    void* lib = ::dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      return Error{"unavailable",
                   std::string("libnftables: ") + ::dlerror() + " (install libnftables1)", 0};
    }
    NftApi a{};
    if (!bind(lib, "nft_ctx_new", a.ctx_new) || !bind(lib, "nft_ctx_free", a.ctx_free) ||
        !bind(lib, "nft_ctx_buffer_output", a.buffer_output) ||
        !bind(lib, "nft_ctx_buffer_error", a.buffer_error) ||
        !bind(lib, "nft_ctx_get_output_buffer", a.get_output_buffer) ||
        !bind(lib, "nft_ctx_get_error_buffer", a.get_error_buffer) ||
        !bind(lib, "nft_run_cmd_from_buffer", a.run_cmd_from_buffer)) {
      return Error{"unavailable", std::string("libnftables: ") + ::dlerror(), 0};
    }
    return a;  // the library stays loaded for the life of the process
  }();
  if (!api) return api.error();
  return &*api;
}

}  // namespace

Result<std::unique_ptr<LibNftables>> LibNftables::create() {
  auto loaded = nft_api();
  if (!loaded) return loaded.error();
  const NftApi& api = **loaded;
  nft_ctx* ctx = api.ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return Error{"unavailable", "nft_ctx_new: cannot open a netfilter netlink socket", 0};
  std::unique_ptr<LibNftables> nft(new LibNftables(ctx));
  if (api.buffer_output(ctx) != 0 || api.buffer_error(ctx) != 0) {
    return Error{"internal", "nft_ctx_buffer_output: failed", 0};
  }
  return nft;
}

// create() succeeded, so the API is loaded.
LibNftables::~LibNftables() { (*nft_api())->ctx_free(ctx_); }

Result<std::string> LibNftables::run_buffered(std::string_view script) {
  const std::string text(script);
  const NftApi& api = **nft_api();
  const int rc = api.run_cmd_from_buffer(ctx_, text.c_str());
  // Reading a buffer also resets it for the next command.
  const char* out = api.get_output_buffer(ctx_);
  const char* err = api.get_error_buffer(ctx_);
  if (rc != 0) {
    std::string msg = err && *err ? first_line(err) : "failed";
    std::string code =
        msg.find("Operation not permitted") != std::string::npos
            ? "permission_denied"
            : (msg.find("No such file or directory") != std::string::npos ? "not_found" : "io");
    return Error{code, "nft: " + msg, 0};
  }
  return std::string(out ? out : "");
}

Result<void> LibNftables::run(std::string_view script) {
  auto r = run_buffered(script);
  if (!r) return r.error();
  return ok();
}

Result<std::string> LibNftables::list_table() {
  // Listing a missing table is an error; ask for the table names first.
  auto tables = run_buffered("list tables ip");
  if (!tables) return tables.error();
  if (tables->find("table " + table_ref() + "\n") == std::string::npos) return std::string();
  return run_buffered("list table " + table_ref());
}

}  // namespace qufop::netfilter
