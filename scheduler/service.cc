#include "scheduler/service.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <charconv>
#include <cmath>

#include "common/auth.h"
#include "common/http_client.h"

namespace qufop::scheduler {

namespace {

using namespace std::chrono_literals;

http::Response json_response(const json::Value& v, int status = 200) {
  return {status, "application/json", {}, json::serialize(v)};
}

// A response sent later by the route itself.
http::Response answered_later() { return {0, "", {}, ""}; }

Error forbidden(std::string message) { return {"permission_denied", std::move(message), 0}; }

// "/v1/ufops/x/resize" -> {"v1", "ufops", "x", "resize"}
std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 1;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    out.push_back(http::url_decode(std::string_view(path).substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

Result<json::Object> body_object(const http::Request& req) {
  auto v = json::parse(req.body.empty() ? "{}" : req.body);
  if (!v) return v.error().wrap("request body");
  if (!v->is_object()) return Error::invalid("request body: expected a JSON object");
  return v->get_object();
}

json::Value scale_json(const ScaleResult& r) {
  json::Object desired;
  int64_t total = 0;
  for (const auto& [v, n] : r.desired) {
    desired[std::to_string(v)] = n;
    total += n;
  }
  return json::Object{{"count", total},
                      {"desired", std::move(desired)},
                      {"unschedulable", r.unschedulable},
                      {"reason", r.reason}};
}

template <typename T>
json::Value list_json(const std::vector<T>& items, const char* field) {
  json::Array a;
  for (const auto& i : items) a.push_back(api::to_json(i));
  return json::Object{{field, std::move(a)}};
}

json::Value public_user(const api::UserRecord& u) {
  return json::Object{
      {"name", u.name}, {"access_key", u.access_key}, {"class", u.user_class}, {"admin", u.admin}};
}

bool can_change(const api::UserRecord& user, const api::UfopRecord& ufop) {
  return user.admin || ufop.owner == user.access_key;
}

bool can_read(const api::UserRecord& user, const api::UfopRecord& ufop) {
  return can_change(user, ufop) || ufop.mode != api::UfopMode::kPrivate;
}

std::string one_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

http::Response error_response(const Error& e) {
  int status = 500;
  if (e.code == "invalid_argument") status = 400;
  if (e.code == "unauthorized") status = 401;
  if (e.code == "permission_denied") status = 403;
  if (e.code == "not_found") status = 404;
  if (e.code == "already_exists" || e.code == "conflict" || e.code == "insufficient_capacity") {
    status = 409;
  }
  if (e.code == "unavailable" || e.code == "timeout" || e.code == "etcd") status = 503;
  return http::Response::error(status, e.code, e.message);
}

Service::Service(http::Server& server, Controller& controller, Users& users, ServiceOptions options)
    : controller_(controller), users_(users), options_(std::move(options)) {
  for (const char* method : {"GET", "POST", "DELETE"}) {
    server.route_prefix(method, "/v1/", [this](http::Request req, http::Responder res) {
      handle(std::move(req), std::move(res));
    });
  }
}

Service::~Service() { shutdown(); }

void Service::shutdown() {
  std::vector<Worker> workers;
  {
    std::lock_guard lock(mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.thread.join();
}

void Service::reap_finished_locked() {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (*it->done) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

bool Service::token_ok(const http::Request& req) const {
  return auth::bearer_matches(req.header("Authorization"), options_.join_token);
}

void Service::handle(http::Request req, http::Responder res) {
  if (!controller_.ready()) {
    return res.send(http::Response::error(
        503, "unavailable", "the scheduler is loading the cluster state from keeper"));
  }
  auto parts = segments(req.path);
  if (parts.size() >= 4 && parts[1] == "nodes") {
    if (!token_ok(req)) {
      return res.send(
          http::Response::error(401, "unauthorized", "node requests need the cluster join token"));
    }
    auto response = node_request(req, parts[2], parts[3], &res);
    if (response.status != 0) res.send(std::move(response));
    return;
  }
  auto user = users_.authenticate(req, std::chrono::system_clock::now());
  if (!user) {
    spdlog::info("refused {} {} from {}: {}", req.method, req.path, req.remote,
                 user.error().message);
    return res.send(error_response(user.error()));
  }
  auto response = user_request(req, *user, parts, &res);
  if (response.status != 0) res.send(std::move(response));
}

http::Response Service::user_request(const http::Request& req, const api::UserRecord& user,
                                     const std::vector<std::string>& parts, http::Responder* res) {
  const std::string& m = req.method;
  const std::string what = parts.size() >= 2 ? parts[1] : "";
  if (parts.size() == 2 && what == "whoami" && m == "GET") return json_response(public_user(user));
  if (parts.size() == 2 && what == "users") {
    if (!user.admin) return error_response(forbidden("only an admin manages users"));
    if (m == "GET") {
      json::Array list;
      for (const auto& u : users_.list()) list.push_back(public_user(u));
      return json_response(json::Object{{"users", std::move(list)}});
    }
    if (m == "POST") {
      auto body = body_object(req);
      if (!body) return error_response(body.error());
      auto name = json::get_string(*body, "name");
      if (!name) return error_response(name.error());
      std::string user_class = "free";
      if (body->contains("class")) {
        auto c = json::get_string(*body, "class");
        if (!c) return error_response(c.error());
        user_class = *c;
      }
      auto added = users_.add(*name, user_class);
      if (!added) return error_response(added.error());
      spdlog::info("user {} added ({}) by {}", added->name, added->user_class, user.name);
      return json_response(api::to_json(*added), 201);
    }
  }
  if (parts.size() == 2 && what == "nodes" && m == "GET") return list_nodes();
  if (parts.size() == 2 && what == "images" && m == "POST") {
    if (!user.admin) return error_response(forbidden("only an admin imports base images"));
    spawn(
        [this, req, r = std::move(*res)]() mutable { import_image(std::move(req), std::move(r)); });
    return answered_later();
  }
  if (parts.size() == 2 && what == "instances" && m == "GET") {
    if (!user.admin) return error_response(forbidden("only an admin lists every instance"));
    auto list = controller_.instances("");
    return list ? json_response(list_json(*list, "instances")) : error_response(list.error());
  }
  if (parts.size() == 2 && what == "ufops" && m == "POST") return create_ufop(req, user);
  if (parts.size() == 2 && what == "ufops" && m == "GET") return list_ufops(user);
  if (parts.size() >= 3 && what == "ufops") {
    return ufop_request(req, user, parts[2], parts.size() >= 4 ? parts[3] : "", res);
  }
  return http::Response::error(404, "not_found", "no route for " + m + " " + req.path);
}

http::Response Service::node_request(const http::Request& req, const std::string& node,
                                     const std::string& what, http::Responder* res) {
  if (what == "heartbeat" && req.method == "POST") {
    auto body = json::parse(req.body);
    if (!body) return error_response(body.error().wrap("heartbeat body"));
    auto status = api::node_status_from_json(*body);
    if (!status) {
      spdlog::warn("bad heartbeat from {}: {}", req.remote, status.error().message);
      return error_response(status.error());
    }
    if (status->id != node) {
      return http::Response::error(400, "invalid_argument",
                                   "node.id '" + status->id + "' does not match the path");
    }
    auto reply = controller_.heartbeat(*status);
    return reply ? json_response(api::to_json(*reply)) : error_response(reply.error());
  }
  if (what == "assignments" && req.method == "GET") {
    int64_t index = 0;
    int64_t wait_ms = 0;
    if (auto text = req.query_param("index"); !text.empty()) {
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
      if (ec != std::errc() || end != text.data() + text.size()) {
        return http::Response::error(400, "invalid_argument", "index: not an integer: " + text);
      }
    }
    if (auto text = req.query_param("wait"); !text.empty()) {
      auto r = parse_duration_ms(text);
      if (!r) return error_response(r.error().wrap("wait"));
      wait_ms = std::min<int64_t>(*r, 60'000);
    }
    controller_.poll_assignments(node, index, std::chrono::milliseconds(wait_ms), std::move(*res));
    return answered_later();
  }
  return http::Response::error(404, "not_found", "no route for " + req.path);
}

http::Response Service::create_ufop(const http::Request& req, const api::UserRecord& user) {
  auto body = body_object(req);
  if (!body) return error_response(body.error());
  auto record = api::ufop_from_json(*body);
  if (!record) return error_response(record.error());
  if (record->mode == api::UfopMode::kPublic && !user.admin) {
    return error_response(forbidden("only an admin registers a public (mode 0) UFOP"));
  }
  record->owner = user.access_key;
  auto created = controller_.register_ufop(*record);
  if (!created) return error_response(created.error());
  spdlog::info("UFOP {} registered by {} (mode {})", created->name, user.name,
               static_cast<int>(created->mode));
  return json_response(api::to_json(*created), 201);
}

http::Response Service::list_ufops(const api::UserRecord& user) {
  std::vector<api::UfopRecord> visible;
  for (auto& u : controller_.ufops()) {
    if (can_change(user, u) || u.mode == api::UfopMode::kPublic ||
        users_.uses(user.access_key, u.name)) {
      visible.push_back(std::move(u));
    }
  }
  return json_response(list_json(visible, "ufops"));
}

http::Response Service::ufop_request(const http::Request& req, const api::UserRecord& user,
                                     const std::string& name, const std::string& what,
                                     http::Responder* res) {
  const std::string& m = req.method;
  auto ufop = controller_.ufop(name);
  if (!ufop) return error_response(ufop.error());
  if (!can_read(user, *ufop)) {
    // Another user's private UFOP: as if it did not exist.
    return error_response({"not_found", "no UFOP named '" + name + "'", 0});
  }
  bool owner = can_change(user, *ufop);
  auto need_owner = [&]() -> std::optional<http::Response> {
    if (owner) return std::nullopt;
    return error_response(forbidden("UFOP '" + name + "' belongs to another user"));
  };
  if (what.empty() && m == "GET") {
    auto v = api::to_json(*ufop);
    v.as_object()["unschedulable"] = controller_.unschedulable(name);
    v.as_object()["backoff"] = controller_.backoff(name);
    return json_response(v);
  }
  if (what == "use" && m == "POST") {
    if (ufop->mode == api::UfopMode::kPrivate && !owner) {
      return error_response(forbidden("UFOP '" + name + "' is private"));
    }
    auto r = users_.use(user.access_key, name);
    return r ? json_response(json::Object{{"ufop", name}}) : error_response(r.error());
  }
  if (what == "versions" && m == "GET") {
    auto list = controller_.versions(name);
    return list ? json_response(list_json(*list, "versions")) : error_response(list.error());
  }
  if (what == "instances" && m == "GET") {
    auto list = controller_.instances(name);
    return list ? json_response(list_json(*list, "instances")) : error_response(list.error());
  }
  if (auto refused = need_owner()) return *refused;
  if (what == "logs" && m == "GET") {
    spawn([this, req, r = std::move(*res), name]() mutable {
      logs(std::move(req), std::move(r), name);
    });
    return answered_later();
  }
  if (what == "build" && m == "POST") {
    {
      std::lock_guard lock(mu_);
      if (!building_.insert(name).second) {
        return http::Response::error(409, "conflict",
                                     "UFOP '" + name + "' is being built already; wait for it");
      }
    }
    spawn([this, req, r = std::move(*res), name]() mutable {
      build(std::move(req), std::move(r), name);
    });
    return answered_later();
  }
  if (what.empty() && m == "DELETE") {
    auto r = controller_.unregister_ufop(name);
    return r ? json_response(json::Object{{"deleted", name}}) : error_response(r.error());
  }
  auto body = body_object(req);
  if (!body) return error_response(body.error());
  if (what == "versions" && m == "POST") {
    api::VersionRecord v;
    v.ufop = name;
    if (body->contains("version")) {
      auto n = json::get_int(*body, "version");
      if (!n) return error_response(n.error());
      v.version = *n;
    }
    if (auto d = body->if_contains("digest"); d && d->is_string()) v.digest = d->get_string();
    const auto* spec = body->if_contains("spec");
    if (!spec) return http::Response::error(400, "invalid_argument", "field 'spec': missing");
    auto parsed = api::instance_spec_from_json(*spec, "spec");
    if (!parsed) return error_response(parsed.error());
    v.spec = std::move(*parsed);
    auto added = controller_.add_version(std::move(v));
    return added ? json_response(api::to_json(*added), 201) : error_response(added.error());
  }
  if (what == "resize" && m == "POST") {
    auto count = json::get_int(*body, "count");
    if (!count) return error_response(count.error());
    bool refuse = false;
    if (body->contains("refuse")) {
      auto r = json::get_bool(*body, "refuse");
      if (!r) return error_response(r.error());
      refuse = *r;
    }
    auto r = controller_.resize(name, *count, refuse);
    return r ? json_response(scale_json(*r)) : error_response(r.error());
  }
  if (what == "upgrade" && m == "POST") {
    auto version = json::get_int(*body, "version");
    if (!version) return error_response(version.error());
    int64_t replace = -1;
    if (body->contains("replace")) {
      auto r = json::get_int(*body, "replace");
      if (!r) return error_response(r.error());
      if (*r < 1)
        return http::Response::error(400, "invalid_argument", "replace: must be at least 1");
      replace = *r;
    }
    auto r = controller_.upgrade(name, replace, *version);
    return r ? json_response(scale_json(*r)) : error_response(r.error());
  }
  return http::Response::error(404, "not_found", "no route for " + m + " " + req.path);
}

http::Response Service::list_nodes() {
  json::Array nodes;
  for (const auto& n : controller_.nodes()) {
    auto v = api::to_json(n.record);
    auto& o = v.as_object();
    o["allocated"] = api::to_json(n.allocated);
    o["instances"] = n.instances;
    o["last_seen_ago_ms"] = n.last_seen_ago_ms;
    nodes.push_back(std::move(v));
  }
  return json_response(json::Object{{"nodes", std::move(nodes)}});
}

// ---- through to the builder and the nodes ----

void Service::build(http::Request req, http::Responder res, std::string ufop) {
  struct Done {
    Service* s;
    std::string ufop;
    ~Done() {
      std::lock_guard lock(s->mu_);
      s->building_.erase(ufop);
    }
  } done{this, ufop};
  auto record = controller_.ufop(ufop);
  if (!record) return res.send(error_response(record.error()));
  int64_t version = record->latest_version + 1;
  http::Request out;
  out.method = "POST";
  out.target = "/v1/builds?ufop=" + http::url_encode(ufop) + "&version=" + std::to_string(version);
  out.headers.emplace_back("Authorization", auth::bearer(options_.join_token));
  std::string_view type = req.header("Content-Type");
  out.headers.emplace_back("Content-Type", type.empty() ? "application/x-tar" : std::string(type));
  out.body = std::move(req.body);

  http::Client client(options_.builder.host, options_.builder.port, {2000ms, 600'000ms});
  int status = 0;
  std::string pending;  // the part after the last newline: the result line comes last
  std::string error_body;
  auto streamed = client.stream(
      out,
      [&](int s, const http::Headers&) {
        status = s;
        if (s == 200) res.start_stream(200, "text/plain; charset=utf-8");
        return true;
      },
      [&](std::string_view piece) {
        if (status != 200) {
          error_body.append(piece);
          return error_body.size() < (1u << 20);
        }
        pending.append(piece);
        // Hold back the last complete line: when the stream ends there, it is the result.
        size_t cut = pending.rfind('\n');
        size_t prev =
            cut == std::string::npos || cut == 0 ? std::string::npos : pending.rfind('\n', cut - 1);
        if (prev != std::string::npos) {
          res.write(pending.substr(0, prev + 1));
          pending.erase(0, prev + 1);
        }
        return !res.closed();
      },
      600'000ms);
  if (!streamed) {
    auto e = Error{"unavailable",
                   "the builder at " + options_.builder.str() + ": " + streamed.error().message, 0};
    if (status == 200) {
      res.write(json::serialize(json::Object{{"error", e.code}, {"message", e.message}}) + "\n");
      return res.finish();
    }
    return res.send(error_response(e));
  }
  if (status != 200) {
    return res.send({status, "application/json", {}, error_body});
  }
  // The last line is the builder's result: {"digest","ref"} or {"error","message"}.
  pending = one_line(pending);
  size_t nl = pending.rfind('\n');
  if (nl != std::string::npos) {
    res.write(pending.substr(0, nl + 1));
    pending.erase(0, nl + 1);
  }
  auto result = json::parse(pending);
  json::Object final_line;
  if (!result || !result->is_object() || !result->as_object().contains("digest")) {
    if (result && result->is_object() && result->as_object().contains("error")) {
      final_line = result->as_object();
    } else {
      final_line = {{"error", "internal"}, {"message", "the builder's answer ended early"}};
    }
  } else {
    std::string digest = std::string(result->as_object().at("digest").as_string());
    auto spec = spec_of_image(ufop, std::to_string(version));
    Result<api::VersionRecord> added = spec.ok() ? Result<api::VersionRecord>(api::VersionRecord{})
                                                 : Result<api::VersionRecord>(spec.error());
    if (spec) {
      api::VersionRecord v;
      v.ufop = ufop;
      v.version = version;
      v.digest = digest;
      v.spec = *spec;
      added = controller_.add_version(std::move(v));
    }
    if (added) {
      final_line = {{"version", version}, {"digest", digest}};
      spdlog::info("UFOP {} version {} built ({})", ufop, version, digest);
    } else {
      final_line = {{"error", added.error().code}, {"message", added.error().message}};
    }
  }
  res.write(json::serialize(final_line) + "\n");
  res.finish();
}

Result<api::InstanceSpec> Service::spec_of_image(const std::string& name, const std::string& tag) {
  http::Client client(options_.builder.host, options_.builder.port, {2000ms, 30'000ms});
  http::Request r;
  r.method = "GET";
  r.target = "/v2/" + name + "/manifests/" + tag;
  r.headers.emplace_back("Accept", "application/vnd.oci.image.manifest.v1+json");
  auto manifest = client.send(r);
  if (!manifest) return manifest.error();
  if (manifest->status != 200) {
    return Error::io("manifest of " + name + ":" + tag + ": HTTP " +
                     std::to_string(manifest->status));
  }
  auto m = json::parse(manifest->body);
  if (!m || !m->is_object() || !m->as_object().contains("config")) {
    return Error::io("manifest of " + name + ":" + tag + ": not an image manifest");
  }
  auto digest = json::get_string(m->as_object().at("config").as_object(), "digest");
  if (!digest) return digest.error();
  r.target = "/v2/" + name + "/blobs/" + *digest;
  auto config = client.send(r);
  if (!config) return config.error();
  auto c = json::parse(config->body);
  if (!c || !c->is_object()) return Error::io("config of " + name + ":" + tag + ": not JSON");
  api::InstanceSpec spec;
  spec.registry = options_.registry;
  spec.image = name;
  spec.reference = tag;
  const auto* inner = c->as_object().if_contains("config");
  const auto* labels =
      inner && inner->is_object() ? inner->as_object().if_contains("Labels") : nullptr;
  auto label = [&](const char* key) -> std::string {
    if (!labels || !labels->is_object()) return "";
    const auto* v = labels->as_object().if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : "";
  };
  auto ms = [&](const char* key, int64_t fallback) {
    auto parsed = parse_duration_ms(label(key));
    return parsed ? *parsed : fallback;
  };
  if (auto port = label("org.qufop.port"); !port.empty()) spec.port = std::atoi(port.c_str());
  spec.health = label("org.qufop.health");
  if (auto cpu = label("org.qufop.cpu"); !cpu.empty()) {
    spec.cpu_millis = std::llround(std::atof(cpu.c_str()) * 1000);
  }
  if (auto mem = label("org.qufop.memory"); !mem.empty())
    spec.memory_bytes = std::atoll(mem.c_str());
  spec.stop_wait_ms = ms("org.qufop.stop_wait", spec.stop_wait_ms);
  spec.warmup_ms = ms("org.qufop.warmup", 0);
  spec.readonly = label("org.qufop.readonly") == "true";
  if (spec.port < 1 || spec.port > 65535) spec.port = 9100;
  return spec;
}

void Service::import_image(http::Request req, http::Responder res) {
  http::Request out;
  out.method = "POST";
  out.target = "/v1/images?name=" + http::url_encode(req.query_param("name"));
  out.headers.emplace_back("Authorization", auth::bearer(options_.join_token));
  out.headers.emplace_back("Content-Type", "application/x-tar");
  out.body = std::move(req.body);
  http::Client client(options_.builder.host, options_.builder.port, {2000ms, 600'000ms});
  auto r = client.send(out);
  if (!r) {
    return res.send(error_response(
        {"unavailable", "the builder at " + options_.builder.str() + ": " + r.error().message, 0}));
  }
  res.send(std::move(*r));
}

void Service::logs(http::Request req, http::Responder res, std::string ufop) {
  auto list = controller_.instances(ufop);
  if (!list) return res.send(error_response(list.error()));
  std::string wanted = req.query_param("instance");
  const api::InstanceRecord* instance = nullptr;
  for (const auto& i : *list) {
    if (wanted.empty() ? !i.stop_requested : i.id == wanted) {
      instance = &i;
      break;
    }
  }
  if (!instance) {
    return res.send(http::Response::error(
        404, "not_found",
        wanted.empty() ? "UFOP '" + ufop + "' has no instances"
                       : "UFOP '" + ufop + "' has no instance '" + wanted + "'"));
  }
  std::string api_address;
  for (const auto& n : controller_.nodes()) {
    if (n.record.id == instance->node) api_address = n.record.api;
  }
  auto node = parse_host_port(api_address, false);
  if (!node) {
    return res.send(http::Response::error(503, "unavailable",
                                          "node " + instance->node + " has no API address"));
  }
  bool follow = req.query_param("follow") == "1" || req.query_param("follow") == "true";
  http::Request out;
  out.method = "GET";
  out.target =
      "/v1/instances/" + http::url_encode(instance->id) + "/logs" + (follow ? "?follow=1" : "");
  if (auto tail = req.query_param("tail"); !tail.empty()) {
    out.target += std::string(follow ? "&" : "?") + "tail=" + http::url_encode(tail);
  }
  http::Client client(node->host, node->port, {2000ms, 30'000ms});
  bool started = false;
  std::string error_body;
  int status = 0;
  auto r = client.stream(
      out,
      [&](int s, const http::Headers&) {
        status = s;
        if (s == 200) {
          res.start_stream(200, "text/plain; charset=utf-8");
          started = true;
        }
        return true;
      },
      [&](std::string_view piece) {
        if (!started) {
          error_body.append(piece);
          return error_body.size() < 65536;
        }
        res.write(std::string(piece));
        return !res.closed();
      },
      follow ? std::chrono::milliseconds(24h) : 30'000ms);
  if (started) return res.finish();
  if (!r) {
    return res.send(http::Response::error(
        503, "unavailable",
        "node " + instance->node + " at " + api_address + ": " + r.error().message));
  }
  res.send({status, "application/json", {}, error_body});
}

}  // namespace qufop::scheduler
